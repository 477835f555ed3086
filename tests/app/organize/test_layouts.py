"""Each widely used public layout is recognized out of the box."""

from collections import Counter
from pathlib import Path

import pytest

from app.organize.organizer import organize, read_rows
from tests.conftest import placed
from tests.app.organize.layouts import LAYOUTS

# layout -> (items, modality, region, {source label: anomaly class}, patients or None)
EXPECTED = {
    "chest_xray_pneumonia": (24, "XR", "chest", {"NORMAL": "normal", "PNEUMONIA": "infection"}, 9),
    "covid19_radiography": (12, "XR", "chest", {"COVID": "infection", "Lung_Opacity": "consolidation",
                                                "Normal": "normal", "Viral Pneumonia": "infection"}, None),
    "lgg_mri_segmentation": (6, "MR", "brain", {"mask_positive": "tumor", "mask_empty": "normal"}, 2),
    "brain_tumor_mri": (16, "MR", "brain", {"glioma": "tumor", "meningioma": "tumor", "notumor": "normal",
                                            "pituitary": "tumor"}, None),
    "busi": (6, "US", "breast", {"benign": "tumor", "malignant": "tumor", "normal": "normal"}, None),
    "bone_fracture": (8, "XR", "bone", {"fractured": "fracture", "not fractured": "normal"}, None),
    "nih_chestxray14": (6, "XR", "chest", {"Cardiomegaly": "other_anomaly", "Cardiomegaly|Effusion": "other_anomaly",
                                           "normal": "normal", "Hernia|Pneumothorax": "pneumothorax",
                                           "Infiltration": "consolidation"}, 5),
    "rsna_pneumonia": (4, "XR", "chest", {"abnormal": "other_anomaly", "normal": "normal",
                                          "Lung Opacity": "consolidation"}, 4),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_public_layout_is_recognized(ws, tmp_path: Path, layout: str) -> None:
    LAYOUTS[layout](tmp_path / "download")
    result = organize(ws, tmp_path / "download", layout, workers=1)
    items, modality, region, labels, patients = EXPECTED[layout]
    rows = placed(ws, read_rows(ws.organized_path(layout) / "labeled.csv"))
    assert result.items == items and result.unlabeled == 0 and len(rows) == items
    assert Counter(r["modality"] for r in rows) == {modality: items}, Counter(r["modality"] for r in rows)
    assert Counter(r["region"] for r in rows) == {region: items}, Counter(r["region"] for r in rows)
    assert {r["source_label"]: r["label"] for r in rows} == labels
    if patients is not None:
        assert len({r["patient_id"] for r in rows}) == patients
    assert not any("mask" in Path(r["path"]).name.lower() or "/masks/" in r["path"] for r in rows)


def test_lgg_masks_label_each_slice(ws, tmp_path: Path) -> None:
    LAYOUTS["lgg_mri_segmentation"](tmp_path / "d")
    organize(ws, tmp_path / "d", "lgg", workers=1)
    rows = {Path(r["path"]).name: r for r in placed(ws, read_rows(ws.organized_path("lgg") / "labeled.csv"))}
    assert rows["TCGA_CS_4941_19960909_2.tif"]["label"] == "tumor"
    assert rows["TCGA_CS_4941_19960909_1.tif"]["label"] == "normal"
    assert rows["TCGA_CS_4941_19960909_2.tif"]["label_rule"] == "lesion_mask"


def test_rsna_uses_its_table_and_keeps_patients_apart(ws, tmp_path: Path) -> None:
    LAYOUTS["rsna_pneumonia"](tmp_path / "d")
    organize(ws, tmp_path / "d", "rsna", workers=1)
    rows = read_rows(ws.organized_path("rsna") / "labeled.csv")
    assert {r["label_rule"] for r in rows} == {"label_table"}
    text = "".join(p.read_text() for p in ws.organized_path("rsna").rglob("*.csv"))
    assert "0004cfab" not in text.replace("data/", "").split("stage_2_train_images")[0], "patient ids pseudonymized"
