"""Review what was detected, folder by folder, and correct it.

Corrections are saved in ``data/organized/<name>/corrections.json`` and applied
on every later organize of that dataset, so a rescan never undoes them. The file
names each folder by a keyed hash (folder names can hold patient names); the review
itself shows the folders, on the screen of the user who asked for it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from core.errors import DatasetError
from app.organize.detect import anomaly_class
from app.pseudonyms import pseudonymize
from app.organize.rows import read_rows, row_place
from app.state import Kind, read_state_or, write_state
from app.workspace import Workspace

FIELDS = ("modality", "region", "label")


@dataclass(frozen=True)
class ReviewGroup:
    folder: str  # the folder, or "folder#<series id>" where a folder holds several series: what to correct
    items: int
    modality: str
    region: str
    label: str
    rules: str  # which rules fired, e.g. "dicom_modality_tag / dicom_description / class_folder"
    confidence: float  # the lowest of the three
    conflicts: int = 0  # items whose label table and class folder disagree (left unlabeled)
    files: int = 0


SERIES_MARK = "#"


def _folder(ws: Workspace, row: dict[str, Any]) -> str:
    return str(PurePosixPath(row_place(ws, row)).parent)


def folder_key(secret: bytes, folder: str) -> str:
    """What corrections.json says of a folder: a keyed hash of its place."""
    return pseudonymize(secret, f"folder:{PurePosixPath(folder)}", "D")


def review_groups(ws: Workspace, dataset: str) -> list[ReviewGroup]:
    """One line per folder of the organized dataset: what was detected and how surely."""
    ws.dataset_metadata(dataset)
    out = ws.organized_path(dataset)
    rows = read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv")
    by_folder: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_folder[_folder(ws, row)].append(row)
    groups: dict[str, list[dict[str, Any]]] = {}
    for folder, members in by_folder.items():
        series = {m["series_id"] for m in members if m["kind"] == "dicom_series" and m["series_id"]}
        if len(series) < 2:
            groups[folder] = members
            continue
        for row in members:  # several series in one folder: a line (and a correction) each
            key = f"{folder}{SERIES_MARK}{row['series_id']}" if row["series_id"] else folder
            groups.setdefault(key, []).append(row)
    result = []
    for folder, members in sorted(groups.items()):
        def common(key: str) -> str:
            values = Counter(str(m[key]) for m in members).most_common()
            return values[0][0] + (f" (+{len(values) - 1} other)" if len(values) > 1 else "")

        rules = " / ".join(common(f"{f}_rule") or "-" for f in FIELDS)
        confidence = min(float(m[f"{f}_confidence"] or 0) for m in members for f in FIELDS if m[f"{f}_rule"])
        conflicts = sum(m["label_rule"] == "conflict" for m in members)
        result.append(ReviewGroup(folder, len(members), common("modality"), common("region"),
                                  common("label") or "(unlabeled)", rules, confidence, conflicts,
                                  sum(m["n_files"] for m in members)))
    return result


def load_corrections(ws: Workspace, dataset: str) -> list[dict[str, str]]:
    path = ws.organized_path(dataset) / "corrections.json"
    return read_state_or(path, Kind.CORRECTIONS, {"dataset": dataset, "rules": []})["rules"]


def add_correction(ws: Workspace, dataset: str, folder: str, field: str, value: str) -> list[dict[str, str]]:
    """Record "every item under ``folder`` has ``field`` = ``value``"; returns all corrections.

    Raises:
        DatasetError: an unknown field or an empty value.
    """
    if field not in FIELDS:
        raise DatasetError(f"Only {', '.join(FIELDS)} can be corrected (not {field!r}).")
    if not value.strip():
        raise DatasetError("Give a value for the correction.")
    key = folder_key(ws.secret(), folder)
    rules = [r for r in load_corrections(ws, dataset) if not (r["folder"] == key and r["field"] == field)]
    rules.append({"folder": key, "field": field, "value": value.strip()})
    write_state(ws.organized_path(dataset) / "corrections.json", Kind.CORRECTIONS,
                {"dataset": dataset, "rules": rules})
    return rules


def apply_corrections(rows: list[dict[str, Any]], rules: list[dict[str, str]], secret: bytes) -> int:
    """Apply saved corrections to freshly detected rows (in place); returns rows changed.
    A rule applies to the rows under its folder (rules of older versions name the folder)."""
    changed = 0
    for row in rows:
        path = PurePosixPath(row["path"])
        above = {str(p) for p in path.parents}
        if row.get("series_id"):
            above.add(f"{path.parent}{SERIES_MARK}{row['series_id']}")
        above |= {folder_key(secret, p) for p in above}
        for rule in rules:
            if rule["folder"] not in above:
                continue
            field, value = rule["field"], rule["value"]
            if field == "label":
                row.update(source_label=value, label=anomaly_class(value), labeled=True)
            else:
                row[field] = value
            row[f"{field}_rule"], row[f"{field}_confidence"] = "user_correction", 1.0
            changed += 1
    return changed
