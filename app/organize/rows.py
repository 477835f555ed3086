"""Dataset rows: plain dicts with the keys of ROW_KEYS, stored as CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from app.atomic import temp_sibling
from app.errors import DatasetError

ROW_KEYS = [
    "path", "kind", "format", "series_id", "n_files", "patient_id", "modality", "region",
    "label", "source_label", "labeled", "split", "modality_rule", "modality_confidence",
    "region_rule", "region_confidence", "label_rule", "label_confidence", "sha256",
]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as CSV atomically (temp file, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.DictWriter(handle, fieldnames=ROW_KEYS, extrasaction="ignore")
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
