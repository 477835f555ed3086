"""Which label map outlines a volume's lesions, in the public 3D layouts that keep their maps
apart from their volumes, and which of its values are lesions.

- The Medical Segmentation Decathlon: ``dataset.json`` pairs each ``imagesTr/`` volume
  with its ``labelsTr/`` map (``training``) and names every value (``labels``). The values
  whose names say lesion (cancer, tumour, nodule, ...) are lesions; a task whose maps
  outline organs only (Spleen, Heart, Hippocampus, Prostate) has none, and says so.
- KiTS (``case_00000/imaging.nii.gz`` with ``segmentation.nii.gz``): 1 kidney, 2 tumour,
  3 cyst (KiTS21 on): the tumour.
- LiTS (``volume-0.nii`` with ``segmentation-0.nii``): 1 liver, 2 tumour: the tumour.
- BraTS (``BraTS2021_00000/BraTS2021_00000_flair.nii.gz`` with ``..._seg.nii.gz``; 2023's
  ``BraTS-GLI-00000-000-t2f.nii.gz`` with ``...-seg.nii.gz``): every value is a part of the tumour.

An organ's map is never read as a lesion's: where the values are not known to be lesions,
nothing is (see ``LabelMap.why``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

LESION_WORDS = ("cancer", "tumour", "tumor", "lesion", "nodule", "metasta", "mass", "neoplasm", "carcinoma")
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


@dataclass(frozen=True)
class LabelMap:
    path: Path | None  # the map; None: the volume has one, but it outlines no lesion
    values: tuple[int, ...] = ()  # the lesion values; () with a path: every value above 0
    why: str = ""  # with no path: why the map gives no lesion


def _stem(path: Path) -> str:
    name = path.name
    return next((name[: -len(s)] for s in VOLUME_SUFFIXES if name.lower().endswith(s)), path.stem)


@lru_cache(maxsize=32)
def _decathlon(description: Path, mtime: float) -> tuple[dict[str, str], tuple[int, ...], str]:
    """(volume path -> map path, lesion values, task name) of a Decathlon dataset.json."""
    data = json.loads(description.read_text(encoding="utf-8"))
    base = description.parent
    pairs = {str((base / e["image"]).resolve()): str((base / e["label"]).resolve())
             for e in data.get("training", []) if isinstance(e, dict) and e.get("image") and e.get("label")}
    lesions = tuple(sorted(int(value) for value, name in (data.get("labels") or {}).items()
                           if str(value).isdigit() and any(w in str(name).lower() for w in LESION_WORDS)))
    return pairs, lesions, str(data.get("name", base.name))


def _decathlon_map(volume: Path, root: Path) -> LabelMap | None:
    for folder in [volume.parent, *volume.parent.parents]:
        description = folder / "dataset.json"
        if description.is_file():
            try:
                pairs, lesions, task = _decathlon(description, description.stat().st_mtime)
            except (OSError, ValueError, TypeError, AttributeError):
                return None
            found = pairs.get(str(volume.resolve()))
            if not found:
                return None
            if not lesions:
                return LabelMap(None, why=f"the {task} task's label maps outline organs, not lesions (dataset.json)")
            return LabelMap(Path(found), lesions) if Path(found).is_file() else None
        if folder == root:
            return None
    return None


LITS_VOLUME = re.compile(r"^volume-(\d+)$")


def label_map(volume: Path, root: Path) -> LabelMap | None:
    """The label map of ``volume`` (a file under ``root``) in a public layout above, or None."""
    found = _decathlon_map(volume, root)
    if found:
        return found
    stem, folder = _stem(volume), volume.parent
    if stem == "imaging" and (folder / "segmentation.nii.gz").is_file():  # KiTS
        return LabelMap(folder / "segmentation.nii.gz", (2,))
    lits = LITS_VOLUME.match(stem)
    if lits:
        for suffix in (".nii", ".nii.gz"):
            candidate = folder / f"segmentation-{lits.group(1)}{suffix}"
            if candidate.is_file():
                return LabelMap(candidate, (2,))
    case = folder.name  # BraTS: the case folder's own name, then the sequence (2023: with hyphens)
    for mark in ("_", "-"):
        if stem.startswith(case + mark) and any(c.isdigit() for c in case):
            for suffix in (".nii.gz", ".nii"):
                candidate = folder / f"{case}{mark}seg{suffix}"
                if candidate.is_file():
                    return LabelMap(candidate)
    return None
