"""Small trees with the names and layouts of widely used public datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def png(path: Path, value: int = 90, size: int = 16, mask_on: bool | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size), value, np.uint8)
    if mask_on is not None:
        pixels[:] = 0
        if mask_on:
            pixels[4:8, 4:8] = 255
    Image.fromarray(pixels).save(path)


def dicom(path: Path, *, modality: str, patient: str, body_part: str = "", study: str = "",
          series: str = "", position: float | None = None) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = modality, patient, "TEST^PATIENT"
    ds.SeriesInstanceUID, ds.StudyInstanceUID = series or generate_uid(), generate_uid()
    if position is not None:
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, position], [1, 0, 0, 0, 1, 0]
    if body_part:
        ds.BodyPartExamined = body_part
    if study:
        ds.StudyDescription = study
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.full((16, 16), 500, np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def chest_xray_pneumonia(root: Path) -> None:
    base = root / "chest_xray"
    for split in ("train", "test"):
        for k in range(3):
            png(base / split / "NORMAL" / f"IM-{k + 10:04d}-0001.jpeg".replace(".jpeg", ".png"))
            png(base / split / "NORMAL" / f"NORMAL2-IM-{k + 20:04d}-0001.png")
            png(base / split / "PNEUMONIA" / f"person{k + 1}_bacteria_{k + 5}.png")
            png(base / split / "PNEUMONIA" / f"person{k + 1}_virus_{k + 9}.png")


def covid19_radiography(root: Path) -> None:
    base = root / "COVID-19_Radiography_Dataset"
    for folder in ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"):
        for k in range(1, 4):
            png(base / folder / "images" / f"{folder}-{k}.png")
            png(base / folder / "masks" / f"{folder}-{k}.png", mask_on=True)  # lung masks, not lesions


def lgg_mri_segmentation(root: Path) -> None:
    base = root / "lgg-mri-segmentation" / "kaggle_3m"
    for case, positive in (("TCGA_CS_4941_19960909", True), ("TCGA_DU_6404_19850629", False)):
        for k in range(1, 4):
            png(base / case / f"{case}_{k}.tif")
            png(base / case / f"{case}_{k}_mask.tif", mask_on=positive and k == 2)


def brain_tumor_mri(root: Path) -> None:
    for split, prefix in (("Training", "Tr"), ("Testing", "Te")):
        for folder, short in (("glioma", "gl"), ("meningioma", "me"), ("notumor", "no"), ("pituitary", "pi")):
            for k in range(2):
                png(root / "brain-tumor-mri-dataset" / split / folder / f"{prefix}-{short}_{k:04d}.jpg".replace(".jpg", ".png"))


def busi(root: Path) -> None:
    base = root / "Dataset_BUSI_with_GT"
    for folder in ("benign", "malignant", "normal"):
        for k in range(1, 3):
            png(base / folder / f"{folder} ({k}).png")
            png(base / folder / f"{folder} ({k})_mask.png", mask_on=folder != "normal")
    png(base / "malignant" / "malignant (2)_mask_1.png", mask_on=True)  # a second lesion's mask


def bone_fracture(root: Path) -> None:
    base = root / "Bone_Fracture_Binary_Classification"
    for split in ("train", "val"):
        for folder in ("fractured", "not fractured"):
            for k in range(2):
                png(base / split / folder / f"{k}-rotated{k}.png")


def nih_chestxray14(root: Path) -> None:
    base = root / "nih"
    rows = [("00000001_000.png", "Cardiomegaly", "1"), ("00000001_001.png", "Cardiomegaly|Effusion", "1"),
            ("00000002_000.png", "No Finding", "2"), ("00000003_000.png", "Hernia|Pneumothorax", "3"),
            ("00000004_000.png", "Infiltration", "4"), ("00000005_000.png", "No Finding", "5")]
    for name, _, _ in rows:
        png(base / "images_001" / "images" / name)
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position"]
    lines += [f"{n},{f},0,{p},58,M,PA" for n, f, p in rows]
    (base / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")


def rsna_pneumonia(root: Path) -> None:
    base = root / "rsna-pneumonia-detection-challenge"
    ids = ["0004cfab-14fd-4e49-80ba-63a80b6bddd6", "00313ee0-9eaa-42f4-b0ab-c148ed3241cd",
           "00436515-870c-4b36-a041-de91049b9ab4", "00569f44-917d-4c86-a842-81832af98c30"]
    for k, pid in enumerate(ids):
        dicom(base / "stage_2_train_images" / f"{pid}.dcm", modality="CR", patient=pid, body_part="CHEST")
    (base / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\n"
        f"{ids[0]},,,,,0\n{ids[1]},,,,,0\n{ids[2]},264.0,152.0,213.0,379.0,1\n"
        f"{ids[2]},562.0,152.0,256.0,453.0,1\n{ids[3]},,,,,0\n"
    )
    (base / "stage_2_detailed_class_info.csv").write_text(
        "patientId,class\n"
        f"{ids[0]},No Lung Opacity / Not Normal\n{ids[1]},Normal\n{ids[2]},Lung Opacity\n"
        f"{ids[2]},Lung Opacity\n{ids[3]},Normal\n"
    )


def mura(root: Path) -> None:
    """MURA v1.1: labels only in the study folders' names; the same file names in every study."""
    base = root / "MURA-v1.1"
    studies = []
    for split, body, patient, study, count in (
        ("train", "XR_WRIST", "patient06359", "study1_positive", 3), ("train", "XR_WRIST", "patient06360", "study1_negative", 2),
        ("train", "XR_ELBOW", "patient04991", "study1_negative", 2), ("train", "XR_ELBOW", "patient04991", "study2_positive", 2),
        ("valid", "XR_FINGER", "patient11185", "study1_positive", 2), ("valid", "XR_HUMERUS", "patient11190", "study1_negative", 1),
    ):
        folder = base / split / body / patient / study
        for k in range(1, count + 1):
            png(folder / f"image{k}.png", value=10 + len(studies) * 10 + k)
        studies.append((split, f"MURA-v1.1/{split}/{body}/{patient}/{study}/,{int(study.endswith('positive'))}"))
    for split in ("train", "valid"):
        (base / f"{split}_labeled_studies.csv").write_text("\n".join(s for sp, s in studies if sp == split) + "\n")
        images = sorted(str(p.relative_to(root)) for p in (base / split).rglob("*.png"))
        (base / f"{split}_image_paths.csv").write_text("\n".join(images) + "\n")


