"""The built-in demo dataset: deterministic, realistic files, never half-written."""

from pathlib import Path

import numpy as np
import pytest

from app.collectors import collect, list_collectors
from app.collectors.demo import generate_demo, write_manifest


def test_the_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate_demo(a, seed=3)
    generate_demo(b, seed=3)
    assert write_manifest(a).read_text() == write_manifest(b).read_text()
    generate_demo(tmp_path / "c", seed=4)
    assert write_manifest(tmp_path / "c").read_text() != write_manifest(a).read_text()


def test_dicom_series_carry_the_tags_a_scanner_writes(demo_ws) -> None:
    import pydicom

    raw = demo_ws.raw_dir / "demo" / "demo"
    ct = sorted((raw / "CT_HEAD").rglob("*.dcm"))
    mr = [p for p in (raw / "MR_BRAIN").rglob("*") if p.is_file()]
    assert ct and mr and all(p.suffix == "" for p in mr), "MR files have no extension, as many PACS exports"
    ds = pydicom.dcmread(ct[0])
    for tag in ("Modality", "PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID",
                "SeriesInstanceUID", "SOPInstanceUID", "PixelSpacing", "ImagePositionPatient",
                "RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
        assert tag in ds, tag
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu.min() < -900 and hu.max() > 900, "air and bone in Hounsfield units"
    body_parts = {pydicom.dcmread(p, stop_before_pixels=True).get("BodyPartExamined") for p in ct}
    assert "HEAD" in body_parts and None in body_parts, "some series name their region only in descriptions"


def test_other_formats(demo_ws) -> None:
    import nibabel as nib
    from PIL import Image

    raw = demo_ws.raw_dir / "demo" / "demo"
    volume = nib.load(next((raw / "nifti_brain" / "glioma").glob("*.nii.gz")))
    assert volume.shape == (128, 128, 12)
    png = next((raw / "chest_xray" / "PNEUMONIA").glob("person*_bacteria_*.png"))
    assert Image.open(png).mode == "L"
    assert any((raw / "unlabeled" / "chest_xray").iterdir())


def test_planted_findings_change_the_image(tmp_path: Path) -> None:
    from app.collectors import phantoms

    normal = phantoms.head_volume(np.random.default_rng(1), 12, None, ct=True)
    bleed = phantoms.head_volume(np.random.default_rng(1), 12, "hemorrhage", ct=True)
    middle = slice(4, 8)
    assert (bleed[middle] - normal[middle]).max() > 25, "a hyperdense blob in the central slices"


def test_an_interrupted_collect_leaves_nothing_marked_complete(ws) -> None:
    def explode(task, done, total, **info):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect("demo", ws, progress=explode)
    assert "demo" not in ws.load_index()
    assert not (ws.raw_dir / "demo" / "demo").exists()
    result = collect("demo", ws, scale=1)
    assert ws.load_index()["demo"]["complete"] and result.files > 100
    assert collect("demo", ws, scale=1).note == "already present"


def test_collectors_are_listed_from_the_registry() -> None:
    names = [c.name for c in list_collectors()]
    assert names[:2] == ["demo", "local"]
