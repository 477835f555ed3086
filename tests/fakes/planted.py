"""A small hospital-style folder with identifiers planted everywhere they hide in real exports:
folder and file names (``Family^Given_birthdate/MRN-number_k.dcm``), DICOM identity tags,
and free-text descriptions that name the patient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

INSTITUTION = "Saint Quillonby Infirmary"
STREET = "Wobbleford"
PATIENTS = [  # family, given, birth date, record number; distinctive so a search cannot hit by chance
    ("Quimbleworth", "Ottoline", "19600101", "44770193"),
    ("Zarkovian", "Bertrand", "19710203", "55881204"),
    ("Plumtreeve", "Harriet", "19820304", "66123457"),
    ("Oxtongue", "Fenwicke", "19530405", "77234568"),
    ("Brackenhurst", "Isolde", "19640506", "88345679"),
    ("Thistlewood", "Caspian", "19750607", "99456780"),
    ("Wrenfield", "Marigold", "19860708", "41567891"),
    ("Ashgrovey", "Leopoldo", "19970809", "52678902"),
    ("Fernhollow", "Perpetua", "19480910", "63789013"),
    ("Gallowmere", "Thaddeus", "19591011", "74890124"),
    ("Hollowbrook", "Winifred", "19691112", "85901235"),
    ("Ivorystone", "Barnabus", "19791213", "96012346"),
]


def planted_strings() -> list[str]:
    """Every planted identifier, as it could appear (searched case-insensitively)."""
    found = [INSTITUTION, STREET, "Quillonby"]
    for family, given, birth, mrn in PATIENTS:
        found += [family, given, birth, f"{birth[:4]}-{birth[4:6]}-{birth[6:]}", mrn, f"ACC{mrn[::-1]}",
                  f"OPID{mrn[2:]}"]
    return found


def _dicom(path: Path, patient: tuple[str, str, str, str], k: int, pixels: np.ndarray, *, one_series: bool = False,
           burned_in: bool = False) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

    family, given, birth, mrn = patient
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[mrn, str(k), "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = ComputedRadiographyImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[mrn, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[mrn, "0" if one_series else str(k), "series"])
    if burned_in:
        ds.BurnedInAnnotation = "YES"
    ds.Modality, ds.BodyPartExamined = "CR", "CHEST"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = f"{family}^{given}", f"MRN-{mrn}", birth
    ds.PatientAddress = f"{mrn[:2]} {STREET} Lane"
    ds.AccessionNumber, ds.OtherPatientIDs = f"ACC{mrn[::-1]}", f"OPID{mrn[2:]}"
    ds.InstitutionName = INSTITUTION
    ds.StudyDescription = f"CHEST for {given} {family} DOB {birth}"
    ds.SeriesDescription = f"PA view {family}"
    ds.ProtocolName = f"Chest {given} {family}"
    ds.ImageComments = f"patient {family} {given} record {mrn}"
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20240115", k + 1, 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def make_planted(root: Path, per_patient: int = 2, size: int = 32) -> Path:
    """``root/<class>/<Family^Given_birth>/MRN-<number>_<k>.dcm`` for every patient (half
    normal, half pneumonia), plus one PNG per patient named after its record number. The
    first patient's files are the slices of one series; the second patient's first file
    says text is burned into its pixels (BurnedInAnnotation YES)."""
    rng = np.random.default_rng(7)
    for n, patient in enumerate(PATIENTS):
        label = "normal" if n % 2 == 0 else "pneumonia"
        family, given, birth, mrn = patient
        folder = root / label / f"{family}^{given}_{birth}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_patient):
            base = 900 if label == "normal" else 1900
            _dicom(folder / f"MRN-{mrn}_{k}.dcm", patient, k, rng.normal(base, 300, (size, size)).clip(0, 4095),
                   one_series=n == 0, burned_in=n == 1 and k == 0)
        pixels = rng.normal(90 if label == "normal" else 160, 30, (size, size)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"scan_MRN-{mrn}.png")
    return root
