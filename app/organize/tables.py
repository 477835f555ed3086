"""Label tables beside the images: NIH ChestX-ray14, CheXpert, PadChest, RSNA pneumonia and hemorrhage,
ISIC 2020, APTOS 2019, and generic CSVs (HAM10000's and VinDr-CXR's among them).

Each known layout is one entry of ``TABLE_LAYOUTS``: the columns that identify it and
a function from a row to ``(image key, dataset label, patient or "")``. The image key
is what the table names an image by: a path (relative or absolute), a file name, or a
file stem. ``match_tables`` finds the file each key means, by path where the table
has paths and by name only where that name is unique in the tree: a file name that
sits in several folders (``image1.png`` in every class folder) is never guessed.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.organize.detect import anomaly_class, is_no_label

Row = dict[str, str]


@dataclass(frozen=True)
class TableLayout:
    name: str
    columns: frozenset[str]
    read: Callable[[Row], tuple[str, str, str]]
    modality: str = ""  # what the layout tells about its images, when the files do not
    region: str = ""
    accepts: Callable[[Row], bool] = lambda row: True  # a first row that says "this is my layout"


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


# RSNA intracranial hemorrhage: one row per image and subtype, "ID_<image>_<subtype>,<0|1>".
RSNA_ICH_ID = re.compile(r"^(ID_[0-9a-fA-F]+)_(any|epidural|intraparenchymal|intraventricular|subarachnoid|subdural)$")


def _rsna_ich(row: Row) -> tuple[str, str, str]:
    match = RSNA_ICH_ID.match(row["ID"].strip())
    if not match or row["Label"].strip() not in ("0", "1"):
        return "", "", ""
    image, subtype = match.groups()
    if row["Label"].strip() == "0":
        return image, "normal", ""
    return image, ("" if subtype == "any" else subtype), ""  # "any" positive: the subtypes' rows say which


def _isic(row: Row) -> tuple[str, str, str]:
    # ISIC 2020: "diagnosis" is "unknown" for most benign lesions; benign_malignant is the label.
    return row["image_name"].strip(), row["benign_malignant"].strip(), row["patient_id"].strip()


APTOS_GRADES = {"0": "No DR", "1": "Mild", "2": "Moderate", "3": "Severe", "4": "Proliferative DR"}


def _aptos(row: Row) -> tuple[str, str, str]:
    # APTOS 2019 blindness detection: diabetic retinopathy graded 0-4 (its data page names them).
    return row["id_code"].strip(), APTOS_GRADES.get(row["diagnosis"].strip(), ""), ""


# CheXpert: one column per finding, 1.0 present, 0.0 absent, -1.0 uncertain, blank not mentioned.
CHEXPERT_FINDINGS = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                     "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                     "Pleural Other", "Fracture")  # "Support Devices" is no finding of the patient's


def _chexpert(row: Row) -> tuple[str, str, str]:
    """The findings read present; an uncertain one is not kept as present (the "U-Zeros"
    reading of Irvin et al. 2019). "No Finding" 1.0 is normal; a row of uncertain and
    unmentioned findings only says nothing sure: unlabeled."""
    present = [f for f in CHEXPERT_FINDINGS if row.get(f, "").strip() in ("1", "1.0")]
    if present:
        label = "|".join(present)
    else:
        label = "normal" if row.get("No Finding", "").strip() in ("1", "1.0") else ""
    return row["Path"].strip(), label, ""


def _padchest(row: Row) -> tuple[str, str, str]:
    """PadChest: Labels is a Python-style list of findings ("['pleural effusion', 'cardiomegaly']",
    "['normal']"); a row whose list is empty or unreadable says nothing."""
    import ast

    try:
        found = ast.literal_eval(row["Labels"].strip() or "[]")
    except (ValueError, SyntaxError):
        found = []
    names = sorted({str(f).strip() for f in found if str(f).strip()} if isinstance(found, (list, tuple)) else set())
    findings = [n for n in names if n.lower() != "normal"]
    label = "|".join(findings) if findings else ("normal" if names else "")
    return row["ImageID"].strip(), label, row["PatientID"].strip()


GENERIC_PATH = ("path", "image_path", "filepath", "file_path", "relative_path", "img_path")
GENERIC_IMAGE = ("image", "filename", "file", "image_id", "img", "name", "image_name", "file_name",
                 "dateiname", "datei", "bild", "fichier", "nom_fichier", "archivo", "imagen")  # de, fr, es
GENERIC_LABEL = ("label", "class", "diagnosis", "finding", "target", "category", "dx",  # HAM10000: dx
                 "klasse", "diagnose", "classe", "etiquette", "diagnostic", "clase", "etiqueta",  # de, fr, es
                 "class_name")  # VinDr-CXR: one row per box and radiologist ("No finding" or the finding)
# Images of one lesion (HAM10000's lesion_id) are one patient's at least: never in two splits.
GENERIC_PATIENT = ("patient_id", "patient", "subject", "subject_id", "patientid", "lesion_id")


def _generic(columns: list[str], first: Row | None) -> Callable[[Row], tuple[str, str, str]] | None:
    """A table with an image column and a label column; a column of paths is preferred to one of names."""
    lower = {c.lower().strip(): c for c in columns}
    paths = [lower[c] for c in GENERIC_PATH if c in lower]
    names = [lower[c] for c in GENERIC_IMAGE if c in lower]
    # A "path" column that holds paths wins; one that holds bare names is just another name column.
    with_slash = [c for c in paths + names if first and ("/" in first.get(c, "") or "\\" in first.get(c, ""))]
    image = next(iter(with_slash or names or paths), None)
    label = next((lower[c] for c in GENERIC_LABEL if c in lower), None)
    patient = next((lower[c] for c in GENERIC_PATIENT if c in lower), None)
    if not image or not label:
        return None
    return lambda row: (row[image].strip(), row[label].strip(), row[patient].strip() if patient else "")


TABLE_LAYOUTS = [
    TableLayout("nih_chestxray14", frozenset({"Image Index", "Finding Labels", "Patient ID"}), _nih, "XR", "chest"),
    TableLayout("rsna_pneumonia_detailed", frozenset({"patientId", "class"}), _rsna_classes, "XR", "chest"),
    TableLayout("rsna_pneumonia_labels", frozenset({"patientId", "Target"}), _rsna_labels, "XR", "chest"),
    TableLayout("rsna_intracranial_hemorrhage", frozenset({"ID", "Label"}), _rsna_ich, "CT", "brain",
                accepts=lambda row: bool(RSNA_ICH_ID.match(row.get("ID", "").strip()))),
    TableLayout("isic_melanoma", frozenset({"image_name", "patient_id", "benign_malignant"}), _isic),
    TableLayout("aptos_retinopathy", frozenset({"id_code", "diagnosis"}), _aptos),
    TableLayout("chexpert", frozenset({"Path", "No Finding", "Frontal/Lateral"}), _chexpert, "XR", "chest"),
    TableLayout("padchest", frozenset({"ImageID", "PatientID", "Labels"}), _padchest, "XR", "chest"),
]
NEGATIVE = "normal"
FREE_TEXT_VALUES = 50  # more different labels than this, in over a fifth of the rows: report text, not classes


@dataclass
class LabelTable:
    layout: str
    labels: dict[str, str]  # image key as the table writes it -> dataset label
    patients: dict[str, str]  # image key -> raw patient id (pseudonymized by the caller)
    modality: str = ""
    region: str = ""


def _merge(old: str | None, new: str) -> str:
    """Several rows of one image: a finding wins over "normal" or a name of it ("No finding":
    RSNA lists every box of a patient, RSNA ICH one row per subtype, VinDr-CXR one row per
    radiologist and box), and several findings are kept, "a|b"."""
    if old is None or old == new or is_negative(old):
        return new
    if is_negative(new):
        return old
    return "|".join(sorted(set(old.split("|")) | {new}))


def open_table(path: Path) -> io.StringIO:
    """A table's text: UTF-8 (a byte-order mark aside), else Windows-1252, the encoding Excel
    saves CSV in on most European Windows machines ("Läsion", "Hüfte" kept, not replaced)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    return io.StringIO(text, newline="")


