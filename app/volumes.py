"""3D volumes: read (SimpleITK), orient, resample, normalize, crop.

Every volume is read as a SimpleITK image so spacing, origin and direction travel
with the voxels; it is turned to one orientation (LPS, DICOM's patient axes) and
resampled to a target spacing before any array is taken out, in (z, y, x) order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import DatasetError

# Target spacing (mm, x y z) and intensity handling per modality.
SPACING = {"CT": (1.0, 1.0, 1.0), "MR": (1.0, 1.0, 1.0)}
CT_WINDOW = (-1000.0, 1000.0)  # Hounsfield units mapped to [0, 1]: air to dense bone
ORIENTATION = "LPS"


@dataclass
class Volume:
    """A volume ready for cubes: float32 (z, y, x) in [0, 1], with its geometry."""

    array: np.ndarray
    spacing: tuple[float, float, float]  # x, y, z (mm)
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    image: Any  # the SimpleITK image the array came from (after orientation and resampling)
    source: Any = None  # the image as read, before orientation and resampling

    def file_voxel_to_voxel(self, ijk: tuple[float, float, float]) -> tuple[float, float, float]:
        """A voxel index (i, j, k) of the file as read -> continuous (z, y, x) index of ``array``."""
        world = self.source.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk])
        return self.world_to_voxel(world)

    def world_to_voxel(self, point_xyz: tuple[float, float, float]) -> tuple[float, float, float]:
        """A world (patient) point in mm -> continuous (z, y, x) voxel index of ``array``."""
        x, y, z = self.image.TransformPhysicalPointToContinuousIndex([float(v) for v in point_xyz])
        return (z, y, x)


def dicom_series_ids(folder: Path) -> list[str]:
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def series_containing(file: Path) -> tuple[Path, str | None]:
    """(folder, series id) of the DICOM series that holds ``file``, as SimpleITK names it."""
    import SimpleITK as sitk

    folder = file.parent
    for series in dicom_series_ids(folder):
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series)
        if any(Path(n).resolve() == file.resolve() for n in names):
            return folder, series
    return folder, None


def read_image(path: Path, series_id: str | None = None) -> Any:
    """A SimpleITK image from a DICOM series folder (the given or the largest series),
    a single DICOM file, NIfTI, MHA/MHD or NRRD.

    Raises:
        DatasetError: nothing readable there.
    """
    import SimpleITK as sitk

    path = Path(path)
    try:
        if path.is_dir():
            ids = dicom_series_ids(path)
            if not ids:
                raise DatasetError(f"{path} holds no DICOM series.")
            reader = sitk.ImageSeriesReader()
            if series_id is None:  # several series in one folder: the one with most slices
                series_id = max(ids, key=lambda s: len(reader.GetGDCMSeriesFileNames(str(path), s)))
            elif series_id not in ids:
                raise DatasetError(f"{path} has no series {series_id}; it has {len(ids)} other(s).")
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series_id))
            return reader.Execute()
        if not path.exists():
            raise DatasetError(f"{path} does not exist.")
        return sitk.ReadImage(str(path))
    except DatasetError:
        raise
    except Exception as err:
        raise DatasetError(f"{path} cannot be read as a volume ({type(err).__name__}: {str(err)[:160]}).") from err


def resample(image: Any, spacing: tuple[float, float, float], *, label: bool = False) -> Any:
    """``image`` on a grid of ``spacing`` (mm) covering the same extent (linear, or nearest for labels)."""
    import SimpleITK as sitk

    old_spacing, old_size = image.GetSpacing(), image.GetSize()
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(old_size, old_spacing, spacing)]
    return sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
        image.GetOrigin(), spacing, image.GetDirection(), float(np.min(sitk.GetArrayViewFromImage(image))),
        image.GetPixelID(),
    )


def normalize(array: np.ndarray, modality: str) -> np.ndarray:
    """CT: Hounsfield window to [0, 1]; anything else: 1st-99th percentile scaling."""
    array = array.astype(np.float32)
    if modality == "CT":
        low, high = CT_WINDOW
    else:
        low, high = np.percentile(array, [1, 99])
        high = high if high > low else low + 1.0
    return np.clip((array - low) / (high - low), 0.0, 1.0).astype(np.float32)


def body_box(array: np.ndarray, threshold: float = 0.05, margin: int = 4) -> tuple[slice, slice, slice]:
    """The bounding box of everything brighter than ``threshold`` (the body or head), with a margin."""
    inside = np.argwhere(array > threshold)
    if len(inside) == 0:
        return tuple(slice(0, n) for n in array.shape)  # type: ignore[return-value]
    low = np.maximum(inside.min(axis=0) - margin, 0)
    high = np.minimum(inside.max(axis=0) + margin + 1, array.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))  # type: ignore[return-value]


def load_volume(path: Path, modality: str, *, series_id: str | None = None,
                spacing: tuple[float, float, float] | None = None, crop: bool = False) -> Volume:
    """Read, orient (LPS), resample to the modality's spacing, normalize; optionally crop to the body.

    Cropping changes the array, not the image: world points must be converted with
    ``world_to_voxel`` before cropping, or use ``crop=False`` (the default).
    """
    import SimpleITK as sitk

    image = source = read_image(path, series_id)
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise DatasetError(f"{path} is {image.GetDimension()}D, not a volume.")
    if image.GetNumberOfComponentsPerPixel() > 1:
        image = sitk.VectorIndexSelectionCast(image, 0)
    image = sitk.DICOMOrient(image, ORIENTATION)
    image = resample(image, spacing or SPACING.get(modality, (1.0, 1.0, 1.0)))
    array = normalize(sitk.GetArrayFromImage(image), modality)
    if crop:
        array = array[body_box(array)]
    if source.GetDimension() != 3 or source.GetNumberOfComponentsPerPixel() > 1:
        source = image  # 4D or vector files: indices refer to the first 3D component
    return Volume(array, tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()), image,
                  source)
