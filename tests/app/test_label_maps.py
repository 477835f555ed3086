"""The 3D phase's cubes find their lesions in the public layouts' label maps (Decathlon, KiTS,
BraTS), never in an organ's map, and a case's volumes stay one patient."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.cubes import build_cube_dataset
from core.errors import DatasetError

SHAPE = (40, 64, 64)  # z, y, x at 1 mm
LESION = (20, 30, 34)  # z, y, x: a lesion's centre in every label map here


def _write(path: Path, array: np.ndarray) -> None:
    from app.imaging import simpleitk

    sitk = simpleitk()
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(path))


def _volume(path: Path, seed: int) -> None:
    """A body (an ellipsoid of soft tissue with noise) in air."""
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    body = ((z - 20) / 19) ** 2 + ((y - 32) / 30) ** 2 + ((x - 32) / 30) ** 2 <= 1
    rng = np.random.default_rng(seed)
    _write(path, np.where(body, 100 + rng.normal(0, 5, SHAPE), 0).astype(np.float32))


def _label_map(path: Path, organ: int = 0, lesion: int = 1) -> None:
    """An organ (value ``organ``, a large block; 0: none) and a 6 mm lesion (value ``lesion``) at LESION."""
    labels = np.zeros(SHAPE, np.uint8)
    if organ:
        labels[8:32, 10:50, 10:28] = organ
    z, y, x = LESION
    labels[z - 3 : z + 3, y - 3 : y + 3, x - 3 : x + 3] = lesion
    _write(path, labels)


def _decathlon(root: Path, task: str, labels: dict[str, str], cases: int = 4, organ: int = 0,
               lesion: int = 1) -> Path:
    base = root / task
    training = []
    for k in range(cases):
        _volume(base / "imagesTr" / f"case_{k:03d}.nii.gz", k)
        _label_map(base / "labelsTr" / f"case_{k:03d}.nii.gz", organ, lesion)
        training.append({"image": f"./imagesTr/case_{k:03d}.nii.gz", "label": f"./labelsTr/case_{k:03d}.nii.gz"})
    (base / "imagesTr" / "._case_000.nii.gz").write_bytes(b"\0\5\26\7 AppleDouble")  # macOS resource fork
    (base / "dataset.json").write_text(json.dumps({"name": task.split("_")[-1], "labels": labels,
                                                   "modality": {"0": "CT"}, "training": training}))
    return base


def _positives(ws, name: str) -> int:
    return int(json.loads((ws.data_dir / "cubes" / name / "metadata.json").read_text())["positives"])


def test_a_decathlon_task_gives_one_positive_cube_per_lesion(ws, tmp_path: Path) -> None:
    base = _decathlon(tmp_path, "Task06_Lung", {"0": "background", "1": "cancer"})
    build_cube_dataset(ws, base, "lung", "CT", negatives=1)
    assert _positives(ws, "lung") == 4
    assert ws.dataset_metadata("lung")["counts"]["patients"] == 4


def test_only_the_lesion_values_of_a_map_are_lesions(ws, tmp_path: Path) -> None:
    """Liver 1, cancer 2: the liver is no finding, so each map gives one positive, not two."""
    base = _decathlon(tmp_path, "Task03_Liver", {"0": "background", "1": "liver", "2": "cancer"}, organ=1, lesion=2)
    build_cube_dataset(ws, base, "liver", "CT", negatives=1)
    assert _positives(ws, "liver") == 4


def test_an_organ_task_is_refused_with_the_reason(ws, tmp_path: Path) -> None:
    base = _decathlon(tmp_path, "Task09_Spleen", {"0": "background", "1": "spleen"})
    with pytest.raises(DatasetError, match="Spleen task's label maps outline organs, not lesions.*4 volume"):
        build_cube_dataset(ws, base, "spleen", "CT", negatives=1)
    assert not (ws.data_dir / "cubes" / "spleen" / "spleen.npz").exists()


def test_kits_cases_are_patients_of_their_own_and_their_tumour_is_the_finding(ws, tmp_path: Path) -> None:
    """Every KiTS volume is called imaging.nii.gz: before, all cases were one patient."""
    for k in range(4):
        case = tmp_path / "kits19" / "data" / f"case_{k:05d}"
        _volume(case / "imaging.nii.gz", k)
        _label_map(case / "segmentation.nii.gz", organ=1, lesion=2)  # 1 kidney, 2 tumour
    build_cube_dataset(ws, tmp_path / "kits19", "kits", "CT", negatives=1)
    assert _positives(ws, "kits") == 4
    assert ws.dataset_metadata("kits")["counts"]["patients"] == 4


def test_a_brats_case_is_one_patient_whose_sequences_share_its_map(ws, tmp_path: Path) -> None:
    for k in range(3):
        case = tmp_path / "BraTS2021" / f"BraTS2021_{k:05d}"
        for sequence in ("flair", "t1", "t2"):
            _volume(case / f"BraTS2021_{k:05d}_{sequence}.nii.gz", k)
        _label_map(case / f"BraTS2021_{k:05d}_seg.nii.gz", lesion=4)
    build_cube_dataset(ws, tmp_path / "BraTS2021", "brats", "MR", negatives=1)
    assert _positives(ws, "brats") == 9
    assert ws.dataset_metadata("brats")["counts"]["patients"] == 3


def test_the_organizer_labels_a_decathlon_volume_by_its_lesion_values(ws, tmp_path: Path) -> None:
    """Liver maps: tumour present -> tumor, liver alone -> normal; a Spleen task's maps label nothing."""
    from app.organize.organizer import organize, read_rows
    from tests.conftest import placed

    base = _decathlon(tmp_path / "msd", "Task03_Liver", {"0": "background", "1": "liver", "2": "cancer"},
                      organ=1, lesion=2)
    _label_map(base / "labelsTr" / "case_003.nii.gz", organ=1, lesion=1)  # this one's tumour-free: liver only
    _decathlon(tmp_path / "msd", "Task09_Spleen", {"0": "background", "1": "spleen"}, cases=2)
    result = organize(ws, tmp_path / "msd", "msd", workers=1)
    out = ws.organized_path("msd")
    rows = {str(Path(r["path"]).relative_to(tmp_path / "msd")): r
            for r in placed(ws, read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv"))}
    assert len(rows) == 6, "volumes only: label maps and the ._ fork are no items"
    liver = {k: r["label"] for k, r in rows.items() if k.startswith("Task03")}
    assert liver == {f"Task03_Liver/imagesTr/case_00{k}.nii.gz": ("normal" if k == 3 else "tumor") for k in range(4)}
    assert {r["label_rule"] for k, r in rows.items() if k.startswith("Task03")} == {"label_map"}
    assert [r["labeled"] for k, r in rows.items() if k.startswith("Task09")] == [False, False]
    assert "6 segmentation volume(s)" in result.mask_note and "4 volume(s) labeled from them" in result.mask_note
    assert result.skipped == 0, "dataset.json is read (its labels, its name), not a JSON file beside nothing"


def test_a_decathlon_task_renamed_still_names_its_region(ws, tmp_path: Path) -> None:
    """The task's dataset.json names the organ ("Liver"): a copy whose folders say nothing
    (task_a/imagesTr/case_000.nii.gz) is still the abdomen."""
    from app.organize.organizer import organize, read_rows
    from tests.conftest import placed

    base = _decathlon(tmp_path, "task_a", {"0": "background", "1": "liver", "2": "cancer"}, cases=2, organ=1, lesion=2)
    description = json.loads((base / "dataset.json").read_text())
    (base / "dataset.json").write_text(json.dumps({**description, "name": "Liver", "description": "Liver and tumour"}))
    organize(ws, base, "renamed", workers=1)
    out = ws.organized_path("renamed")
    rows = placed(ws, read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv"))
    assert {r["region"] for r in rows} == {"abdomen"}
