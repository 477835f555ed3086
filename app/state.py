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
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app import schemas
from app.atomic import temp_sibling
from core.errors import StateError


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
    PRIVATE_MAP = "private_map"
    IDENTIFIERS = "identifiers"


@dataclass(frozen=True)
class Schema:
    version: int
    shape: type[schemas.BaseModel]  # the declared keys and their types (app.schemas)


SCHEMAS: dict[Kind, Schema] = {
    Kind.DATASET_INDEX: Schema(1, schemas.DatasetIndex),
    Kind.DATASET_METADATA: Schema(1, schemas.DatasetMetadata),
    Kind.TRAINING_CONFIG: Schema(1, schemas.TrainingConfig),
    Kind.RUN_METADATA: Schema(1, schemas.RunMetadata),
    Kind.WORKFLOW: Schema(1, schemas.Workflow),
    Kind.SETTINGS: Schema(1, schemas.Settings),
    Kind.SCAN_CACHE: Schema(1, schemas.ScanCache),
    Kind.CORRECTIONS: Schema(1, schemas.Corrections),
    Kind.MODEL_CARD: Schema(1, schemas.ModelCard),
    Kind.PREDICTIONS: Schema(1, schemas.Predictions),
    Kind.PRIVATE_MAP: Schema(1, schemas.PrivateMap),
    Kind.IDENTIFIERS: Schema(1, schemas.Identifiers),
}

_FIX = "Move the file aside (or delete it) and run the step that writes it again."


def write_state(path: Path, kind: Kind, payload: dict[str, Any], mode: int = 0o644, compact: bool = False) -> Path:
    """Write ``payload`` as a state file of ``kind``, atomically (file mode ``mode``); ``compact``
    leaves out the indentation (Python's JSON writer is several times faster without it).

    Raises:
        StateError: if the payload lacks a required key (a programming error
            caught before anything is written).
    """
    document = {"kind": str(kind), "schema_version": SCHEMAS[kind].version, **payload}
    _validate(document, kind, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=None if compact else 2, sort_keys=False, default=str)
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
    try:
        schema.shape.model_validate(document)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        if first["type"] == "missing":
            raise StateError(f"{path} lacks the key {key!r}. {_FIX}") from None
        found = repr(first.get("input"))
        found = found if len(found) <= 40 else found[:37] + "..."
        wanted = _WANTED.get(first["type"], first["msg"].lower())
        raise StateError(f"{path}: key {key!r} has the wrong type (it should be {wanted}; found {found}). "
                         f"{_FIX}") from None


_WANTED = {
    "dict_type": "an object", "model_type": "an object", "list_type": "a list", "int_type": "a whole number",
    "float_type": "a number", "string_type": "text", "bool_type": "true or false",
}
