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


def test_the_container_serves_a_bundle_with_a_command_the_cli_takes_and_holds_no_workspace() -> None:
    """What can be checked without a Docker daemon: the entrypoint is a valid `serve --bundle`
    command, every folder it copies exists, and no workspace folder can enter the image."""
    import json
    import re

    from menus.cli import build_parser

    root = Path(__file__).resolve().parent.parent
    text = (root / "Dockerfile").read_text()
    [entry] = re.findall(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    command = json.loads(entry)
    assert command[:2] == ["python", "main.py"]
    args = build_parser().parse_args(command[2:])
    assert args.command == "serve" and args.bundle == "/bundle" and args.host == "0.0.0.0"
    for copied in re.findall(r"^COPY (\S+)", text, re.M):
        assert (root / copied).exists(), copied
    assert "USER medanomaly" in text  # not root
    ignored = (root / ".dockerignore").read_text().split()
    for folder in ("data", "checkpoints", "exports", "predictions", "backups", ".venv"):
        assert folder in ignored, folder
