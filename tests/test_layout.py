"""Promises about the code's shape: no UI in app/ or models/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_importing_every_app_and_models_module_pulls_in_no_ui() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import app, models\n"
        "for pkg in (app, models):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "assert 'questionary' not in sys.modules, 'questionary imported'\n"
        "assert 'menus' not in sys.modules, 'menus imported'\n"
        "assert 'prompt_toolkit' not in sys.modules, 'prompt_toolkit imported'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_main_opens_fast_without_torch() -> None:
    code = "import sys, main; main.build_parser(); assert 'torch' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr
