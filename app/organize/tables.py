"""Label tables beside the images: NIH ChestX-ray14, RSNA pneumonia, and generic CSVs.

Each known layout is one entry of ``TABLE_LAYOUTS``: the columns that identify it and
a function from a row to ``(image key, dataset label, patient or "")``. The image key
is a file name, or a file stem where the table names images without an extension.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Row = dict[str, str]


@dataclass(frozen=True)
class TableLayout:
    name: str
    columns: frozenset[str]
    read: Callable[[Row], tuple[str, str, str]]
    modality: str = ""  # what the layout tells about its images, when the files do not
    region: str = ""


def _nih(row: Row) -> tuple[str, str, str]:
    findings = row["Finding Labels"].strip()
    return row["Image Index"].strip(), ("normal" if findings == "No Finding" else findings), row["Patient ID"].strip()


def _rsna_labels(row: Row) -> tuple[str, str, str]:
    # One row per box; Target 1 means lung opacity. The patientId is the file stem.
    label = "Lung Opacity" if row["Target"].strip() == "1" else "normal"
    return row["patientId"].strip(), label, row["patientId"].strip()


def _rsna_classes(row: Row) -> tuple[str, str, str]:
    names = {"Normal": "normal", "Lung Opacity": "Lung Opacity", "No Lung Opacity / Not Normal": "abnormal"}
    cls = row["class"].strip()
    return row["patientId"].strip(), names.get(cls, cls), row["patientId"].strip()


GENERIC_IMAGE = ("image", "filename", "file", "image_id", "path", "image_path", "img", "name")
GENERIC_LABEL = ("label", "class", "diagnosis", "finding", "target", "category")
GENERIC_PATIENT = ("patient_id", "patient", "subject", "subject_id", "patientid")


def _generic(columns: list[str]) -> Callable[[Row], tuple[str, str, str]] | None:
    lower = {c.lower().strip(): c for c in columns}
    image = next((lower[c] for c in GENERIC_IMAGE if c in lower), None)
    label = next((lower[c] for c in GENERIC_LABEL if c in lower), None)
    patient = next((lower[c] for c in GENERIC_PATIENT if c in lower), None)
    if not image or not label:
        return None
    return lambda row: (Path(row[image].strip()).name, row[label].strip(), row[patient].strip() if patient else "")


TABLE_LAYOUTS = [
    TableLayout("nih_chestxray14", frozenset({"Image Index", "Finding Labels", "Patient ID"}), _nih, "XR", "chest"),
    TableLayout("rsna_pneumonia_detailed", frozenset({"patientId", "class"}), _rsna_classes, "XR", "chest"),
    TableLayout("rsna_pneumonia_labels", frozenset({"patientId", "Target"}), _rsna_labels, "XR", "chest"),
]


@dataclass
class LabelTable:
    layout: str
    labels: dict[str, str]  # image key -> dataset label
    patients: dict[str, str]  # image key -> raw patient id (pseudonymized by the caller)
    modality: str = ""
    region: str = ""


def read_label_table(path: Path) -> LabelTable | None:
    """Parse ``path`` if it is a label table of a known or generic layout, else None."""
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
            reader = csv.DictReader(handle, restval="")  # a short row: its missing cells are empty
            columns = reader.fieldnames or []
            layout = next((t for t in TABLE_LAYOUTS if t.columns <= set(columns)), None)
            read = layout.read if layout else _generic(columns)
            if read is None:
                return None
            table = LabelTable(layout.name if layout else "generic_csv", {}, {},
                               layout.modality if layout else "", layout.region if layout else "")
            for row in reader:
                key, label, patient = read(row)
                if not key or not label:
                    continue
                # A positive row wins over a negative one (RSNA lists every box of a patient).
                if table.labels.get(key) in (None, "normal"):
                    table.labels[key] = label
                if patient:
                    table.patients[key] = patient
            return table
    except (OSError, csv.Error, KeyError):
        return None


SPLIT_VALUES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def read_split_table(path: Path) -> dict[str, str] | None:
    """A list of given splits (columns: an image column of GENERIC_IMAGE or "Image Index",
    and "split": train / val / test), e.g. a dataset's official splits; else None."""
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
            reader = csv.DictReader(handle, restval="")  # a short row: its missing cells are empty
            lower = {c.lower().strip(): c for c in reader.fieldnames or []}
            image = next((lower[c] for c in ("image index", *GENERIC_IMAGE) if c in lower), None)
            if not image or "split" not in lower:
                return None
            given = {}
            for row in reader:
                split = SPLIT_VALUES.get(row[lower["split"]].strip().lower())
                if split and row[image].strip():
                    given[Path(row[image].strip()).name] = split
            return given or None
    except (OSError, csv.Error, KeyError):
        return None


@dataclass(frozen=True)
class TableHit:
    label: str
    patient: str
    table: LabelTable


def lookup(tables: list[LabelTable], file_name: str) -> TableHit | None:
    """What a label table says of an image file name, trying the name then its stem."""
    stem = file_name.split(".")[0]
    for table in tables:
        for key in (file_name, stem):
            if key in table.labels:
                return TableHit(table.labels[key], table.patients.get(key, ""), table)
    return None
