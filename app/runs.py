"""A training run's metadata.json, changed in one place.

Training writes a run's metadata whole while it trains (it holds the run's lock); after
it, evaluation, export, the out-of-distribution gate and the recipe search each add their
section. ``Run.change`` does that as a merge: under the run's metadata lock it reads the
file as it is now, applies the change, and writes it atomically, so two of them at once
(an export beside an evaluation, two processes) never lose each other's section.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.schemas import RunMetadata
from app.state import Kind, read_state, write_state
from app.workspace import Workspace


class Run:
    def __init__(self, ws: Workspace, name: str) -> None:
        self.ws, self.name = ws, name
        self.dir: Path = ws.run_dir(name)  # checks the name
        self._meta: dict[str, Any] | None = None

    @classmethod
    def load(cls, ws: Workspace, name: str) -> Run:
        """The run, its metadata read now (once: an operation passes this object along).

        Raises:
            DatasetError: no such run.
        """
        run = cls(ws, name)
        run.meta  # noqa: B018 (read now: a missing run is refused before any work)
        return run

    @property
    def record(self) -> RunMetadata:
        """The metadata's sections, typed (app/schemas.py RunMetadata)."""
        return RunMetadata.model_validate(self.meta)

    @property
    def meta(self) -> dict[str, Any]:
        """The metadata, read once (``change`` keeps it current).

        Raises:
            DatasetError: no such run.
        """
        if self._meta is None:
            self._meta = self.ws.run_metadata(self.name)
        return self._meta

    def change(self, sections: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Merge ``sections(current metadata)`` into metadata.json; the new metadata."""
        with self.ws.lock("runmeta", self.name, wait_s=60.0):
            current = read_state(self.dir / "metadata.json", Kind.RUN_METADATA)
            merged = {**current, **sections(current)}
            write_state(self.dir / "metadata.json", Kind.RUN_METADATA, merged)
        self._meta = merged
        return merged

    def merge(self, **sections: Any) -> dict[str, Any]:
        """Set these top-level sections (``export=...``); the new metadata."""
        return self.change(lambda current: sections)
