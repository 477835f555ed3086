"""The collectors' own clients are an extra when the app is installed with pip
(``pip install 'medanomaly-workbench[collectors]'``); without one, its collector says so."""

from __future__ import annotations

import importlib
from types import ModuleType

from core.errors import CollectError

INSTALL = ("Install the collectors' clients: pip install 'medanomaly-workbench[collectors]' "
           "(from a checkout, ./run.sh installs them).")


def client(module: str, collector: str) -> ModuleType:
    """Import ``module`` for ``collector``.

    Raises:
        CollectError: the package is not installed (the message says how to install it).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise CollectError(f"The {collector} collector needs the {module.split('.')[0]} package, "
                           f"which is not installed. {INSTALL}") from err
