"""Dataset rows: plain dicts with the keys of ROW_KEYS, stored as CSV.

Rows name their input by item id (app.private), never by path: where the pixels are is
looked up in the workspace's private map when they are loaded (``row_place``).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.atomic import temp_sibling
from core.errors import DatasetError

if TYPE_CHECKING:
    from app.workspace import Workspace

ROW_KEYS = [
    "item", "kind", "format", "series_id", "n_files", "patient_id", "modality", "region", "regions",
    "label", "source_label", "findings", "labeled", "split", "modality_rule", "modality_confidence",
    "region_rule", "region_confidence", "label_rule", "label_confidence", "sha256", "annotations",
]


def natural_key(name: str) -> list[Any]:
    """Sort key that orders numbers inside names by value (grade_2 before grade_10)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def write_rows(path: Path, rows: list[dict[str, Any]], keys: list[str] = ROW_KEYS) -> None:
    """Write rows as CSV atomically (temp file, then os.replace), with the columns ``keys``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise DatasetError(f"{path} is missing. Run Organize again for this dataset.")
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["labeled"] = row.get("labeled") == "True"
        row["n_files"] = int(row.get("n_files") or 1)
    return rows


def row_place(ws: Workspace, row: dict[str, Any]) -> str:
    """Where a row's pixels are, as stored (workspace-relative, or absolute outside it): from
    the private map. Rows of a .npz/.h5 file share the file's entry (``<file id>.<split>:<index>``).
    Rows of datasets organized by versions before item ids still carry their path."""
    if not row.get("item"):
        return row["path"]
    return ws.private.item(row["item"].split(".", 1)[0])["path"]


def series_files(ws: Workspace, row: dict[str, Any]) -> list[str]:
    """The files of a DICOM series row, as stored (the middle one alone for older datasets)."""
    if not row.get("item"):
        return [row["path"]]
    entry = ws.private.item(row["item"].split(".", 1)[0])
    return entry.get("files") or [entry["path"]]
