"""The classes a dataset trains on: the anomaly classes where its own names map onto them,
its own names where that mapping would erase the very difference it was made for.

ISIC's "benign" and "malignant" are both tumours, and a set of glioma, meningioma and
pituitary scans with no normal one is three tumours: mapped, each would be one class of
one name, a dataset that can train nothing and says nothing of why. There the dataset's
own names are kept (``benign``, ``malignant``) and the scan report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.organize.detect import LABEL_NAMES, NORMAL, SPELLINGS, STUDY_FOLDER, label_key, own_class
from app.organize.ordinal import GRADE


# Rules whose names sort a dataset into classes. A lesion outline (SEG, RTSTRUCT, a mask) only
# says "a lesion is here", whatever word its author chose ("Neoplasm", "GTV"): not a class of its own.
CLASS_RULES = ("label_table", "class_folder", "file_name_label", "class_folder_beside_known")


def settle_classes(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep the dataset's own class names (in place) when its labeled single-label rows name
    two classes or more and all of them map onto one anomaly class other than normal;
    returns what was done, for the scan report ({} when nothing was). Spellings of the
    class itself ("Tumour", "tumor") are one name; only names of CLASS_RULES count.
    Multi-label datasets keep their findings."""
    labeled = [r for r in rows if r["labeled"]]
    if not labeled or any(r.get("findings") for r in labeled):
        return {}
    classes = {r["label"] for r in labeled}
    if len(classes) != 1 or NORMAL in classes:
        return {}
    merged = next(iter(classes))
    named = [r for r in labeled if r["label_rule"] in CLASS_RULES]
    names = {_own_name(r["source_label"], merged) for r in named}
    if len(names) < 2:
        return {}
    for row in named:
        row["label"] = _own_name(row["source_label"], merged)
    return {"own_class_names": sorted(names), "instead_of": merged,
            "why": f"every class of this dataset means {merged}, and none is normal: its own names are kept"}


def name_corrections(rows: list[dict[str, Any]], settled: dict[str, Any], beside_unknown: bool = False) -> None:
    """Your corrections in a dataset that keeps its own names (settle_classes said so, or
    own_names_beside_unknown renamed its classes) take their own names too: "benign" set in
    the review of ISIC is the class benign, not a third class "tumor" beside benign and
    malignant. A correction to a normal name is normal."""
    if not settled and not beside_unknown:
        return
    merged = settled.get("instead_of", "")
    for row in rows:
        if row.get("label_rule") == "user_correction" and row["label"] not in (NORMAL, ""):
            row["label"] = _own_name(row["source_label"], merged)


def _own_name(source: str, merged: str) -> str:
    """``source`` as its own class; a spelling of ``merged`` itself ("Tumour") is that class."""
    key = label_key(source)
    return merged if SPELLINGS.get(key, key) == merged else own_class(source)


# Folder names that sort files by something other than their class.
NOT_CLASSES = frozenset({
    "images", "image", "imgs", "img", "masks", "mask", "labels", "label", "segmentations", "segmentation",
    "annotations", "gt", "groundtruth", "raw", "data", "dataset", "unlabeled", "unlabelled", "unknown",
    "unsorted", "other", "others", "misc", "new", "old", "tmp", "temp", "backup", "extra", "all", "sample",
    "samples", "preview", "previews", "thumbnails", "train", "training", "val", "valid", "validation", "test",
    "testing", "dicom", "nifti", "png", "jpg", "jpeg", "tif", "tiff", "ct", "mr", "mri", "xr", "us", "cr", "dx",
    "todo", "tolabel", "inbox", "incoming", "pending", "review", "excluded", "rejected", "duplicates",
})


def class_folders(paths: list[Path], root: Path, identifies: Callable[[str], bool] = lambda name: False,
                  ) -> dict[Path, str]:
    """Folders that are classes by their place: the other subfolders of a folder one of whose
    subfolders is a known class (OCT2017's CNV/, DME/ and DRUSEN/ beside NORMAL/; an
    Alzheimer set's VeryMildDemented/ beside NonDemented/). Folder -> its name, for the
    folders under ``root`` that hold ``paths`` (the items: plain 2D images, the way public
    class-folder sets come; a hospital's DICOM export names folders after patients). Names
    that sort files by anything else (images/, masks/, train/, unsorted/...), names with a
    number in them (patients, series, dates; not a grade: ``grade_2``, ``KL3``) and names
    that ``identifies`` (a patient's name met in the scans' identifiers) are never classes:
    a class name is written into every state file and exported bundle."""
    children: dict[Path, set[str]] = {}
    for path in paths:
        parents = [p for p in Path(path).parents if p != root and root in p.parents]
        for folder in parents:
            children.setdefault(folder.parent, set()).add(folder.name)

    def known(name: str) -> bool:
        return bool(LABEL_NAMES.get(label_key(name)) or STUDY_FOLDER.match(name))

    def may_be_class(name: str) -> bool:
        key = label_key(name)
        if not key or key in NOT_CLASSES or identifies(name):
            return False
        return not any(c.isdigit() for c in name) or bool(GRADE.match(name.strip()))

    found: dict[Path, str] = {}
    for parent, names in children.items():
        if len(names) >= 2 and any(known(n) for n in names):
            for name in names:
                if not known(name) and may_be_class(name):
                    found[parent / name] = name
    return found


def own_names_beside_unknown(rows: list[dict[str, Any]], places: list[Path], found: dict[Path, str]) -> bool:
    """Where a folder's class subfolders are partly names this tool does not know (``found``,
    from class_folders), the known ones keep their own names too, but for normal: "Normal,
    Pneumonia, Covid, Lung_Cancer" stays four classes (pneumonia and covid are not merged
    into one "infection" beside a "lung_cancer" of its own). ``places``: each row's file.
    Returns whether the dataset keeps own names this way (class folders were found by place)."""
    parents = {folder.parent for folder in found}
    for row, place in zip(rows, places):
        if row["label_rule"] != "class_folder" or row["label"] == NORMAL:
            continue
        if any(p.parent in parents and p.name == row["source_label"] for p in place.parents):
            row["label"] = own_class(row["source_label"])
    return bool(found)
