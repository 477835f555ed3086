"""A dataset's own class names are kept where the anomaly classes cannot hold them apart,
classes that are folders by their place are found, and grades are listed in their order."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from app.organize.ordinal import grade_order, ordered_classes
from app.organize.organizer import organize, read_rows
from app.state import Kind, read_state
from tests.app.organize.layouts import png
from tests.conftest import placed


def _rows(ws, name: str) -> list[dict]:
    out = ws.organized_path(name)
    return placed(ws, read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv"))


def _labels(ws, name: str) -> dict[str, str]:
    """File name -> class ("" unlabeled)."""
    return {Path(r["path"]).name: r["label"] for r in _rows(ws, name)}


def _class_folders(root: Path, classes: tuple[str, ...], per_class: int = 2) -> None:
    """``per_class`` small images in a folder per class, each image different (no duplicates)."""
    for c, cls in enumerate(classes):
        for k in range(per_class):
            png(root / cls / f"{cls}{k}.png", value=40 + 4 * c + k)


def _config(ws, name: str) -> dict:
    return read_state(ws.organized_path(name) / "training_config.json", Kind.TRAINING_CONFIG)


@pytest.mark.parametrize("codes", [("0", "1"), ("0.0", "1.0")])  # pandas writes a column with a gap as floats
def test_numeric_codes_in_a_table_stay_two_classes(ws, tmp_path: Path, codes: tuple[str, str]) -> None:
    """Before, both codes became "other_anomaly": one class, and no normal one."""
    root = tmp_path / "screening"
    for k in range(8):
        png(root / "images" / f"img{k}.png", value=40 + k)
    (root / "labels.csv").write_text("filename,label\n" + "".join(f"img{k}.png,{codes[k % 2]}\n" for k in range(8)))
    organize(ws, root, "codes", workers=1)
    labels = _labels(ws, "codes")
    assert labels["img0.png"] == "class_0" and labels["img1.png"] == "class_1"
    assert Counter(labels.values()) == {"class_0": 4, "class_1": 4}
    assert _config(ws, "codes")["classes"] == ["class_0", "class_1"]


def test_aptos_grades_are_named_ordered_and_grade_0_is_normal(ws, tmp_path: Path) -> None:
    root = tmp_path / "aptos2019-blindness-detection"
    lines = ["id_code,diagnosis"]
    for k in range(10):
        png(root / "train_images" / f"{k:03x}c2d9a{k}.png", value=40 + k)
        lines.append(f"{k:03x}c2d9a{k},{k % 5}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    organize(ws, root, "aptos", workers=1)
    config = _config(ws, "aptos")
    assert config["classes"] == ["normal", "mild", "moderate", "severe", "proliferative_dr"]
    assert config["ordinal"] is True and config["normal_class"] == "normal"
    assert _labels(ws, "aptos")["004c2d9a4.png"] == "proliferative_dr"


def test_isic_keeps_benign_and_malignant_apart_and_says_so(ws, tmp_path: Path) -> None:
    """Both are tumours to the anomaly classes, and no class is normal: their own names are kept.
    "unknown" in the diagnosis column is not a class; the lesion's patient keeps it in one split."""
    root = tmp_path / "siim-isic-melanoma-classification"
    lines = ["image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target"]
    for k in range(12):
        malignant = k % 3 == 0
        png(root / "jpeg" / "train" / f"ISIC_{2637011 + k}.png", value=30 + k)
        lines.append(f"ISIC_{2637011 + k},IP_{7279968 + k // 2},male,45.0,torso,"
                     f"{'melanoma' if malignant else 'unknown'},{'malignant' if malignant else 'benign'},{int(malignant)}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    result = organize(ws, root, "isic", workers=1)
    rows = _rows(ws, "isic")
    assert Counter(r["label"] for r in rows) == {"benign": 8, "malignant": 4}
    assert result.class_note.startswith("benign, malignant: every class of this dataset means tumor")
    report = json.loads((ws.organized_path("isic") / "scan_report.json").read_text())
    assert report["classes"]["own_class_names"] == ["benign", "malignant"] and report["classes"]["instead_of"] == "tumor"
    assert len({r["patient_id"] for r in rows}) == 6, "two images per patient_id, one patient each"


def test_unknown_and_missing_cells_leave_the_item_unlabeled(ws, tmp_path: Path) -> None:
    root = tmp_path / "table"
    values = ["pneumonia", "normal", "unknown", "N/A", "NaN", "?", "pneumonia", "normal"]
    for k in range(len(values)):
        png(root / "images" / f"scan{k}.png", value=50 + k)
    (root / "labels.csv").write_text("filename,label\n" + "".join(f"scan{k}.png,{v}\n" for k, v in enumerate(values)))
    organize(ws, root, "cells", workers=1)
    labels = _labels(ws, "cells")
    assert [labels[f"scan{k}.png"] for k in range(8)] == ["infection", "normal", "", "", "", "", "infection", "normal"]


def test_ham10000_codes_are_classes_and_a_lesion_stays_in_one_split(ws, tmp_path: Path) -> None:
    root = tmp_path / "skin-cancer-mnist-ham10000"
    codes = ["nv", "mel", "bkl", "bcc", "nv", "mel", "bkl", "bcc"] * 3
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for k, dx in enumerate(codes):
        png(root / "HAM10000_images_part_1" / f"ISIC_{24306 + k:07d}.png", value=20 + k)
        lines.append(f"HAM_{k // 3:07d},ISIC_{24306 + k:07d},{dx},histo,45.0,male,back")
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    organize(ws, root, "ham", workers=1)
    rows = [r for r in _rows(ws, "ham") if r["labeled"] == "True" or r["labeled"] is True]
    assert Counter(r["label"] for r in rows) == {"nv": 6, "mel": 6, "bkl": 6, "bcc": 6}
    lesion_of = {f"ISIC_{24306 + k:07d}.png": k // 3 for k in range(len(codes))}
    splits = {}
    for r in rows:
        splits.setdefault(lesion_of[Path(r["path"]).name], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values()), "one lesion's images in two splits"


def test_class_folders_beside_a_known_one_are_classes(ws, tmp_path: Path) -> None:
    """OCT2017: CNV/, DME/ and DRUSEN/ beside NORMAL/. Folders that sort files by something else
    (images/, unsorted/) or hold a number (a patient) are never classes."""
    root = tmp_path / "OCT2017"
    for s, split in enumerate(("train", "test")):
        for c, cls in enumerate(("CNV", "DME", "DRUSEN", "NORMAL")):
            for k in range(2):
                png(root / split / cls / f"{cls}-{1016042 + k}-{k + 1}.png", value=60 + 20 * s + 4 * c + k)
    png(root / "train" / "unsorted" / "scan-1.png")
    png(root / "train" / "patient042" / "scan-2.png")
    organize(ws, root, "oct", workers=1)
    assert Counter(r["label"] for r in _rows(ws, "oct")) == {"cnv": 4, "dme": 4, "drusen": 4, "normal": 4, "": 2}
    labels = _labels(ws, "oct")
    assert labels["scan-1.png"] == labels["scan-2.png"] == ""
    rule = {r["label"]: r["label_rule"] for r in _rows(ws, "oct")}
    assert rule["cnv"] == "class_folder_beside_known" and rule["normal"] == "class_folder"
    # CNV-<patient>-<B-scan>: one patient's scans, in every class and split folder, are one patient
    patients = {r["patient_id"] for r in _rows(ws, "oct") if "-1016042-" in Path(r["path"]).name}
    assert len(patients) == 1


def test_a_folder_of_unknown_names_alone_labels_nothing(ws, tmp_path: Path) -> None:
    root = tmp_path / "Kvasir"
    for cls in ("polyps", "esophagitis"):
        png(root / cls / "a.png")
        png(root / cls / "b.png", value=120)
    organize(ws, root, "kvasir", workers=1)
    assert set(_labels(ws, "kvasir").values()) == {""}, "no known class beside them: unlabeled, not guessed"


def test_alzheimer_severities_are_grades_in_their_order(ws, tmp_path: Path) -> None:
    root = tmp_path / "Alzheimer_s Dataset" / "train"
    for cls in ("NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"):
        for k in range(3):
            png(root / cls / f"{cls[:3]}{k + 26}.png", value=40 + k)
    organize(ws, root.parent, "alz", workers=1)
    config = _config(ws, "alz")
    assert config["classes"] == ["normal", "very_mild_demented", "mild_demented", "moderate_demented"]
    assert config["ordinal"] is True
    from app.organize.dataset_tools import dataset_statistics

    assert list(dataset_statistics(ws, "alz")["by_class_and_split"]) == config["classes"], "the plot in grade order"


def test_tuberculosis_sets_label_from_their_file_names(ws, tmp_path: Path) -> None:
    root = tmp_path / "ChinaSet_AllFiles"
    for k in range(6):
        png(root / "CXR_png" / f"CHNCXR_{k + 1:04d}_{k % 2}.png", value=40 + k)
    png(root / "CXR_png" / "CHNCXR_0007_2.png")  # not the pattern: a third digit is no reading
    organize(ws, root, "shenzhen", workers=1)
    labels = _labels(ws, "shenzhen")
    assert labels["CHNCXR_0001_0.png"] == "normal" and labels["CHNCXR_0002_1.png"] == "infection"
    assert labels["CHNCXR_0007_2.png"] == ""


def test_tumour_types_without_a_normal_class_keep_their_names(ws, tmp_path: Path) -> None:
    root = tmp_path / "brain-tumors"
    for cls in ("glioma", "meningioma", "pituitary"):
        for k in range(2):
            png(root / cls / f"{cls}{k}.png", value=40 + k)
    organize(ws, root, "types", workers=1)
    assert _config(ws, "types")["classes"] == ["glioma", "meningioma", "pituitary"]
    png(root / "notumor" / "n0.png")
    png(root / "notumor" / "n1.png", value=99)
    organize(ws, root, "types", workers=1, replace=True)
    assert _config(ws, "types")["classes"] == ["normal", "tumor"], "with a normal class: the anomaly classes"


@pytest.mark.parametrize("classes, expected", [
    (["severe", "mild", "proliferative", "moderate"], ["mild", "moderate", "severe", "proliferative"]),
    (["normal", "stage_iv", "stage_ii", "stage_i", "stage_iii"], ["normal", "stage_i", "stage_ii", "stage_iii", "stage_iv"]),
    (["kl10", "kl2", "kl0", "kl1"], ["kl0", "kl1", "kl2", "kl10"]),
    (["mild_dr", "normal", "severe_dr", "moderate_dr"], ["normal", "mild_dr", "moderate_dr", "severe_dr"]),
])
def test_grades_are_listed_least_first(classes: list[str], expected: list[str]) -> None:
    assert ordered_classes(classes) and grade_order(classes) == expected


def test_known_classes_beside_unknown_ones_keep_their_own_names_too(ws, tmp_path: Path) -> None:
    """Pneumonia and Covid would both be "infection" beside a "lung_cancer" of its own."""
    root = tmp_path / "chest-xray-4-classes"
    _class_folders(root, ("Normal", "Pneumonia", "Covid", "Lung_Cancer"))
    organize(ws, root, "four", workers=1)
    assert _config(ws, "four")["classes"] == ["normal", "covid", "lung_cancer", "pneumonia"]
    assert _config(ws, "four")["normal_class"] == "normal"


def test_a_folder_named_after_a_patient_is_never_a_class(ws, tmp_path: Path) -> None:
    """A class name is written into every state file and bundle: a folder beside Normal/ that
    names a patient the scans met (here in a DICOM's PatientName) labels nothing, and a folder
    of DICOM files (a hospital export names folders after patients) is never a class by place."""
    from tests.app.organize.layouts import dicom

    root = tmp_path / "export"
    for k in range(2):
        png(root / "Normal" / f"n{k}.png", value=40 + k)
        png(root / "Mueller_Hans" / f"m{k}.png", value=60 + k)
        dicom(root / "Doe_Jane" / f"slice{k}.dcm", modality="CR", patient="P77")
    dicom(root / "Mueller_Hans" / "scout.dcm", modality="CR", patient="P78")
    import pydicom

    scout = pydicom.dcmread(root / "Mueller_Hans" / "scout.dcm")
    scout.PatientName = "MUELLER^HANS"
    scout.save_as(root / "Mueller_Hans" / "scout.dcm")
    organize(ws, root, "export", workers=1)
    config = _config(ws, "export")
    assert config["classes"] == ["normal"]
    written = "".join(p.read_text(errors="replace") for p in ws.organized_path("export").rglob("*") if p.is_file())
    assert "mueller" not in written.lower() and "doe_jane" not in written.lower()


def test_the_older_brain_tumour_set_names_the_same_classes_as_the_newer(ws, tmp_path: Path) -> None:
    """glioma_tumor/, meningioma_tumor/, pituitary_tumor/, no_tumor/ (Kaggle's "Brain Tumor
    Classification (MRI)"): tumor and normal, as glioma/ ... notumor/ are."""
    root = tmp_path / "brain-tumor-classification-mri" / "Training"
    for c, cls in enumerate(("glioma_tumor", "meningioma_tumor", "pituitary_tumor", "no_tumor")):
        for k in range(2):
            png(root / cls / f"image({k + 1}).png", value=40 + 4 * c + k)
    organize(ws, root.parent, "older", workers=1)
    rows = _rows(ws, "older")
    assert Counter(r["label"] for r in rows) == {"tumor": 6, "normal": 2}
    assert {r["region"] for r in rows} == {"brain"}


def test_a_table_that_disagrees_with_a_class_folder_found_by_place_is_a_conflict(ws, tmp_path: Path) -> None:
    root = tmp_path / "OCT2017"
    for c, cls in enumerate(("CNV", "NORMAL")):
        for k in range(2):
            png(root / "train" / cls / f"{cls}-{k}.png", value=40 + 4 * c + k)
    (tmp_path / "OCT2017" / "labels.csv").write_text("path,label\ntrain/CNV/CNV-0.png,NORMAL\n")
    result = organize(ws, root, "oct", workers=1)
    labels = _labels(ws, "oct")
    assert result.conflicts == 1 and labels["CNV-0.png"] == "" and labels["CNV-1.png"] == "cnv"


def test_montgomery_lung_masks_are_no_images(ws, tmp_path: Path) -> None:
    """ManualMask/leftMask/ and rightMask/ hold the lungs' outlines under the radiographs' own
    names: read as images they were radiographs labeled from their names."""
    root = tmp_path / "MontgomerySet"
    for k in range(4):
        name = f"MCUCXR_{k + 1:04d}_{k % 2}.png"
        png(root / "CXR_png" / name, value=40 + k)
        png(root / "ManualMask" / "leftMask" / name, mask_on=True)
        png(root / "ManualMask" / "rightMask" / name, mask_on=True)
    result = organize(ws, root, "montgomery", workers=1)
    assert result.items == 4
    assert {Path(r["path"]).parent.name for r in _rows(ws, "montgomery")} == {"CXR_png"}


def test_a_correction_in_a_dataset_of_own_names_takes_its_own_name(ws, tmp_path: Path) -> None:
    """ISIC keeps benign and malignant; "benign" set in the review was the anomaly class
    tumor, a third class beside them."""
    from app.organize.review import add_correction, review_groups

    root = tmp_path / "siim-isic-melanoma-classification"
    lines = ["image_name,patient_id,benign_malignant"]
    for k in range(8):
        png(root / "jpeg" / "train" / f"ISIC_{2637011 + k}.png", value=30 + k)
        lines.append(f"ISIC_{2637011 + k},IP_{k},{'malignant' if k % 2 else 'benign'}")
    png(root / "jpeg" / "extra" / "ISIC_9999999.png", value=99)
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    organize(ws, root, "isic", workers=1)
    folder = next(g.folder for g in review_groups(ws, "isic") if g.folder.endswith("/extra"))
    add_correction(ws, "isic", folder, "label", "benign")
    organize(ws, root, "isic", workers=1)
    assert _config(ws, "isic")["classes"] == ["benign", "malignant"]
    assert _labels(ws, "isic")["ISIC_9999999.png"] == "benign"


def test_a_correction_beside_class_folders_found_by_place_keeps_its_own_name(ws, tmp_path: Path) -> None:
    from app.organize.review import add_correction, review_groups

    root = tmp_path / "chest-xray-4-classes"
    _class_folders(root, ("Normal", "Pneumonia", "Lung_Cancer", "unsorted"))
    organize(ws, root, "four", workers=1)
    folder = next(g.folder for g in review_groups(ws, "four") if g.folder.endswith("/unsorted"))
    add_correction(ws, "four", folder, "label", "Pneumonia")
    organize(ws, root, "four", workers=1)
    assert _config(ws, "four")["classes"] == ["normal", "lung_cancer", "pneumonia"], "not 'infection' beside them"


def test_the_workflow_on_classes_without_normal_trains_the_classifier_alone(ws, tmp_path: Path, monkeypatch) -> None:
    """Benign and malignant, no normal: the VAE (it learns normal images) and the hybrid are
    skipped with the reason, not failed; the classifier is trained, evaluated and exported."""
    import numpy as np

    from app import workflow
    from app.workflow import WorkflowOptions, run_workflow

    rng = np.random.default_rng(0)
    root = tmp_path / "siim-isic-melanoma-classification"
    lines = ["image_name,patient_id,benign_malignant"]
    for k in range(40):
        malignant = k % 2
        from PIL import Image

        (root / "jpeg" / "train").mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((32, 32)) * 60 + 40 + 100 * malignant).astype(np.uint8)
        Image.fromarray(pixels).save(root / "jpeg" / "train" / f"ISIC_{2637011 + k}.png")
        lines.append(f"ISIC_{2637011 + k},IP_{k},{'malignant' if malignant else 'benign'}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setitem(workflow.FAST, "supervised", {"image_size": 32, "epochs": 2, "batch_size": 16,
                                                      "backbone": "resnet10t"})
    monkeypatch.setitem(workflow.FAST, "vae", {"image_size": 32, "epochs": 1, "batch_size": 16})
    state = run_workflow(ws, WorkflowOptions(dataset="skin", source=str(root), fast=True))
    steps = state["steps"]
    assert all(record["status"] == "done" for record in steps.values()) and "finished" in state
    assert "no 'normal' class (its classes: benign, malignant)" in steps["vae"]["skipped"]
    assert "no 'normal' class" in steps["hybrid"]["skipped"]
    assert list(steps["evaluate"]["metrics"]) == [steps["supervised"]["run"]] and len(steps["export"]["exports"]) == 1
