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


def test_an_image_stored_sideways_is_read_as_its_exif_orientation_shows_it(tmp_path: Path) -> None:
    """A phone's photo is often stored sideways with an EXIF tag to turn it; viewers obey the
    tag, and so do the models' reader, the region rules and this look."""
    from app.imaging import load_2d

    upright = (fan() * 255).astype(np.uint8)
    sideways = tmp_path / "fan.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter to the left: turn it right to show it
    Image.fromarray(np.rot90(upright)).save(sideways, exif=exif, quality=95)
    assert image_look(sideways) == "ultrasound"
    shown = load_2d(sideways, "image2d")
    assert shown.shape == upright.shape[:2]
    assert np.abs(shown - upright[..., 0] / 255.0).mean() < 0.05


def test_a_deidentified_copy_keeps_a_sideways_photo_upright(ws, tmp_path: Path) -> None:
    """The copy drops every tag, the orientation too: its pixels are written turned."""
    from app.organize.share import export_deidentified

    folder = tmp_path / "photos"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90((fan() * 255).astype(np.uint8))).save(folder / "fan.jpg", exif=exif, quality=95)
    organize(ws, folder, "photos", workers=1)
    result = export_deidentified(ws, "photos", tmp_path / "shared")
    (written,) = (result.path / "items").glob("*.png")
    with Image.open(written) as image:
        assert not image.getexif()
        assert image_look(written) == "ultrasound"


def _exported(path: Path) -> np.ndarray:
    """A DICOM frame as a viewer exports it to PNG: windowed on its own 0.5-99.5 percentiles, 8 bits."""
    import pydicom

    plane = pydicom.dcmread(path).pixel_array.astype(np.float32)
    low, high = np.percentile(plane, [0.5, 99.5])
    return np.round(np.clip((plane - low) / (high - low), 0, 1) * 255) / 255


def test_ultrasound_without_a_fan_is_told_by_its_sideways_speckle() -> None:
    # Linear-probe frames and crops fill their frame like a radiograph; their grain gives them away.
    frames = [shared(f"regions/{name}") for name in (
        "breast/us_breast_BUSI_benign_1.png", "breast/us_breast_BUSI_malignant_1.png",
        "lower_extremity/us_femur_MONAI_femur_input.png", "neck/us_neck_MONAI_neck_input.png")]
    assert {p.name: image_look(p) for p in frames} == {p.name: "ultrasound" for p in frames}


def test_mr_crops_that_fill_their_frame_are_not_called_radiographs_or_ultrasound() -> None:
    # Wrist and knee MR fill the frame and are as grainy as ultrasound, but their grain is as tall
    # as it is wide: no modality from the look (for review) rather than a wrong X-ray.
    for name in ("upper_extremity/mr_wrist_left_dcm4che_MR01.dcm", "upper_extremity/mr_wrist_left_dcm4che_MR08.dcm",
                 "lower_extremity/mr_knee_sag_ge_MR-MONO2-16-knee.dcm"):
        assert look_of_pixels(_rgb(_exported(shared(f"regions/{name}")))) == "cross_section", name


def test_a_radiograph_is_smooth_at_every_size_it_is_judged_at(tmp_path: Path) -> None:
    # Reduced to 200-256 pixels (the smallest judged) a real radiograph keeps its look; smaller
    # ones are not judged by their grain at all.
    from app.organize.looks import speckle

    for path in sorted(shared("xray/chest_samples").glob("*.png")):
        with Image.open(path) as image:
            for side in (1024, 256, 200, 128):
                small = image.convert("L").resize((side, side), Image.BILINEAR)
                small.save(tmp_path / "small.png")
                assert image_look(tmp_path / "small.png") == "radiograph", (path.name, side)
                if side < 200:
                    assert speckle(np.asarray(small, np.float32) / 255) is None
    # Native 200-300 pixel crops (a zoomed export) show a radiograph's own noise: still smooth enough.
    films = [np.asarray(Image.open(p).convert("L"), np.float32) / 255 for p in sorted(shared("xray/chest_samples").glob("*.png"))]
    films += [_exported(shared(f"regions/{name}")) for name in ("pelvis/xr_hip_cr_WG04_RG2.dcm", "breast/mg_mlo_left_WG04_MG1.dcm")]
    for k, film in enumerate(films):
        h, w = film.shape
        for side in (300, 256, 200):
            for y, x in ((h // 2, w // 2), (h // 3, w // 3), (2 * h // 3, 2 * w // 3)):
                crop = film[y - side // 2 : y + side // 2, x - side // 2 : x + side // 2]
                assert look_of_pixels(_rgb(crop)) == "radiograph", (k, side, y, x)


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