def ct_kidney(root: Path) -> None:
    """CT KIDNEY DATASET: Normal/Cyst/Tumor/Stone folders and a table with Colab paths."""
    name = "CT-KIDNEY-DATASET-Normal-Cyst-Tumor-Stone"
    base = root / name / name
    lines = [",image,path,diag,target,Class"]
    for target, cls in enumerate(("Cyst", "Normal", "Stone", "Tumor")):
        for k in range(1, 3):
            png(base / cls / f"{cls}- ({k}).png", value=20 + target * 10 + k)
            lines.append(f"{len(lines) - 1},{cls}- ({k}),/content/drive/MyDrive/{name}/{name}/{cls}/{cls}- ({k}).png,"
                         f"{cls},{target},{cls}")
    (root / name / "kidneyData.csv").write_text("\n".join(lines) + "\n")


def rsna_ich(root: Path) -> None:
    """RSNA intracranial hemorrhage: CT slices named by id, one table row per image and subtype."""
    from pydicom.uid import generate_uid

    base = root / "rsna-intracranial-hemorrhage-detection"
    lines = ["ID,Label"]
    subtypes = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
    for case, positive in (("0a1b2c", {1: "subdural"}), ("1d2e3f", {}), ("2a3b4c", {0: "epidural", 2: "subarachnoid"})):
        series = generate_uid()
        for k in range(3):
            image = f"ID_{case}{k:03x}"
            dicom(base / "stage_2_train" / f"{image}.dcm", modality="CT", patient=f"ID_{case}",
                  series=series, position=float(k * 5))
            found = positive.get(k)
            lines += [f"{image}_{s},{int(s == found or (s == 'any' and found is not None))}" for s in subtypes]
    (base / "stage_2_train.csv").write_text("\n".join(lines) + "\n")


def lgg_own_folder(root: Path) -> None:
    """The LGG set when the user points at ``kaggle_3m`` itself: no dataset name above the files."""
    lgg_mri_segmentation(root)


LAYOUTS = {
    "chest_xray_pneumonia": chest_xray_pneumonia, "covid19_radiography": covid19_radiography,
    "lgg_mri_segmentation": lgg_mri_segmentation, "brain_tumor_mri": brain_tumor_mri, "busi": busi,
    "bone_fracture": bone_fracture, "nih_chestxray14": nih_chestxray14, "rsna_pneumonia": rsna_pneumonia,
    "mura": mura, "ct_kidney": ct_kidney, "rsna_ich": rsna_ich,
}
