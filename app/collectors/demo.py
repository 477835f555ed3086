"""The built-in demo dataset: real files in the layouts users bring, made offline.

Deterministic for a given seed. It writes, under ``data/raw/demo/<name>/``:

- ``chest_xray/{NORMAL,PNEUMONIA}/*.png``: frontal chest radiographs named like the
  Kaggle chest-xray-pneumonia set (``IM-0007-0001.png``, ``person3_bacteria_2.png``);
- ``bone_xray/{fractured,not fractured}/*.png``: long-bone radiographs;
- ``CT_HEAD/{normal,hemorrhage}/S<n>/IM<k>.dcm``: CT series in Hounsfield units
  (rescale, window, spacing, positions); half carry BodyPartExamined, half only a
  French or German study description;
- ``MR_BRAIN/{normal,tumor}/S<n>/IM<k>``: MR series, files without an extension;
- ``nifti_brain/{notumor,glioma}/sub-<n>_T1w.nii.gz``: MR volumes;
- ``unlabeled/chest_xray/*.png``: chest radiographs with no label (mostly normal).

The DICOM headers carry fake patient names and birth dates on purpose: the app
must never copy them anywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.atomic import swap_in, temp_sibling
from app.collectors import CollectResult, option, register_collector
from app.collectors import phantoms
from app.progress import Progress, report

FIRST = ["ANNA", "JEAN", "MARIE", "PAUL", "LENA", "OMAR", "SOFIA", "IVAN", "CLARA", "YUKI"]
LAST = ["MOREAU", "KOWALSKI", "HALVORSEN", "OKAFOR", "LINDQVIST", "BERNARDI", "NAKAMURA", "DUBOIS"]


def _fake_identity(rng: np.random.Generator) -> dict[str, str]:
    year = int(rng.integers(1938, 2004))
    return {
        "name": f"{rng.choice(LAST)}^{rng.choice(FIRST)}",
        "birth_date": f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        "id": f"{int(rng.integers(10**6, 10**7))}",
        "accession": f"ACC{int(rng.integers(10**7, 10**8))}",
    }


def _png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L").save(path)


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["medanomaly-demo", *map(str, parts)])


def _dicom_series(
    folder: Path,
    volume: np.ndarray,
    *,
    ct: bool,
    patient: dict[str, str],
    key: str,
    header: dict[str, Any],
    extension: str,
) -> int:
    """Write one volume as a DICOM series, one file per slice; returns slices written."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

    folder.mkdir(parents=True, exist_ok=True)
    sop_class = CTImageStorage if ct else MRImageStorage
    study_uid, series_uid = _uid(key, "study"), _uid(key, "series")
    spacing, thickness = [0.9, 0.9], 5.0 if ct else 3.0
    if ct:
        stored = np.clip(volume + 1024, 0, 4095).astype(np.uint16)
    else:
        stored = np.clip(volume, 0, 4095).astype(np.uint16)
    # Write slices out of order on disk: the organizer must sort by position.
    order = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)).permutation(len(stored))
    for k in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = _uid(key, "slice", k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"IM{k + 1:05d}{extension}"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT" if ct else "MR"
        ds.PatientName, ds.PatientBirthDate = patient["name"], patient["birth_date"]
        ds.PatientID, ds.AccessionNumber = patient["id"], patient["accession"]
        ds.PatientSex = "O"
        ds.InstitutionName = "DEMO GENERAL HOSPITAL"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20240115", 1, int(k) + 1
        ds.Manufacturer = "MedAnomaly demo"
        for tag, value in header.items():
            setattr(ds, tag, value)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-57.6, -57.6, float(k) * thickness]
        ds.SliceLocation = float(k) * thickness
        ds.PixelSpacing, ds.SliceThickness = spacing, thickness
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        if ct:
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
            ds.WindowCenter, ds.WindowWidth = 40, 80
        else:
            ds.WindowCenter, ds.WindowWidth = 500, 1000
        ds.PixelData = stored[k].tobytes()
        ds.save_as(ds.filename, enforce_file_format=True)
    return len(stored)


