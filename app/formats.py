"""Export formats: what a bundle may hold beside its FP32 ONNX model, one module each.

A format builds its file from the bundle's checked ``model.onnx`` and returns a record
for the model card (what it is, how much it changes the validation metric); its check
may refuse the record (an INT8 copy that loses too much). ``export_bundle(formats=...)``
and ``main.py export --format NAME`` take any registered format; the file is hashed
and signed with the rest of the bundle, and ``Bundle.session(format=NAME)`` loads it.
Today: ``int8`` (app/quantize.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.registry import Registry


@dataclass(frozen=True)
class ExportFormat:
    name: str
    file: str  # its file in the bundle, e.g. "model.int8.onnx"
    title: str  # what it is, in a few words (progress, help)
    build: Callable[..., dict[str, Any]]  # (ws, run, source: Path, target: Path) -> the card's record
    check: Callable[[dict[str, Any], bool], str | None]  # (record, accept_loss) -> why it is refused, or None


FORMATS: Registry[ExportFormat] = Registry("export format")


def _keep(record: dict[str, Any], accept_loss: bool) -> str | None:
    return None


def register_format(name: str, *, file: str, title: str,
                    check: Callable[[dict[str, Any], bool], str | None] = _keep) -> Callable[..., Any]:
    """Register the decorated ``build(ws, run, source, target) -> record`` as format ``name``."""
    def wrap(build: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        FORMATS.register(name, ExportFormat(name, file, title, build, check))
        return build

    return wrap


def get_format(name: str) -> ExportFormat:
    _load_builtin()
    return FORMATS.get(name)


def list_formats() -> list[ExportFormat]:
    _load_builtin()
    return [entry for _, entry in FORMATS.items()]


def build_format(fmt: ExportFormat, ws: Any, run: str, source: Path, folder: Path, accept_loss: bool) -> dict[str, Any]:
    """Build ``fmt`` into ``folder`` from ``source``; its record, checked.

    Raises:
        ExportError: the format refuses the result (the message says why and what to do).
    """
    from core.errors import ExportError

    record = {**fmt.build(ws, run, source, folder / fmt.file), "file": fmt.file}
    why = fmt.check(record, accept_loss)
    if why:
        raise ExportError(why)
    return record


# The formats that come with the tool, loaded as plugins are: by name, on first use (importing
# one registers it). The registry itself depends on none of them.
BUILTIN_FORMATS = ("app.quantize",)


def _load_builtin() -> None:
    import importlib

    for module in BUILTIN_FORMATS:
        importlib.import_module(module)
