"""SEG and RTSTRUCT objects as lesion sources for the 3D phase: their points land on the lesions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.dicom_marks import lesion_points

SHAPE = (12, 40, 48)  # slices, rows, columns
PIXEL_MM, SLICE_MM = 1.5, 2.5
# A patient lying prone: rows run to the patient's left, columns towards the back, slices footward.
ORIENTATION = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
ORIGIN = np.array([100.0, -40.0, 30.0])
LESIONS = [(3, 10, 12), (8, 28, 34)]  # (slice, row, column) centres of two bright blobs
ORGAN = (6, 20, 40)


def _world(k: float, r: float, c: float) -> np.ndarray:
    row_dir, col_dir = np.array(ORIENTATION[:3]), np.array(ORIENTATION[3:])
    normal = np.cross(row_dir, col_dir)
    return ORIGIN + c * PIXEL_MM * row_dir + r * PIXEL_MM * col_dir + k * SLICE_MM * normal


def _blob(volume: np.ndarray, centre: tuple[int, int, int], value) -> None:
    k, r, c = centre
    volume[k - 1 : k + 2, r - 2 : r + 3, c - 2 : c + 3] = value


def _ct_series(folder: Path, patient: str) -> list:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    pixels = np.zeros(SHAPE, np.int16)
    for centre in LESIONS:
        _blob(pixels, centre, 400)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    slices = []
    for k in range(SHAPE[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"s{k:02d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", patient, "TEST^PATIENT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber, ds.StudyID, ds.AccessionNumber = 1, k + 1, "1", "1"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "", "O", "", "", ""
        ds.ImageOrientationPatient = ORIENTATION
        ds.ImagePositionPatient = [float(v) for v in _world(k, 0, 0)]
        ds.PixelSpacing, ds.SliceThickness = [PIXEL_MM, PIXEL_MM], SLICE_MM
        ds.Rows, ds.Columns = SHAPE[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1000, 1, "HU"
        ds.PixelData = (pixels[k] + 1000).astype(np.int16).tobytes()
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"s{k:02d}.dcm", enforce_file_format=True)
        slices.append(ds)
    return slices


def _seg(folder: Path, slices: list) -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    mask = np.zeros((*SHAPE, 2), np.uint8)  # segment 1: the lesions; segment 2: an organ
    for centre in LESIONS:
        _blob(mask[..., 0], centre, 1)
    _blob(mask[..., 1], ORGAN, 1)
    algorithm = hd.AlgorithmIdentificationSequence(name="test", version="1", family=codes.cid7162.ArtificialIntelligence)
    segments = [
        hd.seg.SegmentDescription(1, "lesions", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm,
                                  hd.seg.SegmentAlgorithmTypeValues.MANUAL),
        hd.seg.SegmentDescription(2, "liver", codes.SCT.Organ, codes.SCT.Liver,
                                  hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm),
    ]
    seg = hd.seg.Segmentation(slices, mask, hd.seg.SegmentationTypeValues.BINARY, segments, generate_uid(), 2,
                              generate_uid(), 1, "test", "test", "1", "1")
    folder.mkdir(parents=True, exist_ok=True)
    seg.save_as(folder / "segmentation.dcm")


def _rtstruct(path: Path, slices: list, roi_types: dict[int, str], centre: tuple[int, int, int]) -> None:
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RTStructureSetStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTStructureSetStorage, meta.MediaStorageSOPInstanceUID, "RTSTRUCT"
    ds.PatientID, ds.SeriesInstanceUID = slices[0].PatientID, generate_uid()
    ref_series, study, frame = Dataset(), Dataset(), Dataset()
    ref_series.SeriesInstanceUID = slices[0].SeriesInstanceUID
    study.RTReferencedSeriesSequence = [ref_series]
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    observations, contours = [], []
    k, r, c = centre
    for number, kind in roi_types.items():
        observation, roi = Dataset(), Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType = kind
        observations.append(observation)
        roi.ReferencedROINumber, roi.ContourSequence = number, []
        for dk in (-1, 0, 1):  # a square of 4 pixels' half side on three slices
            contour = Dataset()
            corners = [_world(k + dk, r + dr, c + dc) for dr, dc in ((-4, -4), (-4, 4), (4, 4), (4, -4))]
            contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", 4
            contour.ContourData = [float(v) for point in corners for v in point]
            roi.ContourSequence.append(contour)
        contours.append(roi)
    ds.RTROIObservationsSequence, ds.ROIContourSequence = observations, contours
    ds.save_as(path, enforce_file_format=True)


def test_seg_lesions_and_rtstruct_tumour_volumes_give_world_points_and_organs_none(tmp_path: Path) -> None:
    slices = _ct_series(tmp_path / "ct", "P1")
    _seg(tmp_path / "ct", slices)
    _rtstruct(tmp_path / "rt.dcm", slices, {1: "GTV", 2: "ORGAN"}, ORGAN)
    points, problems = lesion_points(tmp_path)
    assert problems == []
    assert list(points) == [slices[0].SeriesInstanceUID]
    found = sorted(tuple(round(v, 1) for v in p) for p in points[slices[0].SeriesInstanceUID])
    expected = sorted(tuple(round(float(v), 1) for v in _world(*centre)) for centre in [*LESIONS, ORGAN])
    assert found == expected, "two SEG lesions and the GTV's centre; the SEG organ and the ORGAN ROI give none"


def test_a_cube_dataset_from_dicom_series_takes_its_positives_from_seg_and_rtstruct(ws, tmp_path: Path) -> None:
    from app.cubes import SIZE, build_cube_dataset, find_volumes
    from app.volumes import load_volume

    source = tmp_path / "scans"
    for n in range(3):
        slices = _ct_series(source / f"patient{n}", f"P{n}")
        _seg(source / f"patient{n}", slices)
        if n == 0:
            _rtstruct(source / f"patient{n}" / "plan.dcm", slices, {1: "PTV"}, LESIONS[0])
    assert len(find_volumes(source)) == 3, "the SEG and RTSTRUCT are series of their own, not volumes"
    volume = load_volume(source / "patient0", "CT")
    points, _ = lesion_points(source)
    for world in points[slices[0].SeriesInstanceUID]:
        centre = np.round(volume.world_to_voxel(world)).astype(int)
        assert volume.array[tuple(centre)] > 0.5, "each point lands on a bright lesion of the loaded volume"
    result = build_cube_dataset(ws, source, "segcubes", "CT", negatives=1)
    with np.load(ws.data_dir / "cubes" / "segcubes" / "segcubes.npz") as data:
        labels = np.concatenate([data[f"{s}_labels"][:, 0] for s in ("train", "val", "test")])
        assert data["train_images"].shape[1:] == (SIZE,) * 3
    assert int(labels.sum()) == 2 + 2 + 2 + 1, "two SEG lesions per series, and patient0's PTV"
    assert result.items == len(labels)


def test_a_broken_segmentation_stops_the_cube_build_with_what_to_do(ws, tmp_path: Path) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from app.cubes import build_cube_dataset
    from core.errors import DatasetError

    _ct_series(tmp_path / "ct", "P1")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.66.4", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("seg.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, generate_uid(), "SEG"
    from pydicom.dataset import Dataset

    segment, category, ref = Dataset(), Dataset(), Dataset()
    category.CodeValue, category.CodingSchemeDesignator, category.CodeMeaning = "49755003", "SCT", "Lesion"
    segment.SegmentNumber, segment.SegmentedPropertyCategoryCodeSequence = 1, [category]
    ref.SeriesInstanceUID = generate_uid()
    ds.SegmentSequence, ds.ReferencedSeriesSequence = [segment], [ref]  # a lesion segment without pixels
    ds.save_as(tmp_path / "ct" / "seg.dcm", enforce_file_format=True)
    with pytest.raises(DatasetError, match="seg.dcm: SEG not read.*give a points CSV"):
        build_cube_dataset(ws, tmp_path / "ct", "broken", "CT", negatives=1)
    assert not (ws.data_dir / "cubes" / "broken").exists()