def _nifti(path: Path, volume: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(np.transpose(volume, (2, 1, 0)), 0, 4095).astype(np.int16)  # (x, y, z)
    image = nib.Nifti1Image(data, affine=np.diag([1.0, 1.0, 3.0, 1.0]))
    # gzip with a fixed mtime so that the same seed gives byte-identical files.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(image.to_bytes())


CT_HEADERS = [
    {"BodyPartExamined": "HEAD", "StudyDescription": "CT HEAD WO CONTRAST", "SeriesDescription": "AXIAL 5MM"},
    {"StudyDescription": "CT CRANE SANS INJECTION", "SeriesDescription": "CERVEAU 5MM"},
    {"StudyDescription": "CCT KOPF NATIV", "SeriesDescription": "KOPF AXIAL"},
]
MR_HEADER = {"BodyPartExamined": "BRAIN", "StudyDescription": "MRI BRAIN", "SeriesDescription": "T1 SE AXIAL"}


def _plan(scale: int) -> list[tuple[str, str, int]]:
    """(kind, class, count) of items to make; ``scale`` multiplies every count."""
    return [
        ("chest", "NORMAL", 24 * scale),
        ("chest", "PNEUMONIA", 24 * scale),
        ("bone", "not fractured", 16 * scale),
        ("bone", "fractured", 16 * scale),
        ("ct", "normal", 10 * scale),
        ("ct", "hemorrhage", 10 * scale),
        ("mr", "normal", 8 * scale),
        ("mr", "tumor", 8 * scale),
        ("nifti", "notumor", 6 * scale),
        ("nifti", "glioma", 6 * scale),
        ("unlabeled", "", 20 * scale),
    ]


def generate_demo(target: Path, *, seed: int = 0, scale: int = 1, progress: Progress | None = None) -> int:
    """Write the demo dataset into ``target`` (which must not exist); returns files written."""
    rng = np.random.default_rng(seed)
    plan = _plan(scale)
    total = sum(count for _, _, count in plan)
    people = [_fake_identity(rng) for _ in range(total)]
    files, done, person = 0, 0, 0
    slices = 12
    for kind, label, count in plan:
        for i in range(count):
            # About one patient in four comes back for a second image or study.
            if person >= 5 and rng.random() < 0.25:
                pid = int(rng.integers(0, person))
            else:
                pid, person = person, person + 1
            patient = people[pid]
            key = f"{seed}-{kind}-{label}-{i}"
            if kind == "chest":
                anomalous = label == "PNEUMONIA"
                name = f"person{pid + 1}_bacteria_{i + 1}.png" if anomalous else f"IM-{pid + 1:04d}-{i + 1:04d}.png"
                _png(target / "chest_xray" / label / name, phantoms.chest_xray(rng, anomalous))
                files += 1
            elif kind == "bone":
                _png(target / "bone_xray" / label / f"patient{pid + 1:04d}_view{i + 1}.png",
                     phantoms.bone_xray(rng, label == "fractured"))
                files += 1
            elif kind == "ct":
                volume = phantoms.head_volume(rng, slices, "hemorrhage" if label == "hemorrhage" else None, ct=True)
                header = CT_HEADERS[i % len(CT_HEADERS)]
                files += _dicom_series(target / "CT_HEAD" / label / f"S{i + 1:04d}", volume, ct=True,
                                       patient=patient, key=key, header=header, extension=".dcm")
            elif kind == "mr":
                volume = phantoms.head_volume(rng, slices, "tumor" if label == "tumor" else None, ct=False)
                files += _dicom_series(target / "MR_BRAIN" / label / f"S{i + 1:04d}", volume, ct=False,
                                       patient=patient, key=key, header=MR_HEADER, extension="")
            elif kind == "nifti":
                volume = phantoms.head_volume(rng, slices, "tumor" if label == "glioma" else None, ct=False)
                _nifti(target / "nifti_brain" / label / f"sub-{pid + 1:04d}_T1w.nii.gz", volume)
                files += 1
            else:
                anomalous = rng.random() < 0.15
                _png(target / "unlabeled" / "chest_xray" / f"img_{i + 1:05d}.png", phantoms.chest_xray(rng, anomalous))
                files += 1
            done += 1
            report(progress, "Generating demo images", done, total)
    return files


def write_manifest(folder: Path) -> Path:
    """A sha256sum-format list of every file under ``folder``, for later verification."""
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "SHA256SUMS"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(folder).as_posix()}")
    manifest = folder / "SHA256SUMS"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@dataclass(frozen=True)
class DemoOptions:
    scale: int = option(3, help="size multiplier (default 3: about 440 items)")
    seed: int = option(0, help="random seed of the generated images")
    force: bool = option(False, help="generate again even if present")
    name: str = option("demo", help="dataset name")

@register_collector("demo", "Built-in demo data (offline, 10 to 30 seconds; multi-region, multi-modality)",
                    options=DemoOptions)
def collect_demo(
    workspace: Any,
    *,
    name: str = "demo",
    seed: int = 0,
    scale: int = 1,
    force: bool = False,
    progress: Progress | None = None,
) -> CollectResult:
    """Generate the demo dataset into the workspace and record it in the index.

    The files are made in a ``.partial`` folder and moved into place only when
    whole, so an interrupted run never leaves a half dataset marked complete.
    An existing complete demo dataset is kept unless ``force`` is set.
    """
    target = workspace.raw_target("demo", name)
    entry = workspace.load_index().get(name, {})
    if target.exists() and entry.get("complete") and not force:
        return CollectResult(name, target, int(entry.get("files", 0)), "already present")
    partial = temp_sibling(target, "partial")
    try:
        files = generate_demo(partial, seed=seed, scale=scale, progress=progress)
        write_manifest(partial)
        swap_in(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    workspace.record_dataset(
        name,
        source="demo",
        raw_path=workspace.relative(target),
        files=files,
        complete=True,
        licence="synthetic, generated by MedAnomaly Workbench (no real patient data)",
        options={"seed": seed, "scale": scale},
    )
    return CollectResult(name, target, files)
