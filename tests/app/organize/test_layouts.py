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
    "mura": (12, "XR", "bone", {"negative": "normal", "positive": "other_anomaly"}, 5),
    "ct_kidney": (8, "CT", "abdomen", {"Cyst": "other_anomaly", "Normal": "normal", "Stone": "other_anomaly",
                                       "Tumor": "tumor"}, None),
    "rsna_ich": (3, "CT", "brain", {"subdural": "hemorrhage", "normal": "normal",
                                    "epidural|subarachnoid": "hemorrhage"}, 3),
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


def _by_name(ws, name: str) -> dict[str, dict]:
    rows = read_rows(ws.organized_path(name) / "labeled.csv") + read_rows(ws.organized_path(name) / "unlabeled.csv")
    return {"/".join(Path(r["path"]).parts[-3:]): r for r in placed(ws, rows)}


def test_lgg_pointed_at_its_own_folder_is_still_brain_mr(ws, tmp_path: Path) -> None:
    LAYOUTS["lgg_mri_segmentation"](tmp_path / "d")
    result = organize(ws, tmp_path / "d" / "lgg-mri-segmentation" / "kaggle_3m", "lgg", workers=1)
    rows = _by_name(ws, "lgg").values()
    assert result.items == 6 and result.unlabeled == 0
    assert {(r["modality"], r["region"]) for r in rows} == {("MR", "brain")}


def test_rsna_hemorrhage_subtypes_label_the_series_that_holds_them(ws, tmp_path: Path) -> None:
    LAYOUTS["rsna_ich"](tmp_path / "d")
    organize(ws, tmp_path / "d", "ich", workers=1)
    rows = sorted(_by_name(ws, "ich").values(), key=lambda r: r["source_label"])
    assert [(r["n_files"], r["source_label"], r["findings"]) for r in rows] == [
        (3, "epidural|subarachnoid", "hemorrhage"), (3, "normal", ""), (3, "subdural", "")]


def test_nih_multi_label_rows_keep_every_finding(ws, tmp_path: Path) -> None:
    LAYOUTS["nih_chestxray14"](tmp_path / "d")
    organize(ws, tmp_path / "d", "nih", workers=1)
    rows = {Path(r["path"]).name: r for r in _by_name(ws, "nih").values()}
    assert rows["00000001_001.png"]["source_label"] == "Cardiomegaly|Effusion"
    assert rows["00000003_000.png"]["findings"] == "other_anomaly|pneumothorax"
    assert rows["00000003_000.png"]["label"] == "pneumothorax"  # the telling finding is the class


def _same_names_in_every_class_folder(root: Path) -> None:
    """A fracture set with image1.png.. in each class folder, and a label table elsewhere
    that names files by bare name (as many Kaggle sets do)."""
    from tests.app.organize.layouts import png

    for k, folder in enumerate(("fractured", "not fractured")):
        for i in range(1, 4):
            png(root / "bones" / folder / f"image{i}.png", value=40 + 10 * k + i)
    (root / "extra").mkdir()
    png(root / "extra" / "scan7.png", value=99)
    (root / "extra" / "labels.csv").write_text("image,label\nimage1.png,fractured\nimage2.png,fractured\n"
                                               "image3.png,fractured\nscan7.png,fractured\n")


def test_a_table_naming_files_by_a_name_several_folders_share_labels_nothing_there(ws, tmp_path: Path) -> None:
    _same_names_in_every_class_folder(tmp_path / "d")
    result = organize(ws, tmp_path / "d", "bones", workers=1)
    rows = _by_name(ws, "bones")
    assert {k: r["source_label"] for k, r in rows.items()} == {
        **{f"bones/fractured/image{i}.png": "fractured" for i in range(1, 4)},
        **{f"bones/not fractured/image{i}.png": "not fractured" for i in range(1, 4)},
        "d/extra/scan7.png": "fractured",  # a name unique in the tree: the table is trusted there
    }
    assert result.conflicts == 0
    assert result.table_notes == ("extra/labels.csv (generic_csv): 1 row(s) applied; 3 name a file that several "
                                  "folders hold and were not applied (give the table a column of paths)",)
    report = __import__("json").loads((ws.organized_path("bones") / "scan_report.json").read_text())
    assert report["label_tables"][0]["rows_naming_several_files"] == 3