class _Semicolons(csv.excel):
    delimiter = ";"


def table_dialect(handle: Any) -> type[csv.Dialect]:
    """The CSV dialect of an open table, the handle left at its start: commas, or the semicolons
    of a spreadsheet saved where the comma is the decimal mark, or tabs (.tsv). The header
    line decides: it holds names, not values, so the mark between them is the delimiter."""
    header = handle.readline()
    handle.seek(0)
    counts = {mark: header.count(mark) for mark in (",", ";", "\t")}
    mark = max(counts, key=lambda m: (counts[m], m == ","))  # a tie (none at all): commas
    return {",": csv.excel, ";": _Semicolons, "\t": csv.excel_tab}[mark]


def free_text(table: LabelTable) -> str:
    """Why a table's label column is free text (a report), not classes; "" when it is classes."""
    values = {label for label in table.labels.values() if "|" not in label}
    if len(values) > FREE_TEXT_VALUES and len(values) > 0.2 * len(table.labels):
        return (f"its label column holds {len(values)} different values in {len(table.labels)} rows, free text "
                "or measurements rather than classes; keep one column of class names")
    return ""


@lru_cache(maxsize=4096)  # asked once per table row: RSNA's hemorrhage table has 4.5 million
def is_negative(label: str) -> bool:
    """"normal", or a single name of it ("No finding", "healthy")."""
    return label == NEGATIVE or ("|" not in label and anomaly_class(label) == NEGATIVE)


