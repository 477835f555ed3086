"""Reading every supported format into a 2D image in [0, 1]."""

from pathlib import Path

import numpy as np
import pytest

from app.imaging import load_2d, read_volume
from tests.conftest import shared, small_dicom


def _check(image: np.ndarray) -> None:
    assert image.ndim == 2 and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.01


def test_jpeg_compressed_dicom_decodes() -> None:
    path = shared("dicom/ct_head_jpeg/ctbrain1.dcm")
    _check(load_2d(path, "dicom_series"))


def test_monochrome1_radiograph_is_inverted_to_look_normal() -> None:
    import pydicom

    path = shared("dicom/mixed_cta_cr_mr/gdcm-CR-MONO1-10-chest.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    _check(load_2d(path, "dicom_series"))


def _palette_dicom(path: Path, indices: np.ndarray, colours: list[tuple[int, int, int]]) -> Path:
    tables = {}
    for channel, keyword in enumerate(("Red", "Green", "Blue")):
        tables[f"{keyword}PaletteColorLookupTableDescriptor"] = [len(colours), 0, 16]
        tables[f"{keyword}PaletteColorLookupTableData"] = np.array([c[channel] * 257 for c in colours], "<u2").tobytes()
    # a window meant for the indices: no window applies to colours
    return small_dicom(path, *indices.shape, indices.astype(np.uint8).tobytes(), Modality="US", BitsAllocated=8,
                       BitsStored=8, HighBit=7, PhotometricInterpretation="PALETTE COLOR", WindowCenter=128,
                       WindowWidth=10, **tables)


def test_a_palette_colour_image_is_read_through_its_palette(tmp_path: Path) -> None:
    """Its values are indices into a colour table (Doppler ultrasound), not brightness: a
    real PALETTE COLOR echo of ../shared was read as a scrambled grey picture."""
    indices = np.zeros((16, 16), np.uint8)  # index 0: white background
    indices[4:12, 4:12] = 1  # index 1: black
    indices[6:10, 6:10] = 2  # index 2: red (colour flow)
    path = _palette_dicom(tmp_path / "doppler.dcm", indices, [(255, 255, 255), (0, 0, 0), (255, 0, 0)])
    grey = load_2d(path, "dicom_series")
    assert grey[0, 0] > 0.9 and grey[5, 5] < 0.1  # brightness from the palette, not from the index
    colour = load_2d(path, "dicom_series", colour=True)
    assert colour.shape == (16, 16, 3) and np.allclose(colour[8, 8], [1.0, 0.0, 0.0], atol=0.01)


@pytest.mark.parametrize("name", ["anatomical.nii", "KmeansTest_T1UCharRaw.nii.gz"])
def test_nifti_volumes_give_their_middle_axial_slice(name: str) -> None:
    _check(load_2d(shared(f"nifti/{name}"), "volume"))


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_formats(tmp_path: Path, suffix: str) -> None:
    import SimpleITK as sitk

    volume = np.zeros((6, 20, 24), np.int16)
    volume[3, 5:15, 5:15] = 400
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(path))
    assert read_volume(path).shape == (6, 20, 24)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii.gz"])
def test_a_2d_file_in_a_volume_format_is_one_slice_not_a_row(tmp_path: Path, suffix: str) -> None:
    """MONAI's real CT_2D_head_fixed.mha (../shared) was read as one row of pixels: stripes."""
    import SimpleITK as sitk

    picture = np.zeros((20, 24), np.int16)
    picture[5:15, 6:18] = 400
    path = tmp_path / f"slice{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(picture), str(path))
    assert read_volume(path).shape == (1, 20, 24)
    image = load_2d(path, "volume")
    assert image.shape == (20, 24) and image[10, 12] == 1.0 and image[0, 0] == 0.0
    rgb = tmp_path / f"colour{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([picture] * 3, axis=-1).astype(np.uint8), isVector=True), str(rgb))
    assert load_2d(rgb, "volume").shape == (20, 24)
    _check(load_2d(path, "volume"))


def test_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    from core.errors import DatasetError

    with pytest.raises(DatasetError, match="Run Organize again"):
        load_2d(tmp_path / "gone.png", "image2d")


@pytest.mark.parametrize("shape,size", [((6, 28, 28), 64), ((6, 28, 28), 32), ((3, 224, 224), 64), ((3, 100, 80), 64),
                                        ((3, 30, 70), 32), ((4, 28, 28, 3), 64), ((3, 64, 64), 28), ((3, 28, 28), 28)])
def test_a_stack_is_resized_as_each_image_alone(shape: tuple[int, ...], size: int) -> None:
    from app.imaging import resize, resize_many

    images = np.random.default_rng(0).random(shape).astype(np.float32)
    together = resize_many(images, size, chunk=2)  # chunks that end inside the stack
    alone = np.stack([resize(image, size) for image in images])
    alone = np.moveaxis(alone, -1, 1) if alone.ndim == 4 else alone[:, None]  # channels first
    assert together.shape == alone.shape and np.abs(together - alone).max() < 1e-5


def test_npz_splits_decode_as_their_images_would_one_by_one(tmp_path: Path) -> None:
    """Training decodes a MedMNIST split as one stack; prediction reads one file at a time."""
    from app.data import load_images, split_rows
    from app.imaging import resize
    from app.organize.organizer import organize
    from app.workspace import Workspace

    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(tmp_path / "tintmnist.npz", **arrays)
    ws = Workspace.open(tmp_path / "ws")
    organize(ws, tmp_path / "tintmnist.npz", "tint")
    rows = split_rows(ws, "tint", "train")
    for channels in (3, 1):
        got = load_images(ws, rows, 48, channels=channels)
        for k, row in enumerate(rows):
            split, index = row["series_id"].split(":")  # where the organizer found the image in the file
            image = arrays[f"{split}_images"][int(index)].astype(np.float32) / 255.0
            expected = resize(image if channels == 3 else image.mean(axis=-1), 48)
            expected = np.moveaxis(expected, -1, 0) if channels == 3 else expected[None]
            assert np.abs(got[k] - expected).max() < 1e-5


def test_nan_and_infinity_are_background_not_a_nan_image(tmp_path: Path) -> None:
    """Parametric maps, ADC and registered volumes often hold NaN outside the anatomy: one NaN
    made the whole scaled image NaN, and a training batch with it."""
    import nibabel as nib

    from app.volumes import normalize

    data = np.zeros((24, 24, 8), np.float32)
    data[6:18, 6:18] = np.linspace(10.0, 100.0, 12)[:, None, None]
    data[:3] = np.nan
    data[0, 0, 0], data[1, 1, 1] = np.inf, -np.inf
    path = tmp_path / "adc.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    image = load_2d(path, "volume")
    _check(image)
    assert np.isfinite(image).all() and image.max() == 1.0
    assert np.isfinite(normalize(np.transpose(data, (2, 1, 0)), "MR")).all()