def test_a_table_that_disagrees_with_the_class_folder_leaves_the_item_unlabeled_and_says_so(ws, tmp_path: Path) -> None:
    _same_names_in_every_class_folder(tmp_path / "d")
    (tmp_path / "d" / "extra" / "labels.csv").write_text(
        "path,label\nbones/fractured/image1.png,fractured\nbones/not fractured/image1.png,fractured\n"
        "bones/not fractured/image2.png,not fractured\n")
    result = organize(ws, tmp_path / "d", "bones", workers=1)
    rows = _by_name(ws, "bones")
    wrong = rows["bones/not fractured/image1.png"]
    assert (wrong["labeled"], wrong["label"], wrong["label_rule"]) == (False, "", "conflict")
    assert rows["bones/fractured/image1.png"]["label_rule"] == "label_table"  # both say fractured
    assert rows["bones/not fractured/image2.png"]["source_label"] == "not fractured"
    assert result.conflicts == 1
    report = __import__("json").loads((ws.organized_path("bones") / "scan_report.json").read_text())
    assert report["label_conflicts"] == [{"item": wrong["item"], "answers": {
        "label_table": "fractured", "class_folder": "not fractured"}}]


def test_a_table_with_paths_finds_its_files_when_the_top_folder_was_renamed(ws, tmp_path: Path) -> None:
    LAYOUTS["ct_kidney"](tmp_path / "d")
    (tmp_path / "d" / "CT-KIDNEY-DATASET-Normal-Cyst-Tumor-Stone").rename(tmp_path / "d" / "kidney")
    result = organize(ws, tmp_path / "d", "kidney", workers=1)
    assert result.labeled == 8 and result.conflicts == 0
    assert {r["label_rule"] for r in _by_name(ws, "kidney").values()} == {"label_table"}


def test_lung_outlines_beside_unlabeled_radiographs_label_nothing(ws, tmp_path: Path) -> None:
    """images/ and masks/ with no class folder (a lung segmentation set): every mask set and
    large, so they outline organs; calling every film 'tumor' would be a silent mislabel."""
    import numpy as np
    from PIL import Image

    for k in range(4):
        (tmp_path / "d" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32), 60 + k, np.uint8)).save(tmp_path / "d" / "images" / f"CXR_{k}.png")
        lungs = np.zeros((32, 32), np.uint8)
        lungs[4:28, 3:14] = lungs[4:28, 18:29] = 255
        Image.fromarray(lungs).save(tmp_path / "d" / "masks" / f"CXR_{k}.png")
    result = organize(ws, tmp_path / "d", "lungs", workers=1)
    assert (result.items, result.labeled) == (4, 0)
    assert "organ outlines" in result.mask_note
    report = __import__("json").loads((ws.organized_path("lungs") / "scan_report.json").read_text())
    assert "organ outlines" in report["masks"]


def test_mura_lists_are_skipped_with_what_they_are(ws, tmp_path: Path) -> None:
    LAYOUTS["mura"](tmp_path / "d")
    result = organize(ws, tmp_path / "d", "mura", workers=1)
    assert result.skip_reasons == {
        "a list of studies and labels; the same labels are read from the study folders' names": 2,
        "a list of image paths without labels": 2}


@pytest.mark.parametrize("layout", ["chest_xray_pneumonia", "rsna_ich", "mura"])
def test_every_progress_task_of_an_organize_ends_at_its_total(ws, tmp_path: Path, layout: str) -> None:
    """A task left short of its total stays on screen as an unfinished row for the rest of the session."""
    LAYOUTS[layout](tmp_path / "d")
    seen: dict[str, tuple[int, int | None]] = {}
    organize(ws, tmp_path / "d", "x", workers=1, progress=lambda task, done, total, **_: seen.update({task: (done, total)}))
    assert seen and all(done == total for done, total in seen.values()), seen


