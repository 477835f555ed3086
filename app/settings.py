"""User settings, kept in the workspace's settings.json: the defaults the menus and the dashboard
share (seed, fast runs, scan workers, the workflow's recipe search)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from app.state import Kind, read_state_or, write_state
from app.workspace import Workspace


@dataclass
class Settings:
    seed: int = 0
    fast: bool = True  # the one-click workflow and train menus default to small, quick runs
    workers: int = 2  # scan processes
    # the workflow's classifier in full runs chooses its recipe on validation within this many
    # minutes (0: the fixed recipe); fast runs train the fixed fast recipe
    recipe_minutes: int = 10

    @classmethod
    def load(cls, ws: Workspace) -> "Settings":
        stored = read_state_or(ws.settings_path, Kind.SETTINGS, {})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in known})

    def save(self, ws: Workspace) -> None:
        write_state(ws.settings_path, Kind.SETTINGS, asdict(self))

    def items(self) -> dict[str, Any]:
        return asdict(self)