def read_label_table(path: Path) -> LabelTable | None:
    """Parse ``path`` if it is a label table of a known or generic layout, else None."""
    try:
        with open_table(path) as handle:
            reader = csv.DictReader(handle, dialect=table_dialect(handle), restval="")  # short rows: empty cells
            columns = reader.fieldnames or []
            rows = iter(reader)
            first = next(rows, None)
            layout = next((t for t in TABLE_LAYOUTS if t.columns <= set(columns) and (first is None or t.accepts(first))),
                          None)
            read = layout.read if layout else _generic(columns, first)
            if read is None:
                return None
            table = LabelTable(layout.name if layout else "generic_csv", {}, {},
                               layout.modality if layout else "", layout.region if layout else "")
            for row in ([first] if first is not None else []) + list(rows):
                key, label, patient = read(row)
                if not key or is_no_label(label):  # "unknown", "n/a": unlabeled, not a class
                    continue
                table.labels[key] = _merge(table.labels.get(key), label)
                if patient:
                    table.patients[key] = patient
            return table
    except (OSError, csv.Error, KeyError):
        return None


SPLIT_VALUES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def read_split_table(path: Path) -> dict[str, str] | None:
    """A list of given splits (columns: an image column of GENERIC_PATH, GENERIC_IMAGE or "Image Index",
    and "split": train / val / test), e.g. a dataset's official splits, by image key; else None."""
    try:
        with open_table(path) as handle:
            reader = csv.DictReader(handle, dialect=table_dialect(handle), restval="")  # short rows: empty cells
            lower = {c.lower().strip(): c for c in reader.fieldnames or []}
            image = next((lower[c] for c in ("image index", *GENERIC_PATH, *GENERIC_IMAGE) if c in lower), None)
            if not image or "split" not in lower:
                return None
            given = {}
            for row in reader:
                split = SPLIT_VALUES.get(row[lower["split"]].strip().lower())
                if split and row[image].strip():
                    given[row[image].strip()] = split
            return given or None
    except (OSError, csv.Error, KeyError):
        return None


# -- which file a table's key means ------------------------------------------------------------------
def _parts(text: str) -> tuple[str, ...]:
    return tuple(p for p in text.replace("\\", "/").lower().split("/") if p not in ("", "."))


class TreeIndex:
    """The image files of a tree, found by name, by stem, and by the folders above them."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.by_name: dict[str, list[tuple[str, tuple[str, ...]]]] = defaultdict(list)
        self.by_stem: dict[str, list[tuple[str, tuple[str, ...]]]] = defaultdict(list)
        for path in paths:
            parts = _parts(path)
            self.by_name[parts[-1]].append((path, parts))
            self.by_stem[parts[-1].split(".")[0]].append((path, parts))

    def find(self, key: str) -> tuple[str | None, int]:
        """The one file ``key`` names, and how many files it could name.

        A key with folders matches the file whose path ends with them; where no path ends
        with all of them (the top folder renamed), the one file sharing the most of them,
        at least the file and its folder. A bare name or stem matches only a name that
        is unique in the tree. Returns (path or None, candidates): None with 0 candidates
        is a key that names no file here, None with several is an ambiguous one.
        """
        parts = _parts(key)
        if not parts:
            return None, 0
        candidates = self.by_name.get(parts[-1]) or self.by_stem.get(parts[-1]) or []
        if len(candidates) <= 1:
            return (candidates[0][0] if candidates else None), len(candidates)
        if len(parts) == 1:
            return None, len(candidates)

        def shared(file_parts: tuple[str, ...]) -> int:
            n = 1  # the names already agree
            while n < min(len(parts), len(file_parts)) and parts[-1 - n] == file_parts[-1 - n]:
                n += 1
            return n

        scores = [(shared(file_parts), path) for path, file_parts in candidates]
        best = max(score for score, _ in scores)
        winners = [path for score, path in scores if score == best]
        if best >= 2 and len(winners) == 1:
            return winners[0], len(candidates)
        return None, len(candidates)


@dataclass(frozen=True)
class TableHit:
    label: str
    patient: str
    table: LabelTable


@dataclass
class TableReport:
    """What one table did: rows applied, rows naming a file shared by several, rows naming none."""

    table: LabelTable
    path: str
    applied: int = 0
    ambiguous: int = 0
    unmatched: int = 0


@dataclass
class TableMatches:
    hits: dict[str, list[TableHit]] = field(default_factory=lambda: defaultdict(list))  # image path -> what tables say
    reports: list[TableReport] = field(default_factory=list)


def match_tables(tables: list[tuple[str, LabelTable]], index: TreeIndex) -> TableMatches:
    """Every (table path, table)'s rows matched to the files of ``index``."""
    matches = TableMatches()
    for path, table in tables:
        report = TableReport(table, path)
        for key, label in table.labels.items():
            found, candidates = index.find(key)
            if found:
                matches.hits[found].append(TableHit(label, table.patients.get(key, ""), table))
                report.applied += 1
            elif candidates:
                report.ambiguous += 1
            else:
                report.unmatched += 1
        matches.reports.append(report)
    return matches


def match_keys(given: dict[str, str], index: TreeIndex) -> dict[str, str]:
    """A key -> value list (official splits) as image path -> value, by the same rules."""
    out = {}
    for key, value in given.items():
        found, _ = index.find(key)
        if found:
            out[found] = value
    return out
