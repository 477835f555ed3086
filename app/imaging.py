"""Read any supported image into a 2D float array in [0, 1] (colour ones, when asked, as (y, x, 3)).

DICOM gets its rescale (to Hounsfield units for CT) and its stored window;
volumes give their middle axial slice; everything else is scaled between its
1st and 99th percentiles so that one bright pixel does not wash out the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DatasetError

# Declared sizes are checked against these before any pixel is decoded, so that a small
# file whose header claims a huge image cannot take the machine's memory (docs: limits).
MAX_PIXELS = 64_000_000  # one 2D image (8000 x 8000): 256 MB as float32
MAX_VOXELS = 600_000_000  # one volume or multi-frame file (e.g. 512 x 512 x 2288): 2.4 GB as float32


def check_image_size(size: tuple[int, ...], name: str) -> None:
    """Raises ValueError when a 2D image declares more than MAX_PIXELS pixels."""
    pixels = int(np.prod([int(s) for s in size], dtype=np.float64))
    if pixels > MAX_PIXELS:
        raise ValueError(f"{name} declares {' x '.join(str(int(s)) for s in size)} pixels, over the limit of "
                         f"{MAX_PIXELS:,}")


def check_volume_size(shape: tuple[int, ...], name: str) -> None:
    """Raises ValueError when a volume declares more than MAX_VOXELS values."""
    values = float(np.prod([max(int(s), 1) for s in shape], dtype=np.float64))
    if values > MAX_VOXELS:
        raise ValueError(f"{name} declares {' x '.join(str(int(s)) for s in shape)} values, over the limit of "
                         f"{MAX_VOXELS:,}")


def finite(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN and infinities set to the lowest finite value (the background):
    parametric maps, ADC and PET exports and registered volumes often hold NaN outside the
    anatomy, and one NaN turns a whole scaled image, and a training batch, into NaN."""
    good = np.isfinite(values)
    if good.all():
        return values
    fill = float(values[good].min()) if good.any() else 0.0
    return np.where(good, values, fill).astype(values.dtype, copy=False)


