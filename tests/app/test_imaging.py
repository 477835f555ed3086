"""Reading every supported format into a 2D image in [0, 1]."""

from pathlib import Path

import numpy as np
import pytest

from app.imaging import load_2d, read_volume
from tests.conftest import shared


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
    _check(load_2d(path, "volume"))


def test_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    from core.errors import DatasetError

    with pytest.raises(DatasetError, match="Run Organize again"):
        load_2d(tmp_path / "gone.png", "image2d")
