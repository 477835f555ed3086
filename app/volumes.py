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

from core.errors import DatasetError

# Target spacing (mm, x y z) and intensity handling per modality.
SPACING = {"CT": (1.0, 1.0, 1.0), "MR": (1.0, 1.0, 1.0)}
CT_WINDOW = (-1000.0, 1000.0)  # Hounsfield units mapped to [0, 1]: air to dense bone
ORIENTATION = "LPS"


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid sits in the patient: size and spacing (x, y, z), origin, direction."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 3 x 3, row-major, as SimpleITK gives it

    @classmethod
    def of(cls, image: Any) -> "Geometry":
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    def index_to_world(self, ijk: tuple[float, float, float]) -> np.ndarray:
        matrix = np.array(self.direction).reshape(3, 3)
        return np.array(self.origin) + matrix @ (np.array(self.spacing) * np.asarray(ijk, dtype=float))

    def world_to_index(self, point: tuple[float, float, float]) -> np.ndarray:
        matrix = np.array(self.direction).reshape(3, 3)
        return np.linalg.solve(matrix, np.asarray(point, dtype=float) - np.array(self.origin)) / np.array(self.spacing)


@dataclass
class Volume:
    """A volume ready for cubes: float32 (z, y, x) in [0, 1], with its geometry and the file's.

    Only geometry is kept beside the array (no second copy of the voxels).
    """

    array: np.ndarray
    geometry: Geometry  # of ``array`` (oriented, resampled; before any crop)
    source: Geometry  # of the file as read

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    @property
    def direction(self) -> tuple[float, ...]:
        return self.geometry.direction

    def file_voxel_to_voxel(self, ijk: tuple[float, float, float]) -> tuple[float, float, float]:
        """A voxel index (i, j, k) of the file as read -> continuous (z, y, x) index of ``array``."""
        return self.world_to_voxel(tuple(self.source.index_to_world(ijk)))

    def world_to_voxel(self, point_xyz: tuple[float, float, float]) -> tuple[float, float, float]:
        """A world (patient) point in mm -> continuous (z, y, x) voxel index of ``array``."""
        x, y, z = self.geometry.world_to_index(point_xyz)
        return (float(z), float(y), float(x))


def dicom_series_ids(folder: Path) -> list[str]:
    from app.imaging import simpleitk

    sitk = simpleitk()

    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def series_containing(file: Path) -> tuple[Path, str | None]:
    """(folder, series id) of the DICOM series that holds ``file``, as SimpleITK names it."""
    from app.imaging import simpleitk

    sitk = simpleitk()

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
    from app.imaging import simpleitk

    sitk = simpleitk()

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
        from app.imaging import check_volume_size

        single = sitk.ImageFileReader()
        single.SetFileName(str(path))
        single.ReadImageInformation()  # the header only: its size is checked before any voxel is read
        check_volume_size((*single.GetSize(), single.GetNumberOfComponents()), path.name)
        return single.Execute()
    except DatasetError:
        raise
    except Exception as err:
        raise DatasetError(f"{path} cannot be read as a volume ({type(err).__name__}: {str(err)[:160]}).") from err


def resample(image: Any, spacing: tuple[float, float, float], *, label: bool = False) -> Any:
    """``image`` on a grid of ``spacing`` (mm) covering the same extent (linear, or nearest for labels)."""
    from app.imaging import simpleitk

    sitk = simpleitk()

    old_spacing, old_size = image.GetSpacing(), image.GetSize()
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(old_size, old_spacing, spacing)]
    return sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
        image.GetOrigin(), spacing, image.GetDirection(), float(np.min(sitk.GetArrayViewFromImage(image))),
        image.GetPixelID(),
    )


def normalize(array: np.ndarray, modality: str) -> np.ndarray:
    """CT: Hounsfield window to [0, 1]; anything else: 1st-99th percentile scaling.

    Works in place on one float32 copy: a large CT is held once, not four times.
    """
    from app.imaging import finite

    array = finite(array.astype(np.float32))  # the one copy (NaN outside the anatomy: the background)
    if modality == "CT":
        low, high = CT_WINDOW
    else:
        sample = array[:: max(1, array.shape[0] // 64)]  # percentiles from a slab sample: same figures, less memory
        low, high = (float(v) for v in np.percentile(sample, [1, 99]))
        high = high if high > low else low + 1.0
    array -= low
    array /= high - low
    return np.clip(array, 0.0, 1.0, out=array)


def body_box(array: np.ndarray, threshold: float = 0.05, margin: int = 4) -> tuple[slice, slice, slice]:
    """The bounding box of everything brighter than ``threshold`` (the body or head), with a margin.

    Found from the mask's projections on each axis, so a large volume costs one boolean
    mask, not a list of every voxel's coordinates.
    """
    inside = array > threshold
    box = []
    for axis in range(3):
        hits = np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis)))
        if len(hits) == 0:
            return tuple(slice(0, n) for n in array.shape)  # type: ignore[return-value]
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + margin + 1, array.shape[axis])))
    return tuple(box)  # type: ignore[return-value]


def load_volume(path: Path, modality: str, *, series_id: str | None = None,
                spacing: tuple[float, float, float] | None = None, crop: bool = False) -> Volume:
    """Read, orient (LPS), resample to the modality's spacing, normalize; optionally crop to the body.

    Cropping changes the array, not the image: world points must be converted with
    ``world_to_voxel`` before cropping, or use ``crop=False`` (the default).
    """
    from app.imaging import simpleitk

    sitk = simpleitk()

    image = read_image(path, series_id)
    source = Geometry.of(image) if image.GetDimension() == 3 else None
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise DatasetError(f"{path} is {image.GetDimension()}D, not a volume.")
    if image.GetNumberOfComponentsPerPixel() > 1:
        image = sitk.VectorIndexSelectionCast(image, 0)
    source = source or Geometry.of(image)  # 4D files: indices refer to the first 3D component
    image = sitk.DICOMOrient(image, ORIENTATION)
    image = resample(image, spacing or SPACING.get(modality, (1.0, 1.0, 1.0)))
    geometry = Geometry.of(image)
    array = normalize(sitk.GetArrayViewFromImage(image), modality)
    del image
    if crop:
        array = array[body_box(array)]
    return Volume(array, geometry, source)
