"""DICOM objects that are not images: never items; SEG and RTSTRUCT label the series they outline."""

from __future__ import annotations

import json
from pathlib import Path

from app.organize.organizer import organize, read_rows
from tests.app.organize.layouts import dicom
from tests.conftest import placed


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _object(path: Path, sop_class: str, modality: str, **elements) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.SeriesInstanceUID = modality, "P1", generate_uid()
    for key, value in elements.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _seg(path: Path, series: str, category: tuple[str, str, str], kind: tuple[str, str, str]) -> None:
    from pydicom.dataset import Dataset

    ref, segment = Dataset(), Dataset()
    ref.SeriesInstanceUID = series
    segment.SegmentNumber, segment.SegmentLabel = 1, "whatever the reader typed"
    segment.SegmentedPropertyCategoryCodeSequence = [_code(*category)]
    segment.SegmentedPropertyTypeCodeSequence = [_code(*kind)]
    _object(path, "1.2.840.10008.5.1.4.1.1.66.4", "SEG", ReferencedSeriesSequence=[ref], SegmentSequence=[segment])


def _rtstruct(path: Path, series: str, interpreted: str) -> None:
    from pydicom.dataset import Dataset

    ref_series, study, frame, roi = Dataset(), Dataset(), Dataset(), Dataset()
    ref_series.SeriesInstanceUID = series
    study.RTReferencedSeriesSequence = [ref_series]
    frame.RTReferencedStudySequence = [study]
    roi.ObservationNumber, roi.ReferencedROINumber, roi.RTROIInterpretedType = 1, 1, interpreted
    _object(path, "1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", ReferencedFrameOfReferenceSequence=[frame],
            RTROIObservationsSequence=[roi])


def _series(folder: Path, series: str, patient: str) -> None:
    for k in range(3):
        dicom(folder / f"slice{k}.dcm", modality="CT", patient=patient, body_part="LIVER", series=series,
              position=float(k))


def test_non_image_objects_are_never_items_and_seg_rtstruct_label_their_series(ws, tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    lesion_series, organ_series, gtv_series = generate_uid(), generate_uid(), generate_uid()
    root = tmp_path / "export"
    _series(root / "study1" / "ct", lesion_series, "P1")
    _seg(root / "study1" / "seg" / "liver_tumor.dcm", lesion_series,
         ("49755003", "SCT", "Morphologically Altered Structure"), ("108369006", "SCT", "Neoplasm"))
    _series(root / "study2" / "ct", organ_series, "P2")
    _seg(root / "study2" / "seg" / "liver.dcm", organ_series, ("123037004", "SCT", "Anatomical Structure"),
         ("10200004", "SCT", "Liver"))
    _series(root / "study3" / "ct", gtv_series, "P3")
    _rtstruct(root / "study3" / "rt" / "rtss.dcm", gtv_series, "GTV")
    _object(root / "study1" / "sr" / "report.dcm", "1.2.840.10008.5.1.4.1.1.88.22", "SR")
    _object(root / "study1" / "pr" / "state.dcm", "1.2.840.10008.5.1.4.1.1.11.1", "PR")
    _object(root / "study1" / "ko" / "key.dcm", "1.2.840.10008.5.1.4.1.1.88.59", "KO")
    (root / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)

    result = organize(ws, root, "objects", workers=1)
    out = ws.organized_path("objects")
    rows = {Path(r["path"]).parts[-3]: r for r in placed(ws, read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv"))}
    assert result.items == 3 and set(rows) == {"study1", "study2", "study3"}, "three CT series, nothing else"
    assert {k: r["n_files"] for k, r in rows.items()} == {"study1": 3, "study2": 3, "study3": 3}
    assert (rows["study1"]["label"], rows["study1"]["source_label"], rows["study1"]["label_rule"]) == (
        "tumor", "neoplasm", "dicom_seg_or_rtstruct")
    assert (rows["study2"]["labeled"], rows["study2"]["annotations"]) == (False, "SEG"), "an organ says nothing of disease"
    assert (rows["study3"]["label"], rows["study3"]["annotations"]) == ("tumor", "RTSTRUCT")
    assert result.skip_reasons == {
        "a structured report (SR), not an image": 1, "a presentation state (PR), not an image": 1,
        "a key object selection (KO), not an image": 1, "a DICOMDIR (the index of a disc's files), not an image": 1}
    report = json.loads((out / "scan_report.json").read_text())
    assert len(report["skipped"]) == 4 and all(set(s) == {"item", "reason"} for s in report["skipped"])
    assert "whatever the reader typed" not in "".join(p.read_text() for p in out.rglob("*.*sv")), "free text stays out"


def test_a_dose_report_page_is_set_aside_but_an_image_stored_as_a_capture_is_kept(ws, tmp_path: Path) -> None:
    """A CT study from a hospital holds its dose report as a secondary capture with Modality CT:
    a page of text, once organized (and labelled by its folder) as a CT image. An MR exported
    as a secondary capture (OsiriX's 'Axial_T1') is an image and stays one."""
    import numpy as np

    root = tmp_path / "hemorrhage"
    pixels = dict(Rows=32, Columns=32, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
                  SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2")
    page = (np.arange(32 * 32) % 251).astype(np.uint8).tobytes()
    _object(root / "study1" / "dose" / "1.dcm", "1.2.840.10008.5.1.4.1.1.7", "CT", SeriesDescription="Dose Report",
            PixelData=page, **pixels)
    _object(root / "study1" / "screen" / "1.dcm", "1.2.840.10008.5.1.4.1.1.7", "CT",
            ImageType=["DERIVED", "SECONDARY", "SCREEN SAVE"], PixelData=page[::-1], **pixels)
    _object(root / "study2" / "t1" / "1.dcm", "1.2.840.10008.5.1.4.1.1.7", "MR", SeriesDescription="Axial_T1",
            PixelData=bytes(reversed(page[:512])) + page[512:], **pixels)
    result = organize(ws, root, "captures", workers=1)
    assert result.items == 1 and result.skip_reasons == {
        "a screen capture (a dose report, a protocol page), not an image": 2}