def _percentile_scale(image: np.ndarray) -> np.ndarray:
    image = finite(image)
    low, high = np.percentile(image, [1, 99])
    if high <= low:
        high = low + 1.0
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _first(value: object) -> float:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def open_dicom(path: Path) -> Any:
    """A DICOM file with its pixels ready to decode, old headerless (ACR-NEMA style) files included:
    those lack the meta group and often the photometric interpretation, which are filled in
    with the only values they can have (implicit VR little endian; grey, black is low)."""
    import pydicom

    ds = pydicom.dcmread(path, force=True)
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        ds.file_meta = meta if meta is not None else pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    if "PixelData" in ds and "SamplesPerPixel" not in ds:
        ds.SamplesPerPixel = 1
    if "PixelData" in ds and "PhotometricInterpretation" not in ds and ds.SamplesPerPixel == 1:
        ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def simpleitk() -> Any:
    """SimpleITK with ITK's warnings off: ITK writes them straight to the terminal, through the
    progress bars, once a file (an Analyze header is "deprecated" on every read)."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk


def is_palette(ds: Any) -> bool:
    return str(ds.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR"


def palette_rgb(indices: np.ndarray, ds: Any) -> np.ndarray:
    """A PALETTE COLOR image's colours, (y, x, 3) in [0, 1]. Its stored values are indices into
    the palette (a Doppler ultrasound's colour map, say), not brightness: read as grey they
    scramble the picture."""
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(indices, ds)
    top = float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "ui" else 1.0
    return np.clip(rgb.astype(np.float32) / top, 0.0, 1.0)


def read_dicom_2d(path: Path, colour: bool = False) -> np.ndarray:
    """One DICOM image in [0, 1]: grey (y, x); with ``colour``, a colour one (RGB, e.g.
    dermoscopy, endoscopy, slide microscopy) as (y, x, 3) and a grey one repeated three times."""
    from pydicom.pixels import apply_modality_lut

    ds = open_dicom(path)
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(float(ds.get("NumberOfFrames", 1) or 1))
    check_volume_size((rows, columns, frames, int(ds.get("SamplesPerPixel", 1) or 1)), path.name)
    pixels = ds.pixel_array
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if pixels.ndim == 3 + (samples > 1):
        pixels = pixels[len(pixels) // 2]  # multi-frame: the middle frame
    if is_palette(ds):  # colours already: no rescale or window applies to them
        rgb = palette_rgb(pixels, ds)
        return rgb if colour else rgb.mean(axis=-1)
    if samples > 1 and colour:  # pydicom gives colour as RGB
        rgb = pixels.astype(np.float32) / float(np.iinfo(pixels.dtype).max if pixels.dtype.kind in "ui" else 1.0)
        return np.clip(rgb, 0.0, 1.0)
    if samples > 1:
        pixels = pixels.mean(axis=-1)  # grey: luminance-ish
    values = finite(apply_modality_lut(pixels, ds).astype(np.float32))
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
    return as_colour(image) if colour else image


def as_colour(image: np.ndarray) -> np.ndarray:
    """A grey (y, x) image as (y, x, 3); a colour one as it is."""
    return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)


def upright(image: Any) -> Any:
    """A PIL image turned as its EXIF orientation says (a phone's photo of a film is often
    stored sideways with a tag to turn it), as every viewer shows it."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(image) if image.getexif().get(0x0112, 1) != 1 else image


def read_plain_2d(path: Path, colour: bool = False) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as opened:
        check_image_size(opened.size, path.name)
        img = upright(opened)
        if img.mode in ("I;16", "I;16B", "I", "F"):
            grey = _percentile_scale(np.asarray(img, dtype=np.float32))
            return as_colour(grey) if colour else grey
        return np.asarray(img.convert("RGB" if colour else "L"), dtype=np.float32) / 255.0


def read_volume(path: Path) -> np.ndarray:
    """A volume as (z, y, x) float32: a 2D file (an MHA or NRRD of one slice) as one slice, a
    4D one (a time series) by its first volume, vector pixels (RGB) by their mean."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        loaded = nib.load(path)
        check_volume_size(loaded.shape, path.name)
        if len(loaded.shape) < 3:  # one slice: nothing to orient
            data = np.asarray(loaded.dataobj, dtype=np.float32)[..., None]
        else:
            data = np.asarray(nib.as_closest_canonical(loaded).dataobj, dtype=np.float32)  # RAS: last axis axial
        while data.ndim > 3:
            data = data[..., 0]
        return finite(np.transpose(data, (2, 1, 0)))
    sitk = simpleitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    check_volume_size((*reader.GetSize(), reader.GetNumberOfComponents()), path.name)
    array = sitk.GetArrayFromImage(reader.Execute()).astype(np.float32)
    if reader.GetNumberOfComponents() > 1:
        array = array.mean(axis=-1)
    if reader.GetDimension() == 2:
        return finite(array[None])  # read as a row of a volume, it became stripes
    while array.ndim > 3:
        array = array[0]
    return finite(array)


def load_2d(path: Path, kind: str, colour: bool = False) -> np.ndarray:
    """The 2D image a 2D model sees for one dataset row: (y, x), or with ``colour`` (y, x, 3)
    (grey images repeated, so a colour model takes the grey images of a mixed folder too).

    Raises:
        DatasetError: the file is missing or cannot be decoded.
    """
    try:
        if kind == "volume":
            volume = read_volume(path)
            grey = _percentile_scale(volume[volume.shape[0] // 2])
            return as_colour(grey) if colour else grey
        if kind == "dicom_series":
            return read_dicom_2d(path, colour)
        return read_plain_2d(path, colour)
    except FileNotFoundError as err:
        raise DatasetError(f"{path} is missing. Was the raw data moved? Run Organize again.") from err
    except Exception as err:
        raise DatasetError(f"{path} cannot be read ({type(err).__name__}: {err}).") from err


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """A (y, x) image resized (bilinear) to (size, size); a (y, x, c) one channel by channel."""
    from PIL import Image

    if image.ndim == 3:
        return np.stack([resize(image[..., c], size) for c in range(image.shape[-1])], axis=-1)
    if image.shape == (size, size):
        return image.astype(np.float32)
    resized = Image.fromarray(image.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def resize_many(images: np.ndarray, size: int, chunk: int = 2048) -> np.ndarray:
    """A stack of same-sized images, (N, y, x) or (N, y, x, 3), each resized as ``resize``
    does, channels first: (N, 1 or 3, size, size).

    Torch's bilinear interpolation with antialiasing computes what Pillow's BILINEAR does
    (its filter widens the same way when shrinking; within 2e-6 on 28, 100 x 80 and 224 px
    images, tested), six times as fast on a stack of 28 px colour images as one call per
    image and channel: a MedMNIST split of 90,000 images is resized in seconds.
    """
    import torch

    colour = images.ndim == 4
    out = np.empty((len(images), images.shape[3] if colour else 1, size, size), np.float32)
    for start in range(0, len(images), chunk):
        part = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk], dtype=np.float32))
        part = part.permute(0, 3, 1, 2).contiguous() if colour else part[:, None]
        out[start : start + chunk] = torch.nn.functional.interpolate(
            part, size=(size, size), mode="bilinear", align_corners=False, antialias=True).numpy()
    return out
