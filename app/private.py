"""The workspace's private files: where each pseudonymous item really is, and which
identifiers the scans met (as keyed hashes only).

Everything the app writes outside ``data/raw/`` names input files by item id: a keyed
hash of the file's place, made with the workspace's pseudonym key as patient pseudonyms
are. The one map back to real paths is ``data/private/items.json`` (mode 0600, beside the
signing key). It is read where pixels must be loaded and nowhere else, and nothing copies
it into dataset exports, bundles, reports, predictions, logs or plots. It also holds the
places of sources outside the workspace (a folder organized or collected in place) under
source ids, so that no state file names them.

``data/private/identifiers.json`` holds keyed hashes of the identifier tokens the scans
read in DICOM headers (patient names, IDs, birth dates, accession numbers, addresses,
institutions): ``audit`` looks for those without anyone keeping the values.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import DatasetError
from app.locks import hold
from app.pseudonyms import pseudonymize
from app.state import Kind, read_state_or, write_state

if TYPE_CHECKING:
    from app.workspace import Workspace

PRIVATE_MODE = 0o600
_LOADED: dict[Path, tuple[int, dict[str, Any]]] = {}  # path -> (mtime_ns, document): read once per change


def item_id(secret: bytes, place: str) -> str:
    """The pseudonymous id of the item at ``place`` (workspace-relative, or absolute outside it)."""
    return pseudonymize(secret, f"item:{place}", "I")


def source_id(secret: bytes, place: str) -> str:
    """The pseudonymous id of a source folder or file outside the workspace."""
    return pseudonymize(secret, f"source:{place}", "F")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


# Words of addresses and institution names that identify nobody (they would match everywhere).
COMMON_WORDS = frozenset(
    "LANE STREET ROAD AVENUE DRIVE COURT PLACE SQUARE NORTH SOUTH EAST WEST SAINT HOSPITAL CLINIC CLINICS "
    "MEDICAL CENTER CENTRE GENERAL UNIVERSITY INFIRMARY INSTITUTE DEPARTMENT RADIOLOGY IMAGING HEALTH CARE "
    "HEALTHCARE REGIONAL NATIONAL CHILDREN CITY COUNTY STATE MEMORIAL COMMUNITY ANONYMOUS ANON UNKNOWN NONE".split())


def identifier_tokens(text: str) -> set[str]:
    """The tokens of ``text`` an identifier is searched by: folded upper-case runs of letters
    or digits, four characters or more (shorter ones would match everywhere), less common
    words of addresses and institution names."""
    return {t for t in re.split(r"[^A-Z0-9]+", _fold(text)) if len(t) >= 4 and t not in COMMON_WORDS}


def token_hash(secret: bytes, token: str) -> str:
    """The keyed hash an identifier token is kept as: "T" and 12 hex digits. The letter keeps
    it from ever reading as a record number (about one bare 12-hex hash in 280 is all digits)."""
    return pseudonymize(secret, f"token:{token}", "T")


def _current(stored: str) -> str:
    """A hash as token_hash writes it now (workspaces before the "T" kept bare hex)."""
    return stored if stored.startswith("T") else f"T{stored}"


class PrivateFiles:
    """The private map and the identifier hashes of one workspace."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.folder = ws.data_dir / "private"
        self.map_path = self.folder / "items.json"
        self.identifiers_path = self.folder / "identifiers.json"

    def _lock(self) -> Any:
        return hold(self.ws.locks_dir / "private.lock", "the private map", wait_s=120.0)

    def _read(self, path: Path, kind: Kind, default: dict[str, Any]) -> dict[str, Any]:
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            return default
        cached = _LOADED.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        document = read_state_or(path, kind, default)
        _LOADED[path] = (stamp, document)
        return document

    def _map(self) -> dict[str, Any]:
        return self._read(self.map_path, Kind.PRIVATE_MAP, {"items": {}, "sources": {}})

    def add(self, items: dict[str, dict[str, Any]] | None = None, sources: dict[str, str] | None = None) -> None:
        """Record item ids and source ids (merged with what is there, under a lock)."""
        if not items and not sources:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        with self._lock():
            _LOADED.pop(self.map_path, None)
            current = self._map()
            document = {"items": {**current["items"], **(items or {})},
                        "sources": {**current["sources"], **(sources or {})}}
            write_state(self.map_path, Kind.PRIVATE_MAP, document, mode=PRIVATE_MODE, compact=True)

    def item(self, item: str) -> dict[str, Any]:
        """The private entry of ``item``: its ``path`` (and ``files``, for a DICOM series).

        Raises:
            DatasetError: the item is not in the map (the map was deleted or belongs to another workspace).
        """
        entry = self._map()["items"].get(item)
        if entry is None:
            raise DatasetError(
                f"Item {item} is not in this workspace's private map ({self.map_path}). The map was removed or "
                "the dataset comes from another workspace: organize the dataset again."
            )
        return entry

    def path_of(self, item: str) -> Path:
        return self.ws.resolve(self.item(item)["path"])

    def source(self, stored: str) -> Path:
        """A dataset's source as stored in state files: a source id, or a workspace-relative path."""
        if re.fullmatch(r"F[0-9a-f]{12}", stored):
            place = self._map()["sources"].get(stored)
            if place is None:
                raise DatasetError(f"Source {stored} is not in this workspace's private map ({self.map_path}).")
            return self.ws.resolve(place)
        return self.ws.resolve(stored)

    def store_source(self, path: Path) -> str:
        """What a state file may say of source ``path``: its workspace-relative place when it is
        the workspace's own (named by the user), else a source id kept in the private map."""
        place = self.ws.relative(path)
        if not Path(place).is_absolute() and place.startswith(("data/raw/", "data/organized/")):
            return place
        sid = source_id(self.ws.secret(), place)
        self.add(sources={sid: place})
        return sid

    # -- identifiers: keyed hashes of the tokens the scans met, never the values ------------
    def add_identifiers(self, hashes: set[str]) -> None:
        if not hashes:
            return
        hashes = {_current(h) for h in hashes}
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock():
            _LOADED.pop(self.identifiers_path, None)
            known = set(self.identifier_hashes())
            if hashes <= known:
                return
            write_state(self.identifiers_path, Kind.IDENTIFIERS, {"hashes": sorted(known | hashes)},
                        mode=PRIVATE_MODE)

    def identifier_hashes(self) -> list[str]:
        stored = self._read(self.identifiers_path, Kind.IDENTIFIERS, {"hashes": []})["hashes"]
        return sorted({_current(h) for h in stored})
