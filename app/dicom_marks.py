"""Where a DICOM SEG or RTSTRUCT puts its lesions: points in patient coordinates, per series.

A segmentation or an RT structure set marks up the image series it references (see
app.organize.dicom_objects). For the 3D phase it is a mask source: every connected
lesion of a SEG segment of category "Morphologically Altered Structure", and every
RTSTRUCT ROI interpreted as a tumour volume (GTV, CTV, PTV), gives one positive point
(its centroid, in mm), which the cube builder converts to the series' voxels. Organ
outlines give none: they say nothing of disease.

Everything is read from the objects' own geometry (plane positions and orientation,
pixel spacing), so a point is right however the series is later oriented or resampled.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from app.organize.dicom_objects import LESION_CATEGORIES, TUMOR_VOLUMES, not_an_image

World = tuple[float, float, float]


def lesion_points(root: Path) -> tuple[dict[str, list[World]], list[str]]:
    """Every lesion point of every SEG and RTSTRUCT under ``root``, by the SeriesInstanceUID they
    reference, and one line for each object that could not be read (its file name and why)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    points: dict[str, list[World]] = defaultdict(list)
    problems = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        try:
            head = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue  # not DICOM: nothing to mark up
        kind = not_an_image(str(head.get("SOPClassUID", "")), str(head.get("Modality", "")))
        if kind not in ("SEG", "RTSTRUCT"):
            continue
        try:
            ds = pydicom.dcmread(path, force=True)
            found = seg_points(ds) if kind == "SEG" else rtstruct_points(ds)
        except Exception as error:  # a malformed object: reported, the rest still counts
            problems.append(f"{path.name}: {kind} not read ({error or type(error).__name__})")
            continue
        for series, world in found:
            points[series].append(world)
    return dict(points), problems


def _referenced_series(ds: Any) -> list[str]:
    return [str(ref.SeriesInstanceUID) for ref in ds.get("ReferencedSeriesSequence", [])
            if ref.get("SeriesInstanceUID")]


def _item(frame: Any, shared: Any, sequence: str) -> Any:
    """The functional group ``sequence`` of a frame, or of all frames (shared), else None."""
    for group in (frame, shared):
        if group is not None and group.get(sequence):
            return group.get(sequence)[0]
    return None


def _lesion_segments(ds: Any) -> set[int]:
    lesions = set()
    for segment in ds.get("SegmentSequence", []):
        category = segment.get("SegmentedPropertyCategoryCodeSequence", [])
        if category and str(category[0].get("CodeValue", "")) in LESION_CATEGORIES:
            lesions.add(int(segment.SegmentNumber))
    return lesions


def seg_points(ds: Any) -> list[tuple[str, World]]:
    """(referenced series, centroid in mm) of every connected lesion of a SEG's lesion segments."""
    from scipy import ndimage

    lesions, series = _lesion_segments(ds), _referenced_series(ds)
    if not lesions or not series:
        return []
    frames = np.asarray(ds.pixel_array)
    frames = frames.reshape(-1, int(ds.Rows), int(ds.Columns))
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        frames = frames > float(ds.get("MaximumFractionalValue", 255)) / 2
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    by_segment: dict[int, list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]] = defaultdict(list)
    for k, frame in enumerate(per_frame):
        segment = _item(frame, shared, "SegmentIdentificationSequence")
        number = int(segment.ReferencedSegmentNumber) if segment is not None else 1
        if number not in lesions or not frames[k].any():
            continue
        position = np.array(_item(frame, shared, "PlanePositionSequence").ImagePositionPatient, float)
        orientation = np.array(_item(frame, shared, "PlaneOrientationSequence").ImageOrientationPatient, float)
        spacing = np.array(_item(frame, shared, "PixelMeasuresSequence").PixelSpacing, float)
        by_segment[number].append((k, position, orientation, spacing))
    found = []
    for number, planes in by_segment.items():
        row_dir, col_dir = planes[0][2][:3], planes[0][2][3:]
        normal = np.cross(row_dir, col_dir)
        depth = np.array([float(position @ normal) for _, position, _, _ in planes])
        steps = np.diff(np.unique(np.round(depth, 3)))
        step = float(steps.min()) if len(steps) else 1.0
        slots = np.round((depth - depth.min()) / step).astype(int)
        stack = np.zeros((int(slots.max()) + 1, frames.shape[1], frames.shape[2]), bool)
        for slot, (k, *_rest) in zip(slots, planes):
            stack[slot] |= frames[k] > 0  # frames apart by a gap stay apart: separate lesions
        origin = planes[int(np.argmin(depth))][1]
        row_spacing, col_spacing = planes[0][3]
        labels, count = ndimage.label(stack)
        for s, r, c in ndimage.center_of_mass(stack, labels, range(1, count + 1)):
            world = origin + s * step * normal + c * col_spacing * row_dir + r * row_spacing * col_dir
            found.extend((uid, (float(world[0]), float(world[1]), float(world[2]))) for uid in series)
    return found


def rtstruct_points(ds: Any) -> list[tuple[str, World]]:
    """(referenced series, centroid in mm of its contour points) of every tumour-volume ROI."""
    tumours = {int(roi.ReferencedROINumber) for roi in ds.get("RTROIObservationsSequence", [])
               if str(roi.get("RTROIInterpretedType", "")).upper() in TUMOR_VOLUMES}
    series = [str(ref.SeriesInstanceUID)
              for frame in ds.get("ReferencedFrameOfReferenceSequence", [])
              for study in frame.get("RTReferencedStudySequence", [])
              for ref in study.get("RTReferencedSeriesSequence", []) if ref.get("SeriesInstanceUID")]
    found = []
    for roi in ds.get("ROIContourSequence", []):
        if int(roi.get("ReferencedROINumber", -1)) not in tumours:
            continue
        xyz = [np.asarray(contour.ContourData, float).reshape(-1, 3) for contour in roi.get("ContourSequence", [])
               if contour.get("ContourData")]
        if xyz:
            centre = np.concatenate(xyz).mean(axis=0)
            found.extend((uid, (float(centre[0]), float(centre[1]), float(centre[2]))) for uid in series)
    return found


def is_image_series(first_file: Path) -> bool:
    """Whether a DICOM series (its first file) holds images: a SEG or RTSTRUCT is a series too."""
    import pydicom

    try:
        head = pydicom.dcmread(first_file, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:
        return True  # the reader decides
    return not_an_image(str(head.get("SOPClassUID", "")), str(head.get("Modality", ""))) is None
