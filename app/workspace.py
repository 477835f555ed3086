"""Where everything lives: the workspace folders and the dataset index.

The workspace root defaults to this repository (its own ``data/`` and
``checkpoints/``), or to the user's data folder when the app is installed with pip
(``default_root``); ``--workspace DIR`` or ``MEDANOMALY_WORKSPACE`` moves it to a
large disk. Paths inside state files are stored relative to the root where they
can be, so a workspace can be moved whole.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from app.atomic import create_once, sweep
from core.errors import DatasetError, WorkspaceError
from app.locks import hold
from app.names import check_name
from app.state import Kind, read_state, read_state_or, write_state

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_VAR = "MEDANOMALY_WORKSPACE"


def default_root() -> Path:
    """The workspace when none is given: the repository when the app runs from a checkout
    (``./run.sh``), else (installed with pip) the user's data folder,
    ``$XDG_DATA_HOME/medanomaly`` or ``~/.local/share/medanomaly``; never site-packages."""
    if (REPO_ROOT / "main.py").is_file() and (REPO_ROOT / "app").is_dir() and (REPO_ROOT / "run.sh").is_file():
        return REPO_ROOT
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "medanomaly"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: str | Path | None = None) -> "Workspace":
        """The workspace at ``root``, else $MEDANOMALY_WORKSPACE, else ``default_root()``.

        Its folders are made on first use, and what dead processes left half-written
        is swept away. A read-only workspace opens too (for commands that only read).

        Raises:
            WorkspaceError: the folder cannot be made, or is not a folder.
        """
        chosen = root or os.environ.get(ENV_VAR) or default_root()
        path = Path(chosen).expanduser().resolve()
        ws = cls(path)
        if path.exists() and not path.is_dir():
            raise WorkspaceError(f"The workspace {path} is a file, not a folder. Give a folder with --workspace DIR.")
        try:
            for folder in (ws.raw_dir, ws.organized_dir, ws.runs_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if not ws.data_dir.is_dir():
                raise WorkspaceError(
                    f"Cannot use {path} as the workspace ({err.strerror or err}). "
                    "Give a folder you can write to with --workspace DIR."
                ) from None
        if ws.writable:
            sweep([ws.data_dir, ws.runs_dir, ws.exports_dir, ws.predictions_dir], depth=4)
        return ws

    @property
    def writable(self) -> bool:
        return os.access(self.data_dir, os.W_OK)

    # -- paths built from names: every one is checked, and stays inside the root --------
    def inside(self, path: Path) -> Path:
        """``path`` when it resolves inside the workspace root.

        Raises:
            WorkspaceError: it would be outside (a link, or a name that escaped the rule).
        """
        resolved = Path(path).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise WorkspaceError(f"Refused: {path} is outside the workspace {self.root}.")
        return Path(path)

    def raw_target(self, source: str, name: str) -> Path:
        """Where collector ``source`` keeps the files of dataset ``name``."""
        return self.inside(self.raw_dir / source / check_name(name, "dataset name"))

    def export_dir(self, run: str) -> Path:
        return self.inside(self.exports_dir / check_name(run, "run name"))

    # -- locks: a dataset, a run or an index is written by one process at a time --------
    @property
    def locks_dir(self) -> Path:
        return self.data_dir / "locks"

    def lock_path(self, kind: str, name: str) -> Path:
        return self.locks_dir / f"{kind}-{check_name(name)}.lock"

    def lock(self, kind: str, name: str, *, wait_s: float = 0.0) -> Any:
        """A context manager holding the lock on ``kind`` ``name`` (see app.locks.hold)."""
        what = {"dataset": "dataset", "run": "run", "export": "the export of run", "workflow": "workflow"}.get(kind, kind)
        return hold(self.lock_path(kind, name), f"{what} {name!r}", wait_s=wait_s)

    def index_lock(self) -> Any:
        return hold(self.locks_dir / "index.lock", "the dataset index", wait_s=120.0)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def organized_dir(self) -> Path:
        return self.data_dir / "organized"

    @property
    def runs_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "datasets.json"

    @property
    def settings_path(self) -> Path:
        return self.data_dir / "settings.json"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def workflow_path(self, dataset: str) -> Path:
        return self.inside(self.data_dir / "workflows" / f"{check_name(dataset, 'dataset name')}.json")

    def organized_path(self, dataset: str) -> Path:
        return self.inside(self.organized_dir / check_name(dataset, "dataset name"))

    def relative(self, path: Path, follow_links: bool = True) -> str:
        """``path`` relative to the root when inside it, else absolute (as text); a link is
        followed unless ``follow_links`` is False (its own place is wanted)."""
        path = Path(path).resolve() if follow_links else Path(os.path.abspath(path))
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def resolve(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    @property
    def private(self) -> Any:
        """The private map and identifier hashes (app.private.PrivateFiles)."""
        from app.private import PrivateFiles

        return PrivateFiles(self)

    # -- the per-workspace secret used to pseudonymize patient identifiers --------
    def secret(self) -> bytes:
        """The workspace's pseudonymization key, made on first use (mode 0600).

        It never leaves the workspace: nothing writes it into state files or logs.
        """
        path = self.data_dir / ".pseudonym_key"
        create_once(path, secrets.token_hex(32).encode("ascii"))
        try:
            return bytes.fromhex(path.read_text().strip())
        except ValueError as err:
            raise WorkspaceError(
                f"The pseudonymization key {path} is damaged. Restore it from a backup: without it, "
                "patients organized before cannot be matched to new scans."
            ) from err

    # -- the dataset index -------------------------------------------------------------
    def load_index(self) -> dict[str, Any]:
        return read_state_or(self.index_path, Kind.DATASET_INDEX, {"datasets": {}})["datasets"]

    def record_dataset(self, name: str, **entry: Any) -> None:
        """Add or update one dataset's entry in the index (merging with what is there)."""
        check_name(name, "dataset name")
        if entry.get("raw_path"):  # a folder outside data/raw/ is named in the private map only
            entry["raw_path"] = self.private.store_source(self.resolve(entry["raw_path"]))
        with self.index_lock():  # read-modify-write: never lose another process's update
            datasets = self.load_index()
            merged = {**datasets.get(name, {}), **entry, "updated": now_iso()}
            datasets[name] = merged
            write_state(self.index_path, Kind.DATASET_INDEX, {"datasets": datasets})

    def raw_datasets(self) -> dict[str, dict[str, Any]]:
        return {n: e for n, e in self.load_index().items() if e.get("raw_path") and e.get("complete")}

    def organized_datasets(self) -> list[str]:
        if not self.organized_dir.exists():
            return []
        found = [p for p in self.organized_dir.iterdir() if not p.name.startswith(".") and (p / "metadata.json").exists()]
        return sorted(p.name for p in found if _usable(p.name, "dataset"))

    def dataset_metadata(self, dataset: str) -> dict[str, Any]:
        path = self.organized_path(dataset) / "metadata.json"
        if not path.exists():
            raise DatasetError(
                f"No organized dataset named {dataset!r}. Run Organize first "
                f"(python main.py organize PATH --name {dataset})."
            )
        return read_state(path, Kind.DATASET_METADATA)

    def runs(self) -> list[dict[str, Any]]:
        """Metadata of every run in the workspace, newest first."""
        found = []
        for meta in self.runs_dir.glob("*/metadata.json"):
            if not meta.parent.name.startswith(".") and _usable(meta.parent.name, "run"):
                found.append(read_state(meta, Kind.RUN_METADATA))
        return sorted(found, key=lambda m: m.get("created", ""), reverse=True)

    def run_dir(self, run: str) -> Path:
        return self.inside(self.runs_dir / check_name(run, "run name"))

    def run_metadata(self, run: str) -> dict[str, Any]:
        path = self.run_dir(run) / "metadata.json"
        if not path.exists():
            known = ", ".join(m["run"] for m in self.runs()) or "none yet"
            raise DatasetError(f"No training run named {run!r} (runs: {known}). Train first.")
        return read_state(path, Kind.RUN_METADATA)


def _usable(name: str, what: str) -> bool:
    """Whether a folder made by an older version has a name this version accepts (else a warning, once)."""
    from app.names import problem_with, suggest_name

    why = problem_with(name)
    if why and (what, name) not in _WARNED:
        _WARNED.add((what, name))
        log.warning("The %s folder %r is left out: its name is no longer accepted (%s). Rename the folder to %r "
                    "to use it again.", what, name, why, suggest_name(name))
    return why is None


_WARNED: set[tuple[str, str]] = set()
