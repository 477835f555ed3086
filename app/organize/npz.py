"""MedMNIST-format files (``.npz``, or HDF5 ``.h5`` stores of cubes) as organized datasets.

The file keeps its official splits (``train_images``/``train_labels``, ``val_*``,
``test_*``); rows point into it (``kind`` "npz", ``series_id`` "split:index"), so no
image is copied. MedMNIST gives no patient identifiers: each image is its own patient,
as in the official splits.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DatasetError
from app.organize.detect import NORMAL, anomaly_class, findings
from app.organize.splits import SPLITS
from app.progress import Progress, report
from app.workspace import Workspace

# Label names of the MedMNIST files this project meets (MedMNIST v2 INFO), by file stem.
KNOWN = {
    "pneumoniamnist": ({0: "normal", 1: "pneumonia"}, "XR", "chest"),
    "breastmnist": ({0: "malignant", 1: "normal"}, "US", "breast"),  # 1 is "normal, benign"
    "adrenalmnist3d": ({0: "normal", 1: "mass"}, "CT", "abdomen"),
    # Multi-label: one column per finding, 1 where the radiograph shows it (none: no finding).
    "chestmnist": ({0: "atelectasis", 1: "cardiomegaly", 2: "effusion", 3: "infiltration", 4: "mass", 5: "nodule",
                    6: "pneumonia", 7: "pneumothorax", 8: "consolidation", 9: "edema", 10: "emphysema",
                    11: "fibrosis", 12: "pleural", 13: "hernia"}, "XR", "chest"),
}


def _known(path: Path) -> tuple[dict[int, str], str, str]:
    stem = path.name.split(".")[0].lower()
    for key, value in KNOWN.items():
        if stem.startswith(key):
            return value
    return {}, "OT", "unknown"


def _label_table(data: Any, split: str) -> np.ndarray:
    """A split's labels as (N, columns); an empty split (a small cohort's) as (0, columns)."""
    shape = data.shape(f"{split}_labels")
    columns = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return data.array(f"{split}_labels").reshape(shape[0], columns)


def _sources(table: np.ndarray, names: dict[int, str], path: Path) -> list[str]:
    """Each image's label as its source names it: the class of a one-column file; for a
    multi-label file (one 0/1 column per finding, as ChestMNIST's 14) the findings shown,
    "|"-joined ("effusion|mass"), or "normal" for none (the organizer then trains one
    probability per finding: app/organize/multilabel.py)."""
    if table.shape[1] == 1:
        return [names.get(int(value), f"class_{int(value)}") for value in table[:, 0].tolist()]
    if len(table) and not np.isin(table, (0, 1)).all():
        raise DatasetError(f"{path.name} gives {table.shape[1]} labels per image, but not as 0/1 columns (one per "
                           "finding): keep one class column, or one 0/1 column per finding, and organize it again.")
    columns = [names.get(k, f"finding_{k}") for k in range(table.shape[1])]
    return ["|".join(columns[k] for k in np.flatnonzero(row)) or NORMAL for row in table]


def npz_rows(ws: Workspace, path: Path, progress: Progress | None = None) -> list[dict[str, Any]]:
    """One row per image of a MedMNIST-format file.

    Raises:
        DatasetError: the file lacks the MedMNIST keys.
    """
    from app.cube_store import Store

    try:
        with Store(path) as data:
            table = {s: _label_table(data, s) for s in SPLITS}
            shapes = {s: data.shape(f"{s}_images") for s in SPLITS}
            # Cube files (app/cubes.py) say their classes, modality and patients themselves.
            own_names = [str(v) for v in data.array("label_names")] if "label_names" in data else None
            own_facts = (str(data.array("modality")), str(data.array("region"))) if "modality" in data else None
            patients = {s: [str(v) for v in data.array(f"{s}_patients")] for s in SPLITS} \
                if "train_patients" in data else None
    except (KeyError, ValueError, OSError) as err:
        raise DatasetError(
            f"{path} is not a MedMNIST-format file (train/val/test _images and _labels): {err}"
        ) from err
    names, modality, region = _known(path)
    if own_names:
        names = dict(enumerate(own_names))
    if own_facts:
        modality, region = own_facts
    sources = {s: _sources(table[s], names, path) for s in SPLITS}
    stored = ws.relative(path)
    digest = hashlib.sha256(stored.encode()).hexdigest()[:8]
    rows = []
    for split in SPLITS:
        for index, source in enumerate(sources[split]):
            rows.append({
                "path": stored, "kind": "npz", "format": "npz", "series_id": f"{split}:{index}",
                "n_files": 1, "modality": modality,
                "patient_id": patients[split][index] if patients else f"F{digest}{split[:2]}{index}",
                "region": region, "label": anomaly_class(source) if names or "|" in source else source,
                "source_label": source, "findings": findings(source), "labeled": True, "split": split,
                "modality_rule": "medmnist_file", "modality_confidence": 0.9 if names else 0.0,
                "region_rule": "medmnist_file", "region_confidence": 0.9 if names else 0.0,
                "label_rule": "medmnist_labels", "label_confidence": 1.0, "sha256": "",
            })
        report(progress, "Reading the .npz file", SPLITS.index(split) + 1, len(SPLITS))
    if len(shapes["train"]) not in (3, 4, 5):
        raise DatasetError(f"{path}: unexpected image shape {shapes['train']}")
    return rows


def npz_images(path: Path, rows: list[dict[str, Any]], colour: bool = False) -> np.ndarray:
    """The images of ``rows`` (all from ``path``), as float32 in [0, 1], 2D or 3D; a colour
    2D file's as their luminance, or with ``colour`` as they are, (N, y, x, 3).

    An HDF5 store reads only these images; an .npz file is read per split.
    """
    from app.cube_store import Store

    picked = [(split, int(index)) for split, index in (r["series_id"].split(":") for r in rows)]
    with Store(path) as data:
        parts = {split: data.images(split, [i for s, i in picked if s == split]) for split in {s for s, _ in picked}}
    cursor = dict.fromkeys(parts, 0)
    ordered = []
    for split, _ in picked:
        ordered.append(parts[split][cursor[split]])
        cursor[split] += 1
    images = np.stack(ordered).astype(np.float32) / 255.0
    if images.ndim == 4 and images.shape[-1] == 3 and not colour:  # colour 2D MedMNIST: luminance
        images = images.mean(axis=-1)
    return images


def npz_position_codes(path: Path, rows: list[dict[str, Any]]) -> np.ndarray:
    """Each row's anatomical position as an index (1-13, app/cubes.py POSITIONS; 0: none)."""
    from app.cube_store import Store

    codes = np.zeros(len(rows), np.int64)
    with Store(path) as data:
        tables = {split: data.array(f"{split}_positions") for split in SPLITS if f"{split}_positions" in data}
    for k, row in enumerate(rows):
        split, index = row["series_id"].split(":")
        one_hot = tables[split][int(index)] if split in tables else None
        if one_hot is not None and one_hot.any():
            codes[k] = int(np.argmax(one_hot)) + 1
    return codes
