"""Modality from pixel statistics: the last clue for plain 2D images."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.organize.looks import image_look, look_of_pixels
from app.organize.organizer import organize, read_rows
from tests.conftest import placed, shared


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2).astype(np.float32)


def fan(size: int = 256, seed: int = 0) -> np.ndarray:
    """An ultrasound frame: a speckled sector on black, its apex at the top centre."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    apex_x, apex_y = size / 2, -size * 0.05
    radius = np.hypot(x - apex_x, y - apex_y)
    angle = np.degrees(np.arctan2(x - apex_x, y - apex_y))
    inside = (np.abs(angle) < 35) & (radius < size * 0.95)
    speckle = rng.rayleigh(0.25, (size, size)) * (0.6 + 0.4 * np.cos(radius / 9))
    return _rgb(np.where(inside, 0.15 + speckle, 0.0))


def _window(volume: np.ndarray, axis: int) -> np.ndarray:
    plane = np.take(volume, volume.shape[axis] // 2, axis=axis).astype(np.float32)
    low, high = np.percentile(plane, [1, 99.5])
    return _rgb((plane - low) / (high - low + 1e-6))


def test_real_chest_radiographs_look_like_radiographs() -> None:
    images = [p for p in shared("xray/chest_samples").iterdir() if p.suffix.lower() in (".png", ".jpg")]
    assert len(images) >= 5
    assert {p.name: image_look(p) for p in images} == {p.name: "radiograph" for p in images}


def test_real_brain_and_ct_slices_look_like_cross_sections() -> None:
    import nibabel as nib
    import pydicom

    for name in ("eun_uchar_8.nii.gz", "KmeansTest_T1UCharRaw.nii.gz"):
        volume = np.asarray(nib.load(shared(f"nifti/{name}")).dataobj)
        assert [look_of_pixels(_window(volume, axis)) for axis in range(3)] == ["cross_section"] * 3, name
    for path in sorted(shared("dicom/ct_chest_covid_slices").rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert look_of_pixels(_rgb((hu + 1000) / 1400)) == "cross_section", path.name


def test_an_ultrasound_fan_and_a_colour_photo() -> None:
    assert look_of_pixels(fan()) == "ultrasound"
    rng = np.random.default_rng(1)
    skin = np.stack([0.8 + 0.1 * rng.random((64, 64)), 0.5 * np.ones((64, 64)), 0.35 * np.ones((64, 64))], axis=2)
    assert look_of_pixels(skin.astype(np.float32)) == "photo"


@pytest.fixture
def unnamed_tree(tmp_path: Path) -> Path:
    """Folders whose names say nothing about the modality, as exported by a viewer."""
    import nibabel as nib

    root = tmp_path / "export"
    for k in range(4):
        (root / "series_a").mkdir(parents=True, exist_ok=True)
        Image.fromarray((fan(seed=k) * 255).astype(np.uint8)).save(root / "series_a" / f"img{k}.png")
    volume = np.asarray(nib.load(shared("nifti/KmeansTest_T1UCharRaw.nii.gz")).dataobj)
    (root / "series_b").mkdir()
    for k in range(4):
        plane = _window(volume[:, :, 20 + 6 * k : 21 + 6 * k], 2)
        Image.fromarray((plane * 255).astype(np.uint8)).save(root / "series_b" / f"img{k}.png")
    return root


def test_organizer_takes_the_modality_from_the_pixels_when_nothing_else_says(ws, unnamed_tree) -> None:
    organize(ws, unnamed_tree, "unnamed")
    rows = placed(ws, read_rows(ws.organized_path("unnamed") / "unlabeled.csv"))
    found = {(Path(r["path"]).parent.name, r["modality"], r["modality_rule"]) for r in rows}
    # A fan is ultrasound; a brain slice is not called an X-ray: it stays unknown for review.
    assert found == {("series_a", "US", "image_statistics"), ("series_b", "OT", "none")}
