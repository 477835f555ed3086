"""De-identified sharing: a copy of an organized dataset that can leave the hospital.

DICOM files are de-identified per the DICOM PS3.15 Annex E Basic Application Level
Confidentiality Profile with dicognito (a maintained library): identifiers and names
replaced, every UID remapped consistently (a series stays one series, a study one study),
dates shifted into the past by an offset drawn per patient (intervals within a patient
are kept). On top, what the profile removes and dicognito keeps is removed here: free-text
descriptions and comments, private tags, the birth date, the accession number; the
patient's name and ID become the workspace pseudonym. A DICOM file flagged
BurnedInAnnotation YES (text drawn into its pixels) is refused: its item is left out and
listed. Other images are written again from their pixels alone (no metadata, no text
chunk), NIfTI volumes with an empty description. Files are named by item id; the tables
hold no path.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.atomic import temp_sibling
from core.errors import DatasetError
from app.pseudonyms import pseudonymize
from app.organize.rows import ROW_KEYS, row_place, series_files, write_rows
from app.organize.splits import SPLITS
from app.progress import Progress, report
from app.workspace import Workspace, now_iso

PROFILE = "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile"
# Annex E attributes removed (X) or emptied (Z): those dicognito 0.19 keeps as they are, and those it
# fills with made-up values (an invented address or institution would read as real).
REMOVED = (
    "StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments", "PatientComments",
    "AdditionalPatientHistory", "AdmittingDiagnosesDescription", "RequestedProcedureDescription",
    "PerformedProcedureStepDescription", "DerivationDescription", "AcquisitionComments", "StudyComments",
    "VisitComments", "ReasonForTheRequestedProcedure", "RequestAttributesSequence", "OtherPatientNames",
    "OtherPatientIDs", "OtherPatientIDsSequence", "PatientBirthName", "PatientMotherBirthName", "PatientBirthTime",
    "MedicalAlerts", "Allergies", "EthnicGroup", "Occupation", "PatientState", "PatientWeight", "PatientSize",
    "PatientAge", "InstitutionAddress", "InstitutionalDepartmentName", "PerformingPhysicianName",
    "OperatorsName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
    "DeviceSerialNumber", "PatientAddress", "CountryOfResidence", "RegionOfResidence", "ResultsComments", "InterpretationText", "TextComments", "CommentsOnThePerformedProcedureStep",
)
EMPTIED = ("PatientBirthDate", "AccessionNumber", "StudyID", "ReferringPhysicianName", "PatientSex", "InstitutionName",
           "StationName")
METHOD = "PS3.15 E Basic Profile; dicognito; dates shifted per patient"  # LO: 64 characters at most
TABLE_KEYS = ["item", "file", *[k for k in ROW_KEYS if k not in ("item", "sha256")]]


@dataclass(frozen=True)
class ShareResult:
    path: Path
    items: int
    dicom_files: int
    refused: list[str] = field(default_factory=list)  # item ids flagged BurnedInAnnotation YES


def export_deidentified(ws: Workspace, dataset: str, destination: Path,
                        progress: Progress | None = None) -> ShareResult:
    """Write a de-identified copy of organized ``dataset`` into the new folder ``destination``.

    The folder is written aside and renamed into place when whole.

    Raises:
        DatasetError: ``destination`` exists already (nothing is overwritten), or no dataset.
    """
    from app.organize.dataset_tools import all_rows

    rows = all_rows(ws, dataset)
    meta = ws.dataset_metadata(dataset)
    destination = Path(destination).expanduser().resolve()
    if destination.exists() or destination.is_symlink():
        raise DatasetError(f"{destination} exists already; it is not overwritten. Give a new folder.")
    if any(f == destination or f in destination.parents for f in (ws.raw_dir, ws.data_dir / "private")):
        raise DatasetError(f"{destination} is inside the workspace's raw inputs or private files; give a folder "
                           "elsewhere.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(destination, "partial")
    (tmp / "items").mkdir(parents=True)
    try:
        written, refused, dicom_files = _write_items(ws, rows, tmp, progress)
        for name, part in (("labeled.csv", [r for r in written if r["labeled"]]),
                           ("unlabeled.csv", [r for r in written if not r["labeled"]]),
                           *((f"splits/{s}.csv", [r for r in written if r["split"] == s]) for s in SPLITS)):
            write_rows(tmp / name, part, TABLE_KEYS)
        _write_card(tmp, dataset, meta, written, refused, dicom_files)
        os.rename(tmp, destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ShareResult(destination, len(written), dicom_files, refused)


def _write_items(ws: Workspace, rows: list[dict[str, Any]], out: Path,
                 progress: Progress | None) -> tuple[list[dict[str, Any]], list[str], int]:
    secret = ws.secret()
    anonymizers: dict[str, Any] = {}  # one per patient: its date offset, its UIDs kept consistent
    written, refused, dicom_files = [], [], 0
    for k, row in enumerate(rows):
        item = row["item"]
        if row["format"] == "dicom":
            files = [ws.resolve(f) for f in series_files(ws, row)]
            anonymizer = anonymizers.get(row["patient_id"])
            if anonymizer is None:
                from dicognito.anonymizer import Anonymizer

                anonymizer = Anonymizer(seed=pseudonymize(secret, f"share:{row['patient_id']}", ""))
                anonymizers[row["patient_id"]] = anonymizer
            relative = _dicom_item(files, out / "items", item, row["patient_id"], anonymizer)
            if relative is None:
                refused.append(item)
                continue
            dicom_files += len(files)
        elif row["kind"] == "npz":
            relative = _npz_item(ws, row, out / "items", item)
        elif row["kind"] == "volume":
            relative = _volume_item(ws.resolve(row_place(ws, row)), out / "items", item)
        else:
            relative = _image_item(ws.resolve(row_place(ws, row)), out / "items", item)
        written.append({**{key: row.get(key, "") for key in TABLE_KEYS}, "file": relative})
        report(progress, "De-identifying", k + 1, len(rows))
    return written, refused, dicom_files


def _dicom_item(files: list[Path], items: Path, item: str, patient: str, anonymizer: Any) -> str | None:
    """The item's files de-identified into items/<item>.dcm (one file) or items/<item>/ (a series);
    None when a file is flagged BurnedInAnnotation YES."""
    import pydicom

    datasets = [pydicom.dcmread(f) for f in files]
    if any(str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES" for ds in datasets):
        return None
    if len(files) > 1:
        (items / item).mkdir()
    for n, ds in enumerate(datasets):
        anonymizer.anonymize(ds)
        for keyword in REMOVED:
            if keyword in ds:
                delattr(ds, keyword)
        for keyword in EMPTIED:
            if keyword in ds:
                setattr(ds, keyword, "")
        ds.remove_private_tags()
        ds.PatientName, ds.PatientID = patient, patient
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD
        target = items / (f"{item}.dcm" if len(files) == 1 else f"{item}/{n + 1:05d}.dcm")
        ds.save_as(target, enforce_file_format=True)
    return f"items/{item}.dcm" if len(files) == 1 else f"items/{item}/"


def _image_item(path: Path, items: Path, item: str) -> str:
    """A 2D image written again from its pixels alone (PNG; no metadata travels), turned as its
    EXIF orientation showed it (the tag does not travel either)."""
    from PIL import Image

    from app.imaging import upright

    with Image.open(path) as image:
        pixels = np.asarray(upright(image))
    Image.fromarray(pixels).save(items / f"{item}.png")
    return f"items/{item}.png"


def _volume_item(path: Path, items: Path, item: str) -> str:
    """A volume as NIfTI with its geometry only: no description, no auxiliary file name."""
    from app.imaging import simpleitk

    sitk = simpleitk()

    image = sitk.ReadImage(str(path))
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    target = items / f"{item}.nii.gz"
    sitk.WriteImage(image, str(target))
    import nibabel

    volume = nibabel.load(str(target))
    volume.header["descrip"], volume.header["aux_file"], volume.header["db_name"] = b"", b"", b""
    nibabel.save(nibabel.Nifti1Image(np.asanyarray(volume.dataobj), volume.affine, volume.header), str(target))
    return f"items/{item}.nii.gz"


def _npz_item(ws: Workspace, row: dict[str, Any], items: Path, item: str) -> str:
    """One image of a MedMNIST-style file: 2D as PNG, 3D as .npy (values in [0, 1])."""
    from PIL import Image

    from app.organize.npz import npz_images

    image = npz_images(ws.resolve(row_place(ws, row)), [row])[0]
    name = item.replace(":", "-")
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 2:
        Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(items / f"{name}.png")
        return f"items/{name}.png"
    np.save(items / f"{name}.npy", image.astype(np.float32))
    return f"items/{name}.npy"


def _write_card(out: Path, dataset: str, meta: dict[str, Any], rows: list[dict[str, Any]], refused: list[str],
                dicom_files: int) -> None:
    counts = {"items": len(rows), "dicom_files": dicom_files, "refused_burned_in": len(refused),
              "patients": len({r["patient_id"] for r in rows})}
    card = {"dataset": dataset, "classes": meta["classes"], "counts": counts, "created": now_iso(),
            "deidentification": {"dicom": PROFILE, "library": "dicognito",
                                 "dates": "shifted into the past by an offset drawn per patient",
                                 "uids": "remapped consistently within each patient (series and studies stay whole)",
                                 "other_images": "written again from their pixels alone"},
            "refused_burned_in": refused}
    (out / "metadata.json").write_text(json.dumps(card, indent=1), encoding="utf-8")
    lines = [
        f"# {dataset}: a de-identified copy", "",
        f"{len(rows)} items of {counts['patients']} patients; classes {', '.join(meta['classes'])}.", "",
        f"- DICOM ({dicom_files} files): {PROFILE}",
        "  (dicognito). Names and IDs replaced (patients by their workspace pseudonym), UIDs remapped",
        "  consistently, dates shifted per patient; free-text descriptions, comments, private tags,",
        "  birth date, address, institution and accession number removed.",
        "- Other images: written again from their pixels alone (PNG, NIfTI without description).",
        "- Files are named by item id; labeled.csv, unlabeled.csv and splits/ hold no path.",
        "",
        "Pixels are not searched for text: an image with a name burned into it stays so. DICOM files that",
        "declare BurnedInAnnotation YES were left out" + (f": {', '.join(refused)}." if refused else " (none here)."),
        "Run `python main.py audit THIS_FOLDER` before it leaves the hospital.", "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
