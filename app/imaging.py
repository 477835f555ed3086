"""Read any supported image into a 2D float array in [0, 1].

DICOM gets its rescale (to Hounsfield units for CT) and its stored window;
volumes give their middle axial slice; everything else is scaled between its
1st and 99th percentiles so that one bright pixel does not wash out the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.errors import DatasetError


def _percentile_scale(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99])
    if high <= low:
        high = low + 1.0
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _first(value: object) -> float:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def read_dicom_2d(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[len(pixels) // 2]  # multi-frame: the middle frame
    elif pixels.ndim == 3:
        pixels = pixels.mean(axis=-1)  # colour: luminance-ish
    values = apply_modality_lut(pixels, ds).astype(np.float32)
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        centre, width = _first(ds.WindowCenter), max(_first(ds.WindowWidth), 1.0)
        image = np.clip((values - (centre - width / 2)) / width, 0.0, 1.0).astype(np.float32)
        if image.std() < 0.01 < values.std():
            # The stored window shows nothing of this image (re-encoded or badly
            # anonymized files carry windows meant for other data): scale it instead.
            image = _percentile_scale(values)
    else:
        image = _percentile_scale(values)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        image = 1.0 - image
    return image


def read_plain_2d(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I", "F"):
            return _percentile_scale(np.asarray(img, dtype=np.float32))
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def read_volume(path: Path) -> np.ndarray:
    """A volume as (z, y, x) float32."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        image = nib.as_closest_canonical(nib.load(path))  # RAS: the last axis is axial
        data = np.asarray(image.dataobj, dtype=np.float32)
        if data.ndim == 4:
            data = data[..., 0]
        return np.transpose(data, (2, 1, 0))
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def load_2d(path: Path, kind: str) -> np.ndarray:
    """The 2D image a 2D model sees for one dataset row.

    Raises:
        DatasetError: the file is missing or cannot be decoded.
    """
    try:
        if kind == "volume":
            volume = read_volume(path)
            return _percentile_scale(volume[volume.shape[0] // 2])
        if kind == "dicom_series":
            return read_dicom_2d(path)
        return read_plain_2d(path)
    except FileNotFoundError as err:
        raise DatasetError(f"{path} is missing. Was the raw data moved? Run Organize again.") from err
    except Exception as err:
        raise DatasetError(f"{path} cannot be read ({type(err).__name__}: {err}).") from err


def resize(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if image.shape == (size, size):
        return image.astype(np.float32)
    resized = Image.fromarray(image.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32)
