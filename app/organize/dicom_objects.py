"""DICOM objects that are not images: what they are, and what SEG and RTSTRUCT say of a series.

A segmentation (SEG) or an RT structure set (RTSTRUCT) is never an item of its own; it
marks up the series it references. When it outlines a lesion (a SEG segment of category
"Morphologically Altered Structure", an RTSTRUCT ROI interpreted as GTV/CTV/PTV) it is a
label source for that series; an organ outline says nothing of disease and labels nothing.
Every other non-image object (SR, KO, PR, RAW, registrations, documents, waveforms,
DICOMDIR) is skipped with its own reason.
"""

from __future__ import annotations

import re
from typing import Any

from app.organize.detect import LABEL_NAMES

# SOP Class UIDs (PS3.4 Annex B) of objects that hold no image this tool reads.
NOT_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.88.59": "KO",
    "1.2.840.10008.5.1.4.1.1.66": "RAW",
    "1.2.840.10008.5.1.4.1.1.66.1": "REG", "1.2.840.10008.5.1.4.1.1.66.3": "REG",
    "1.2.840.10008.5.1.4.1.1.66.2": "FID", "1.2.840.10008.5.1.4.1.1.66.5": "SEG",
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE", "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.104.1": "DOC", "1.2.840.10008.5.1.4.1.1.104.2": "DOC",
    "1.2.840.10008.1.3.10": "DICOMDIR",
}
NOT_IMAGE_PREFIXES = {
    "1.2.840.10008.5.1.4.1.1.88.": "SR", "1.2.840.10008.5.1.4.1.1.11.": "PR",
    "1.2.840.10008.5.1.4.1.1.9.": "ECG", "1.2.840.10008.5.1.4.1.1.481.": "RT",
    "1.2.840.10008.5.1.4.1.1.104.": "DOC",
}
NOT_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "SR", "KO", "PR", "REG", "RTPLAN", "RTDOSE", "RTRECORD", "DOC",
                        "ECG", "FID", "RWV", "PLAN"}
WHAT = {
    "SEG": "a segmentation (SEG)", "RTSTRUCT": "an RT structure set (RTSTRUCT)",
    "SR": "a structured report (SR)", "KO": "a key object selection (KO)", "PR": "a presentation state (PR)",
    "RAW": "raw data (RAW)", "REG": "a registration (REG)", "FID": "spatial fiducials",
    "RTDOSE": "an RT dose grid", "RTPLAN": "an RT plan", "RT": "an RT object", "DOC": "an encapsulated document",
    "ECG": "a waveform", "DICOMDIR": "a DICOMDIR (the index of a disc's files)",
    "SCREEN": "a screen capture (a dose report, a protocol page)",
}
# Pages a scanner stores beside the images as secondary captures, under the study's modality
# (a CT dose report is Modality CT): text, not anatomy. Only a secondary capture is judged by
# its words; an image stored as one (an MR exported as SC, "Axial_T1") stays an image.
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame kinds, .7.1 to .7.4
SCREEN_WORDS = re.compile(r"\b(DOSE|SCREEN ?SAVE|SCREENSHOT|PROTOCOL|REPORT)\b")
ANNOTATIONS = ("SEG", "RTSTRUCT")
LESION_CATEGORIES = {"49755003", "M-01000"}  # SNOMED CT / SRT: Morphologically Altered Structure
TUMOR_VOLUMES = {"GTV", "CTV", "PTV"}


def not_an_image(sop_class: str | None, modality: str | None) -> str | None:
    """What kind of non-image object this is (a key of WHAT), or None for an image."""
    uid = (sop_class or "").strip()
    if uid in NOT_IMAGES:
        return NOT_IMAGES[uid]
    kind = next((k for prefix, k in NOT_IMAGE_PREFIXES.items() if uid.startswith(prefix)), None)
    if kind:
        return kind
    modality = (modality or "").strip().upper()
    return modality if modality in NOT_IMAGE_MODALITIES else None


def is_screen_capture(sop_class: str | None, image_type: str | None, series_description: str | None) -> bool:
    """A dose report, protocol page or screen save: a secondary capture whose image type or
    series description says so."""
    uid = (sop_class or "").strip()
    if uid != SECONDARY_CAPTURE and not uid.startswith(SECONDARY_CAPTURE + "."):
        return False
    return bool(SCREEN_WORDS.search(f"{image_type or ''} {series_description or ''}".upper().replace("\\", " ")))


def skip_reason(kind: str) -> str:
    return f"{WHAT.get(kind, 'a ' + kind + ' object')}, not an image"


def _words(meaning: str) -> str:
    return re.sub(r"[^a-z0-9]", "", meaning.lower())


def annotation_facts(ds: Any, kind: str) -> tuple[list[str], str]:
    """The series a SEG or RTSTRUCT marks up (their UIDs) and the lesion it outlines: a
    coded type's name (e.g. "Mass", "Neoplasm"), "lesion" when uncoded, "" for organs only."""
    series, lesion = [], ""
    if kind == "SEG":
        for ref in ds.get("ReferencedSeriesSequence", []):
            if ref.get("SeriesInstanceUID"):
                series.append(str(ref.SeriesInstanceUID))
        for segment in ds.get("SegmentSequence", []):
            category = segment.get("SegmentedPropertyCategoryCodeSequence", [])
            if not category or str(category[0].get("CodeValue", "")) not in LESION_CATEGORIES:
                continue
            kinds = segment.get("SegmentedPropertyTypeCodeSequence", [])
            name = _words(str(kinds[0].get("CodeMeaning", ""))) if kinds else ""
            lesion = lesion or (name if name in LABEL_NAMES else "lesion")  # a coded name; nothing else is kept
    else:
        for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
            for study in frame.get("RTReferencedStudySequence", []):
                for ref in study.get("RTReferencedSeriesSequence", []):
                    if ref.get("SeriesInstanceUID"):
                        series.append(str(ref.SeriesInstanceUID))
        for roi in ds.get("RTROIObservationsSequence", []):
            if str(roi.get("RTROIInterpretedType", "")).upper() in TUMOR_VOLUMES:
                lesion = "tumor"
    return series, lesion or ""
