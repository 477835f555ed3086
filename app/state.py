"""The one owner of JSON state files: atomic writes, schema versions, validation.

Every state file is an object with ``kind`` and ``schema_version`` keys beside its
payload. Writes go to a temporary file in the same folder, then ``os.replace``, so
a crash leaves either the old file or the new one, never half of one. A file that
is corrupt or of an unknown version is never overwritten: loading it raises a
StateError naming the file and what to do.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.errors import StateError


class Kind(StrEnum):
    DATASET_INDEX = "dataset_index"
    DATASET_METADATA = "dataset_metadata"
    TRAINING_CONFIG = "training_config"
    RUN_METADATA = "run_metadata"
    WORKFLOW = "workflow"
    SETTINGS = "settings"
    SCAN_CACHE = "scan_cache"
    CORRECTIONS = "corrections"
    MODEL_CARD = "model_card"
    PREDICTIONS = "predictions"


@dataclass(frozen=True)
class Schema:
    version: int
    required: dict[str, type | tuple[type, ...]]


SCHEMAS: dict[Kind, Schema] = {
    Kind.DATASET_INDEX: Schema(1, {"datasets": dict}),
    Kind.DATASET_METADATA: Schema(
        1, {"name": str, "source_dataset": str, "classes": list, "counts": dict, "items": int}
    ),
    Kind.TRAINING_CONFIG: Schema(1, {"dataset": str, "classes": list, "image_size": int}),
    Kind.RUN_METADATA: Schema(1, {"run": str, "phase": str, "dataset": str, "status": str}),
    Kind.WORKFLOW: Schema(1, {"dataset": str, "steps": dict}),
    Kind.SETTINGS: Schema(1, {}),
    Kind.SCAN_CACHE: Schema(1, {"root": str, "files": dict}),
    Kind.CORRECTIONS: Schema(1, {"dataset": str, "rules": list}),
    Kind.MODEL_CARD: Schema(1, {"name": str, "phase": str, "task": str, "classes": list, "input": dict, "files": dict}),
    Kind.PREDICTIONS: Schema(1, {"created": str, "results": list}),
}

_FIX = "Move the file aside (or delete it) and run the step that writes it again."


def write_state(path: Path, kind: Kind, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as a state file of ``kind``, atomically.

    Raises:
        StateError: if the payload lacks a required key (a programming error
            caught before anything is written).
    """
    document = {"kind": str(kind), "schema_version": SCHEMAS[kind].version, **payload}
    _validate(document, kind, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_state(path: Path, kind: Kind) -> dict[str, Any]:
    """Load and validate a state file of ``kind``.

    Raises:
        StateError: missing, unreadable, not JSON, another kind, an unknown
            schema version, or a required key missing or of the wrong type.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StateError(f"{path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise StateError(f"{path} cannot be read ({err}). {_FIX}") from err
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise StateError(f"{path} is corrupt (not valid JSON: {err}). {_FIX}") from err
    if not isinstance(document, dict):
        raise StateError(f"{path} is corrupt (expected a JSON object). {_FIX}")
    _validate(document, kind, path)
    return document


def read_state_or(path: Path, kind: Kind, default: dict[str, Any]) -> dict[str, Any]:
    """Like read_state, but a file that does not exist yet gives ``default``."""
    if not path.exists():
        return default
    return read_state(path, kind)


def _validate(document: dict[str, Any], kind: Kind, path: Path) -> None:
    schema = SCHEMAS[kind]
    found_kind = document.get("kind")
    if found_kind != str(kind):
        raise StateError(f"{path} holds {found_kind!r}, expected a {kind} file. {_FIX}")
    version = document.get("schema_version")
    if version != schema.version:
        raise StateError(
            f"{path} has schema version {version!r}; this version of MedAnomaly Workbench "
            f"reads version {schema.version}. It was written by another version: "
            f"use that version, or {_FIX[0].lower()}{_FIX[1:]}"
        )
    for key, expected in schema.required.items():
        if key not in document:
            raise StateError(f"{path} lacks the key {key!r}. {_FIX}")
        if not isinstance(document[key], expected):
            raise StateError(f"{path}: key {key!r} has the wrong type. {_FIX}")