def test_chexpert_keeps_its_findings_and_leaves_uncertain_rows_unlabeled(ws, tmp_path: Path) -> None:
    """One column per finding: 1.0 present, -1.0 uncertain (not kept as present), blank unmentioned."""
    from tests.app.organize.layouts import png

    root = tmp_path / "CheXpert-v1.0-small"
    columns = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
               "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
               "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]
    cases = {1: {"No Finding": "1.0", "Support Devices": "1.0"}, 2: {"Edema": "1.0", "Pleural Effusion": "1.0"},
             3: {"Cardiomegaly": "-1.0"}, 4: {"Pneumothorax": "1.0", "Edema": "-1.0"}, 5: {"Support Devices": "1.0"}}
    lines = [",".join(columns)]
    for p, values in cases.items():
        path = f"CheXpert-v1.0-small/train/patient{p:05d}/study1/view1_frontal.png"
        png(tmp_path / path, value=30 + p)
        lines.append(",".join([path, "Female", "68", "Frontal", "AP"] + [values.get(c, "") for c in columns[5:]]))
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    organize(ws, root, "chexpert", workers=1)
    out = ws.organized_path("chexpert")
    rows = {Path(r["path"]).parts[-3]: r for r in placed(ws, read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv"))}
    assert rows["patient00001"]["label"] == "normal"
    assert rows["patient00002"]["source_label"] == "Edema|Pleural Effusion"
    assert rows["patient00002"]["findings"] == "edema|other_anomaly"
    assert rows["patient00004"]["source_label"] == "Pneumothorax", "the uncertain edema is not kept as present"
    assert not rows["patient00003"]["label"] and not rows["patient00005"]["label"], "nothing sure: unlabeled"
    assert {r["modality"] for r in rows.values()} == {"XR"} and len({r["patient_id"] for r in rows.values()}) == 5


def test_vindr_rows_of_several_radiologists_make_one_label_per_image(ws, tmp_path: Path) -> None:
    from tests.app.organize.layouts import png

    root = tmp_path / "vinbigdata-chest-xray"
    rows = [("a1b2", "No finding", "R1"), ("a1b2", "No finding", "R2"), ("c3d4", "Aortic enlargement", "R1"),
            ("c3d4", "No finding", "R3"), ("e5f6", "Cardiomegaly", "R2"), ("e5f6", "Pleural effusion", "R2")]
    for k, image in enumerate(("a1b2", "c3d4", "e5f6")):
        png(root / "train" / f"{image}.png", value=50 + k)
    (root / "train.csv").write_text("image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n" + "".join(
        f"{i},{c},0,{r},,,,\n" for i, c, r in rows))
    organize(ws, root, "vindr", workers=1)
    labels = {Path(r["path"]).stem: (r["label"], r["source_label"])
              for r in placed(ws, read_rows(ws.organized_path("vindr") / "labeled.csv"))}
    assert labels["a1b2"] == ("normal", "No finding")
    assert labels["c3d4"] == ("aortic_enlargement", "Aortic enlargement"), "a finding wins over another's No finding"
    assert labels["e5f6"][1] == "Cardiomegaly|Pleural effusion"


def test_a_folder_that_holds_the_label_table_is_no_class(ws, tmp_path: Path) -> None:
    """The user's folder is named after the study ("pneumonia"), its images are a mix and a
    table says which is which. Read as a class folder, its name made every normal of the
    table a conflict (unlabeled) and an image the table leaves out "infection"."""
    from tests.app.organize.layouts import png

    base = tmp_path / "pneumonia"
    for k in range(6):
        png(base / "images" / f"scan{k}.png", value=40 + k)
    (base / "labels.csv").write_text("filename,label\n" + "".join(
        f"scan{k}.png,{'pneumonia' if k % 2 else 'normal'}\n" for k in range(5)))
    result = organize(ws, base, "study", workers=1)
    out = ws.organized_path("study")
    labels = {Path(r["path"]).name: r["label"] for r in placed(ws, read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv"))}
    assert result.conflicts == 0
    assert labels == {"scan0.png": "normal", "scan1.png": "infection", "scan2.png": "normal", "scan3.png": "infection",
                      "scan4.png": "normal", "scan5.png": ""}


@pytest.mark.parametrize("name, mark", [("labels.csv", ";"), ("labels.tsv", "\t"), ("labels.csv", ",")])
def test_a_label_table_saved_with_semicolons_or_tabs_is_read(ws, tmp_path: Path, name: str, mark: str) -> None:
    """A spreadsheet saved where the comma is the decimal mark writes semicolons; before, such a
    table was 'not a label table' and everything stayed unlabeled."""
    from tests.app.organize.layouts import png

    root = tmp_path / "study"
    for k in range(4):
        png(root / "images" / f"scan{k}.png", value=40 + k)
    rows = [["filename", "label", "score"]] + [[f"scan{k}.png", "pneumonia" if k % 2 else "normal", "0,5"]
                                                for k in range(4)]
    (root / name).write_text("".join(mark.join(r) + "\n" for r in rows) if mark != "," else
                             "filename,label\n" + "".join(f"scan{k}.png,{'pneumonia' if k % 2 else 'normal'}\n"
                                                          for k in range(4)))
    result = organize(ws, root, "study", workers=1)
    assert (result.labeled, result.classes) == (4, {"normal": 2, "infection": 2})


def test_a_table_saved_by_excel_in_windows_1252_keeps_its_accents(ws, tmp_path: Path) -> None:
    from tests.app.organize.layouts import png

    root = tmp_path / "studie"
    for k in range(4):
        png(root / "bilder" / f"bild{k}.png", value=40 + k)
    text = "Dateiname;Klasse\n" + "".join(f"bild{k}.png;{'Läsion' if k % 2 else 'normal'}\n" for k in range(4))
    (root / "befunde.csv").write_bytes(text.encode("cp1252"))
    organize(ws, root, "studie", workers=1)
    rows = placed(ws, read_rows(ws.organized_path("studie") / "labeled.csv"))
    assert {r["source_label"]: r["label"] for r in rows} == {"Läsion": "lasion", "normal": "normal"}


def test_a_report_column_is_no_label_column(ws, tmp_path: Path) -> None:
    """A table whose "diagnosis" is the report's free text would make a class of every report."""
    from tests.app.organize.layouts import png

    root = tmp_path / "reports"
    lines = ["filename,diagnosis"]
    for k in range(120):
        png(root / "images" / f"img{k}.png", value=k + 10)
        lines.append(f"img{k}.png,Opacity in the {'left' if k % 2 else 'right'} lower zone measuring {k} mm")
    (root / "reports.csv").write_text("\n".join(lines) + "\n")
    result = organize(ws, root, "reports", workers=1)
    assert result.labeled == 0
    reasons = [s["reason"] for s in __import__("json").loads(
        (ws.organized_path("reports") / "scan_report.json").read_text())["skipped"]]
    assert any(r.startswith("its label column holds 120 different values in 120 rows") for r in reasons)


def test_chaos_ground_truth_pngs_are_masks_not_images(ws, tmp_path: Path) -> None:
    """CHAOS keeps each CT series' liver outlines as PNGs in Ground/ beside DICOM_anon/."""
    from tests.app.organize.layouts import dicom, png

    case = tmp_path / "CHAOS_Train_Sets" / "Train_Sets" / "CT" / "1"
    for k in range(3):
        dicom(case / "DICOM_anon" / f"i{k:04d},0000b.dcm", modality="CT", patient="1", series="1.2.3.4.1",
              position=float(k))
        png(case / "Ground" / f"liver_GT_{k:03d}.png", mask_on=True)
    result = organize(ws, tmp_path / "CHAOS_Train_Sets", "chaos", workers=1)
    assert result.items == 1 and result.skipped == 0


def test_padchest_lists_of_findings_and_mimic_subject_folders(ws, tmp_path: Path) -> None:
    from tests.app.organize.layouts import png

    root = tmp_path / "PadChest"
    rows = [("216840111366964012283393834152009033102258826_y2z4ua.png", "P1", "['normal']"),
            ("216840111366964012373310883942009170084120009_eeyd5t.png", "P2", "['pleural effusion', 'cardiomegaly']"),
            ("216840111366964012558082906712009300162151055_hpw4vo.png", "P2", "['COPD signs']"),
            ("216840111366964013076187734852011291090445391_ttqhrp.png", "P3", "[]")]
    for k, (image, _, _) in enumerate(rows):
        png(root / str(k) / image, value=40 + k)
    (root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv").write_text(
        "ImageID,ImageDir,StudyID,PatientID,Projection,Labels\n" + "".join(
            f'{i},{k},S{k},{p},PA,"{labels}"\n' for k, (i, p, labels) in enumerate(rows)))
    mimic = tmp_path / "PadChest" / "mimic" / "files" / "p10"
    for study, image in (("s50414267", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"),
                         ("s53189527", "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab")):
        png(mimic / "p10000032" / study / f"{image}.png", value=90 if study.endswith("7") else 95)
    organize(ws, root, "padchest", workers=1)
    out = ws.organized_path("padchest")
    found = {Path(r["path"]).name: r for r in placed(ws, read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv"))}
    assert found[rows[0][0]]["label"] == "normal"
    assert found[rows[1][0]]["source_label"] == "cardiomegaly|pleural effusion"
    assert found[rows[2][0]]["label"] == "copd_signs"
    assert not found[rows[3][0]]["labeled"] or found[rows[3][0]]["labeled"] == "False"
    assert found[rows[1][0]]["patient_id"] == found[rows[2][0]]["patient_id"], "P2's two images: one patient"
    assert (found["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.png"]["patient_id"]
            == found["2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab.png"]["patient_id"]), "MIMIC's subject folder"
