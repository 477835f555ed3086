"""Where everything lives: the workspace folders and the dataset index.

The workspace root defaults to this repository (its own ``data/`` and
``checkpoints/``); ``--workspace DIR`` or ``MEDANOMALY_WORKSPACE`` moves it to a
large disk. Paths inside state files are stored relative to the root where they
can be, so a workspace can be moved whole.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from app.errors import DatasetError
from app.state import Kind, read_state, read_state_or, write_state

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_VAR = "MEDANOMALY_WORKSPACE"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: str | Path | None = None) -> "Workspace":
        """The workspace at ``root``, else $MEDANOMALY_WORKSPACE, else the repository."""
        chosen = root or os.environ.get(ENV_VAR) or REPO_ROOT
        path = Path(chosen).expanduser().resolve()
        ws = cls(path)
        for folder in (ws.raw_dir, ws.organized_dir, ws.runs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return ws

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
        return self.data_dir / "workflows" / f"{dataset}.json"

    def organized_path(self, dataset: str) -> Path:
        return self.organized_dir / dataset

    def relative(self, path: Path) -> str:
        """``path`` relative to the root when inside it, else absolute (as text)."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def resolve(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    # -- the per-workspace secret used to pseudonymize patient identifiers --------
    def secret(self) -> bytes:
        """The workspace's pseudonymization key, made on first use (mode 0600).

        It never leaves the workspace: nothing writes it into state files or logs.
        """
        path = self.data_dir / ".pseudonym_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return bytes.fromhex(path.read_text().strip())

    # -- the dataset index -------------------------------------------------------------
    def load_index(self) -> dict[str, Any]:
        return read_state_or(self.index_path, Kind.DATASET_INDEX, {"datasets": {}})["datasets"]

    def record_dataset(self, name: str, **entry: Any) -> None:
        """Add or update one dataset's entry in the index (merging with what is there)."""
        datasets = self.load_index()
        merged = {**datasets.get(name, {}), **entry, "updated": now_iso()}
        datasets[name] = merged
        write_state(self.index_path, Kind.DATASET_INDEX, {"datasets": datasets})

    def raw_datasets(self) -> dict[str, dict[str, Any]]:
        return {n: e for n, e in self.load_index().items() if e.get("raw_path") and e.get("complete")}

    def organized_datasets(self) -> list[str]:
        return sorted(
            p.name for p in self.organized_dir.iterdir() if (p / "metadata.json").exists()
        ) if self.organized_dir.exists() else []

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
            found.append(read_state(meta, Kind.RUN_METADATA))
        return sorted(found, key=lambda m: m.get("created", ""), reverse=True)

    def run_dir(self, run: str) -> Path:
        return self.runs_dir / run

    def run_metadata(self, run: str) -> dict[str, Any]:
        path = self.run_dir(run) / "metadata.json"
        if not path.exists():
            known = ", ".join(m["run"] for m in self.runs()) or "none yet"
            raise DatasetError(f"No training run named {run!r} (runs: {known}). Train first.")
        return read_state(path, Kind.RUN_METADATA)
