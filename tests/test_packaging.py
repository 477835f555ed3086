"""`pip install .` gives a working `medanomaly` command whose workspace is the user's data
folder, never site-packages. The fast demo workflow runs from the installed command in
tests/e2e/test_workflow.py (its kill -9 and resume)."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path


def _run(command: Path, *args: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MEDANOMALY_WORKSPACE", "XDG_DATA_HOME", "PYTHONPATH")}
    return subprocess.run([str(command), *args], capture_output=True, text=True, timeout=300, cwd=home,
                          env={**env, "HOME": str(home), "COLUMNS": "100"})


def test_the_installed_command_answers_help_and_status(installed: Path, tmp_path: Path) -> None:
    helped = _run(installed, "--help", home=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: medanomaly") and "medanomaly workflow --dataset demo" in helped.stdout
    status = _run(installed, "status", home=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    workspace = tmp_path / ".local" / "share" / "medanomaly"
    assert (workspace / "data").is_dir(), "the workspace is the user's data folder"
    packages = next(installed.parent.parent.glob("lib/python*/site-packages"))
    assert not (packages / "data").exists() and not (packages / "checkpoints").exists()
    assert str(workspace) in status.stdout.replace("\n", "")


def test_the_wheel_holds_the_app_and_nothing_else(installed: Path) -> None:
    [wheel] = (installed.parent.parent.parent / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"app/workspace.py", "core/errors.py", "menus/cli.py", "models/registry.py", "app/collectors/demo.py"} <= set(names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "data/", "checkpoints/"))]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "medanomaly = menus.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
