"""Detection rules: ordered tables of small pure functions, first hit wins.

A rule is ``(header, path) -> value | None`` where ``header`` is a dict of the
DICOM tags the scanner kept (empty for non-DICOM files). Each table entry carries
the rule's name and a confidence, recorded per item so that a user can see why.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePath
from typing import Any

Header = Mapping[str, Any]
Rule = Callable[[Header, PurePath], str | None]

NORMAL = "normal"
ANOMALY_CLASSES = [
    NORMAL, "tumor", "infection", "hemorrhage", "fracture", "edema",
    "atelectasis", "pneumothorax", "consolidation", "other_anomaly",
]


@dataclass(frozen=True)
class Detected:
    value: str
    rule: str
    confidence: float


@dataclass(frozen=True)
class RuleEntry:
    name: str
    confidence: float
    func: Rule


def detect(table: list[RuleEntry], header: Header, path: PurePath, default: str = "unknown") -> Detected:
    """Run ``table`` in order; the first rule that answers wins."""
    for entry in table:
        value = entry.func(header, path)
        if value:
            return Detected(value, entry.name, entry.confidence)
    return Detected(default, "none", 0.0)


def _fold(text: str) -> str:
    """Upper-case ASCII with accents removed: 'Crâne' -> 'CRANE'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def _tokens(text: str) -> set[str]:
    # "Task01_BrainTumour", "ChestXRay": a capital after a small letter starts a word too
    # (both readings kept: "BraTS" is one word)
    split = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    words = (set(re.split(r"[^A-Z0-9]+", _fold(text))) | set(re.split(r"[^A-Z0-9]+", _fold(split)))) - {""}
    # "Thorax^1HEAD_NECK", "BraTS2021", "LUNG1-001": a number run into a word still names the
    # word (at least three letters left: "T1" and "CT2" keep their own meaning)
    leading = {w.lstrip("0123456789") for w in words if w[:1].isdigit() and w.lstrip("0123456789")}
    trailing = {w.rstrip("0123456789") for w in words if w[-1:].isdigit() and len(w.rstrip("0123456789")) >= 3}
    return words | leading | trailing


def vocabulary_digest() -> str:
    """A short digest of every word a rule here reads: scans cached under another vocabulary
    kept other words of their descriptions, so they are read again."""
    known = sorted(set().union(*MODALITY_WORDS.values(), *REGION_WORDS.values()) | set(BODY_PART_TAGS))
    return hashlib.sha256(" ".join(known).encode()).hexdigest()[:12]


def description_keywords(text: str) -> str:
    """The words of a free-text DICOM description that a rule here reads, and no other: what
    the scanner keeps of StudyDescription, SeriesDescription and ProtocolName (free text can
    hold names and dates, so it is never stored)."""
    known = set().union(*MODALITY_WORDS.values(), *REGION_WORDS.values()) | set(BODY_PART_TAGS)
    return " ".join(sorted(_tokens(text) & known))


def _descriptions(header: Header) -> str:
    keys = ("StudyDescription", "SeriesDescription", "ProtocolName", "BodyPartExamined")
    return " ".join(str(header.get(k, "")) for k in keys)


def _folders(path: PurePath) -> list[str]:
    """Folder names from the nearest to the farthest, then the file name."""
    return [*reversed(path.parent.parts), path.name]


def _named(header: Header, path: PurePath) -> list[str]:
    """The folder and file names, then the name a BIDS dataset_description.json above gives the
    dataset (its words a rule reads, kept by the scanner)."""
    return [*_folders(path), str(header.get("DatasetName", ""))]


# -- modality ----------------------------------------------------------------------
MODALITY_TAGS = {
    "CT": "CT", "MR": "MR", "CR": "XR", "DX": "XR", "DR": "XR", "RG": "XR", "XR": "XR",
    "US": "US", "PT": "PET", "NM": "NM", "MG": "MG", "XA": "XA", "RF": "XR", "OT": "",
    "PX": "XR", "IO": "XR",  # dental: a panoramic and an intra-oral radiograph
}
# Any other of DICOM's modality codes (OPT, OP, ES, SM, XC, DMS...) is kept as it is written: the
# scanner's own word outranks a guess from folder names; these are not images, nor modalities.
NOT_MODALITIES = {"SC", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "KO", "PR", "REG", "DOC", "AU",
                  "ECG", "HD", "PLAN", "FID"}
MODALITY_WORDS = {
    "CT": {"CT", "CTA", "CCT", "SCANNER", "TOMODENSITOMETRIE"},
    "MR": {"MR", "MRI", "MRA", "IRM", "MRT", "T1", "T2", "T1W", "T2W", "FLAIR", "MPRAGE", "DWI", "LGG"},
    "XR": {"XR", "CR", "DX", "XRAY", "CXR", "RADIOGRAPH", "RADIOGRAPHY", "RONTGEN", "RADIO"},
    "US": {"US", "ULTRASOUND", "ECHO", "SONO", "BUSI", "ECHOGRAPHIE"},
    "PET": {"PET", "FDG"},
    "MG": {"MG", "MAMMO", "MAMMOGRAPHY", "MAMMOGRAM", "CBIS", "DDSM"},
}


def _words_to_value(words: set[str], table: Mapping[str, set[str]]) -> str | None:
    for value, keys in table.items():
        if words & keys:
            return value
    return None


# Storage classes made for the breast (PS3.4 B.5): digital mammography (for presentation and for
# processing), breast tomosynthesis, breast projection X-ray.
MAMMOGRAPHY_CLASSES = {"1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.2.1",
                       "1.2.840.10008.5.1.4.1.1.13.1.3", "1.2.840.10008.5.1.4.1.1.13.1.4",
                       "1.2.840.10008.5.1.4.1.1.13.1.5"}
# View positions only mammography uses (CID 4014; a radiograph's are AP, PA, LL, RL, RLD, LLD, RLO, LLO).
MAMMOGRAPHY_VIEWS = {"CC", "MLO", "ML", "LM", "LMO", "FB", "SIO", "XCC", "XCCL", "XCCM", "ISO", "CV", "AT"}


def is_mammogram(header: Header) -> bool:
    """A breast image by its storage class or its view (MLO, CC...), whatever its Modality tag says."""
    return (str(header.get("SOPClassUID", "")).strip() in MAMMOGRAPHY_CLASSES
            or str(header.get("ViewPosition", "")).strip().upper() in MAMMOGRAPHY_VIEWS)


def modality_from_tag(header: Header, path: PurePath) -> str | None:
    tag = str(header.get("Modality", "")).strip().upper()
    found = MODALITY_TAGS.get(tag)
    if found is None and re.fullmatch(r"[A-Z]{2,4}", tag) and tag not in NOT_MODALITIES:
        found = tag
    found = found or None
    if found in (None, "XR") and is_mammogram(header):
        return "MG"  # a breast storage class or a mammography view, whatever the Modality tag says
    if found == "XR" and body_part_term(str(header.get("BodyPartExamined", ""))) == "BREAST":
        return "MG"  # a mammogram stored as a plain radiograph (RG, DX): the breast says what it is
    return found


def modality_from_description(header: Header, path: PurePath) -> str | None:
    return _words_to_value(_tokens(_descriptions(header)), MODALITY_WORDS)


def modality_from_names(header: Header, path: PurePath) -> str | None:
    for part in _named(header, path):
        words = _tokens(part.replace("x-ray", "xray").replace("X-ray", "xray"))
        if "CHEST" in words and "XRAY" in words:
            return "XR"
        found = _words_to_value(words, MODALITY_WORDS)
        if found:
            return found
    return None


def modality_from_format(header: Header, path: PurePath) -> str | None:
    # Plain 2D photographs of film are overwhelmingly radiographs in public sets;
    # NIfTI volumes are overwhelmingly MR. Low confidence, shown to the user.
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "MR"
    if name.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")) and "ImageLook" not in header:
        return "XR"
    return None


# -- region ------------------------------------------------------------------------
REGION_WORDS = {
    "brain": {"HEAD", "BRAIN", "SKULL", "CRANE", "TETE", "KOPF", "SCHADEL", "SCHAEDEL", "CRANEO",
              "CABEZA", "CEREBRO", "CERVEAU", "NEURO", "CRANIAL", "CEREBRAL", "GLIOMA", "LGG",
              "CCT", "ENCEPHALE", "HIRN", "MPRAGE", "MEMPRAGE", "MENINGIOMA", "PITUITARY", "NOTUMOR",
              "INTRACRANIAL", "CRANIUM", "ORBIT", "ORBITS", "SINUS", "SINUSES", "IAC", "SELLA",
              "BRATS", "HIPPOCAMPUS", "IXI", "OASIS", "ADNI", "ISLES", "STROKE",
              # German, Italian, Dutch; the face and jaw are the head's
              "CMRT", "NNH", "ENCEFALO", "SCHEDEL", "HERSENEN", "FACIAL", "MAXILLOFACIAL", "MANDIBLE", "MASTOID"},
    "chest": {"CHEST", "THORAX", "TORAX", "THORAKS", "LUNG", "LUNGS", "LUNGE", "POUMON", "PULMON",
              "PULMONAR", "CXR", "PNEUMONIA", "COVID", "COVID19", "THORACIC", "TB", "TUBERCULOSIS",
              "PULMONARY", "CTPA", "RIB", "RIBS", "STERNUM", "MEDIASTINUM", "MEDIASTINAL", "PLEURAL",
              "PNEUMOTHORAX", "EMPHYSEMA", "LIDC", "CHESTX", "TORACE"},
    "abdomen": {"ABDOMEN", "ABD", "ABDOMINAL", "BAUCH", "LIVER", "FOIE", "LEBER", "KIDNEY", "RENAL",
                "PANCREAS", "ADRENAL", "ABDO", "ABDOM", "KIDNEYS", "HEPATIC", "BILIARY", "MRCP", "COLON",
                "COLONOGRAPHY", "SPLEEN", "GALLBLADDER", "STOMACH", "KUB", "RUQ", "PANCREATIC",
                "ENTEROGRAPHY", "UROGRAM", "KITS", "LITS", "ADDOME", "ABDOME", "OBERBAUCH", "UNTERBAUCH",
                "NIERE", "NIEREN", "HIGADO", "FEGATO", "RINON", "BUIK", "ABDOMINOPELVIC"},
    "pelvis": {"PELVIS", "BASSIN", "BECKEN", "PROSTATE", "HIP", "PELVIC", "PROSTATEX", "UTERUS",
               "UTERINE", "OVARY", "OVARIES", "OVARIAN", "BLADDER", "RECTUM", "RECTAL", "PERIANAL",
               "SACROILIAC", "HUFTE", "HUEFTE", "HANCHE", "CADERA", "BACINO", "BEKKEN", "HEUP", "QUADRIL",
               "PROSTATA", "PELVE", "PELVIEN", "PELVIENNE", "ISG"},
    "spine": {"SPINE", "CSPINE", "TSPINE", "LSPINE", "RACHIS", "WIRBELSAULE", "COLUMNA", "LUMBAR",
              "CERVICAL", "THORACOLUMBAR", "SSPINE", "SACRUM", "COCCYX", "VERTEBRA", "VERTEBRAE",
              "VERTEBRAL", "MYELOGRAM", "SCOLIOSIS", "LUMBOSACRAL", "HWS", "BWS", "LWS", "LOMBAIRE", "RACHIDE",
              "WERVELKOLOM", "COLUNA", "HALSWIRBELSAULE", "BRUSTWIRBELSAULE", "LENDENWIRBELSAULE"},
    "cardiac": {"HEART", "CARDIAC", "CORONARY", "COEUR", "HERZ", "CORAZON", "CARDIO", "CTA_CORONARY",
                "ECHOCARDIOGRAM", "ECHOCARDIOGRAPHY", "TTE", "CCTA", "MYOCARDIAL", "CORONARIES", "CUORE",
                "CORACAO", "KARDIO"},
    "breast": {"BREAST", "SEIN", "MAMMA", "MAMA", "MAMMO", "MAMMOGRAPHY", "BUSI", "MAMMOGRAM",
               "TOMOSYNTHESIS", "BREASTS", "MAMMELLA", "MAMMOGRAFIA", "MAMMOGRAPHIE", "MAMOGRAFIA"},
    "bone": {"BONE", "EXTREMITY", "HAND", "WRIST", "ELBOW", "KNEE", "ANKLE", "FOOT", "SHOULDER",
             "FEMUR", "TIBIA", "HUMERUS", "FRACTURE", "FRACTURED", "MURA", "OS", "KNOCHEN", "FINGER",
             "FOREARM", "THUMB", "CODO", "RODILLA", "MUNECA", "GENOU", "POIGNET", "MSK", "MUSCULOSKELETAL",
             "HANDS", "WRISTS", "ELBOWS", "KNEES", "ANKLES", "FEET", "SHOULDERS", "FINGERS", "TOE", "TOES",
             "FIBULA", "ULNA", "PATELLA", "CALCANEUS", "HEEL", "THIGH", "CLAVICLE", "SCAPULA", "BONEAGE",
             "EXTREMITIES", "KNIE", "SCHULTER", "FUSS", "ELLENBOGEN", "HANDGELENK", "SPRUNGGELENK", "OSG",
             "EPAULE", "CHEVILLE", "COUDE", "HOMBRO", "TOBILLO", "GINOCCHIO", "SPALLA", "CAVIGLIA", "PIEDE",
             "GOMITO", "POLSO", "MANO", "SCHOUDER", "ENKEL", "VOET", "JOELHO", "OMBRO", "TORNOZELO",
             "UNTERSCHENKEL", "OBERSCHENKEL", "UNTERARM", "OBERARM"},
    "neck": {"NECK", "THYROID", "CAROTID", "CAROTIDS", "LARYNX", "PAROTID", "CUELLO", "COU", "HALS",
             "SALIVARY", "SUBMANDIBULAR", "PHARYNX", "OROPHARYNX", "NASOPHARYNX", "HYPOPHARYNX",
             "SCHILDDRUSE", "SCHILDDRUESE", "THYROIDE", "TIROIDE", "TIROIDES", "COLLO", "PESCOCO", "TIREOIDE"},
}
BODY_PART_TAGS = {
    "HEAD": "brain", "BRAIN": "brain", "SKULL": "brain", "HEADNECK": "brain",
    "CHEST": "chest", "THORAX": "chest", "LUNG": "chest", "CHEST_TO_PELVIS": "chest",
    "ABDOMEN": "abdomen", "LIVER": "abdomen", "KIDNEY": "abdomen", "PANCREAS": "abdomen",
    "PELVIS": "pelvis", "PROSTATE": "pelvis", "HIP": "pelvis",
    "SPINE": "spine", "CSPINE": "spine", "TSPINE": "spine", "LSPINE": "spine",
    "HEART": "cardiac", "CARDIAC": "cardiac", "BREAST": "breast", "NECK": "neck", "THYROID": "neck",
    "EXTREMITY": "bone", "HAND": "bone", "WRIST": "bone", "KNEE": "bone", "ANKLE": "bone",
    "FOOT": "bone", "SHOULDER": "bone", "ELBOW": "bone", "LEG": "bone", "ARM": "bone",
    # more of DICOM's defined terms (PS3.16 CID 4031)
    "SSPINE": "spine", "SACRUM": "spine", "COCCYX": "spine", "WHOLESPINE": "spine",
    "ORBIT": "brain", "IAC": "brain", "SELLA": "brain", "LARYNX": "neck", "CAROTID": "neck",
    "RIB": "chest", "STERNUM": "chest", "ESOPHAGUS": "chest", "LUNGS": "chest",
    "STOMACH": "abdomen", "COLON": "abdomen", "SPLEEN": "abdomen", "GALLBLADDER": "abdomen",
    "ADRENAL": "abdomen", "BLADDER": "pelvis", "UTERUS": "pelvis", "OVARY": "pelvis",
    "RECTUM": "pelvis", "SIJOINT": "pelvis", "CLAVICLE": "bone", "SCAPULA": "bone",
    "HUMERUS": "bone", "FOREARM": "bone", "FINGER": "bone", "FEMUR": "bone", "TIBIA": "bone",
    "FIBULA": "bone", "TOE": "bone", "HEEL": "bone", "UPPER_LIMB": "bone", "LOWER_LIMB": "bone",
}


def region_from_body_part(header: Header, path: PurePath) -> str | None:
    """The defined term, or the words of a value written freely ("Knie", "SCHAEDEL", "LWS")."""
    value = str(header.get("BodyPartExamined", ""))
    return BODY_PART_TAGS.get(body_part_term(value)) or _region_of_words(_tokens(value))


# Words that name the spine itself: beside one, "thoracic" names the spine's level, not the
# chest ("T2 TSE THORACIC SPINE" was read as the chest: the chest's words are looked up first).
SPINE_CORE = {"SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "WIRBELSAULE", "RACHIS", "COLUMNA", "RACHIDE",
              "WERVELKOLOM", "COLUNA", "HWS", "BWS", "LWS", "VERTEBRA", "VERTEBRAE", "MYELOGRAM", "SCOLIOSIS"}


def _spine_levels_apart(words: set[str]) -> set[str]:
    return words - {"THORACIC"} if words & SPINE_CORE else words


def _region_of_words(words: set[str]) -> str | None:
    if "NECK" in words and words & {"HEAD", "HEADNECK", "HN"}:
        return "neck"  # a head-and-neck study (ENT oncology): the neck, whatever else it names
    return _words_to_value(_spine_levels_apart(words), REGION_WORDS)


def region_from_description(header: Header, path: PurePath) -> str | None:
    keys = ("StudyDescription", "SeriesDescription", "ProtocolName")
    return _region_of_words(_tokens(" ".join(str(header.get(k, "")) for k in keys)))


SPANS = {"CHEST_TO_PELVIS": ["chest", "abdomen", "pelvis"], "CHESTABDPELVIS": ["chest", "abdomen", "pelvis"],
         "ABDOMENPELVIS": ["abdomen", "pelvis"], "CHESTABDOMEN": ["chest", "abdomen"],
         "HEADNECK": ["brain", "neck"], "WHOLEBODY": []}


def body_part_term(value: str) -> str:
    """A BodyPartExamined value as its defined term ("Chest to pelvis" -> "CHEST_TO_PELVIS")."""
    return re.sub(r"[^A-Z_]", "", _fold(value).strip().replace(" ", "_"))


def described_regions(header: Header) -> list[str]:
    """Every region the body part tag and the descriptions name ("CT ABD AND PELVIS WITH CHEST
    IMAGES": abdomen, pelvis, chest); more than one leaves the main one to the pixels."""
    keys = ("StudyDescription", "SeriesDescription", "ProtocolName", "BodyPartExamined")
    words = _tokens(" ".join(str(header.get(k, "")) for k in keys))
    words = _spine_levels_apart(words)
    found = [region for region, names in REGION_WORDS.items() if words & names]
    found += [BODY_PART_TAGS[w] for w in words if w in BODY_PART_TAGS]
    found += SPANS.get(body_part_term(str(header.get("BodyPartExamined", ""))), [])
    return sorted(set(found))


# An ultrasound image's type names the exam in its third value (DICOM PS3.3 C.8.5.6.1.1:
# ORIGINAL\PRIMARY\TTE\0001): a coded term, not free text. Terms that name no region of
# ours (VASCULAR, SMALL PARTS, OBSTETRICAL, INTRAOPERATIVE...) give nothing.
US_EXAM_TYPES = {
    "TTE": "cardiac", "TEE": "cardiac", "TRANSTHORACIC": "cardiac", "TRANSESOPHAGEAL": "cardiac",
    "EPICARDIAL": "cardiac", "INTRACARDIAC": "cardiac", "FETAL HEART": "cardiac",
    "ABDOMINAL": "abdomen", "RETROPERITONEAL": "abdomen",
    "PELVIC": "pelvis", "GYNECOLOGY": "pelvis", "ENDOVAGINAL": "pelvis", "TRANSVAGINAL": "pelvis",
    "ENDORECTAL": "pelvis", "TRANSRECTAL": "pelvis",
    "BREAST": "breast", "CHEST": "chest", "THYROID": "neck", "NEONATAL HEAD": "brain",
    "TRANSCRANIAL": "brain", "MUSCULOSKELETAL": "bone",
}


def region_from_image_type(header: Header, path: PurePath) -> str | None:
    """The exam an ultrasound image's type names; a gated nuclear medicine acquisition (GATED,
    GATED TOMO, RECON GATED TOMO: synchronised to the ECG) is the heart's."""
    values = [v.strip().upper() for v in str(header.get("ImageType", "")).split("\\")]
    modality = str(header.get("Modality", "")).strip().upper()
    if modality == "US" and len(values) > 2:
        return US_EXAM_TYPES.get(values[2])
    if modality == "NM" and len(values) > 2 and "GATED" in values[2].split():
        return "cardiac"
    return None


def region_from_modality(header: Header, path: PurePath) -> str | None:
    """Mammography images nothing but the breast (by its Modality tag, storage class or view)."""
    return "breast" if str(header.get("Modality", "")).upper() == "MG" or is_mammogram(header) else None


def region_from_names(header: Header, path: PurePath) -> str | None:
    for part in _named(header, path):
        found = _region_of_words(_tokens(part))
        if found:
            return found
    return None


# File names that only one public dataset uses, and what its images are, for a user who
# points at a dataset's own folder (``kaggle_3m``), where no dataset name is in any path.
DATASET_FILE_NAMES = [
    # LGG segmentation (Buda et al., TCGA-LGG FLAIR slices): TCGA_CS_4941_19960909_12.tif
    (re.compile(r"^TCGA_[A-Z0-9]{2}_[A-Z0-9]{4}_\d{8}_\d+\.tif$"), "MR", "brain"),
]


def _dataset_file_name(path: PurePath) -> tuple[str, str] | None:
    return next(((m, r) for pattern, m, r in DATASET_FILE_NAMES if pattern.match(path.name)), None)


def region_from_dataset_file_name(header: Header, path: PurePath) -> str | None:
    found = _dataset_file_name(path)
    return found[1] if found else None


def modality_from_dataset_file_name(header: Header, path: PurePath) -> str | None:
    found = _dataset_file_name(path)
    return found[0] if found else None


def region_from_table(header: Header, path: PurePath) -> str | None:
    return header.get("TableRegion") or None


REGION_RULES = [
    RuleEntry("dicom_body_part", 1.0, region_from_body_part),
    RuleEntry("mammography", 0.95, region_from_modality),
    RuleEntry("dicom_description", 0.8, region_from_description),
    # after the descriptions: the exam type comes from the machine's preset, which some
    # machines may leave at a default; a description is written for the exam itself
    RuleEntry("dicom_image_type", 0.75, region_from_image_type),
    RuleEntry("label_table_layout", 0.7, region_from_table),
    RuleEntry("folder_or_file_name", 0.6, region_from_names),
    RuleEntry("dataset_file_name", 0.55, region_from_dataset_file_name),
]

def modality_from_brain_photo(header: Header, path: PurePath) -> str | None:
    # Public 2D brain sets (tumor MRI, LGG) are MR slices saved as JPEG/PNG/TIFF.
    if path.name.lower().endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")):
        return "MR" if region_from_names(header, path) == "brain" else None
    return None


def modality_from_pixel_scale(header: Header, path: PurePath) -> str | None:
    """Hounsfield units give CT away: RescaleType HU, or the usual -1024 intercept."""
    if str(header.get("RescaleType", "")).upper() == "HU":
        return "CT"
    try:
        return "CT" if float(header.get("RescaleIntercept", "nan")) in (-1024.0, -1000.0, -2048.0) else None
    except ValueError:
        return None


IMAGE_LOOKS = {"radiograph": "XR", "ultrasound": "US"}  # see app/organize/looks.py


def modality_from_image_look(header: Header, path: PurePath) -> str | None:
    """Pixel statistics of the folder's images: radiograph or ultrasound fan.

    A CT/MR cross-section or a colour photograph gets no modality here (nor from
    the file format): it stays unknown, for the user to set in the review screen.
    """
    return IMAGE_LOOKS.get(header.get("ImageLook", ""))


def modality_from_table(header: Header, path: PurePath) -> str | None:
    return header.get("TableModality") or None


MODALITY_RULES = [
    RuleEntry("dicom_modality_tag", 1.0, modality_from_tag),
    RuleEntry("dicom_description", 0.8, modality_from_description),
    RuleEntry("label_table_layout", 0.7, modality_from_table),
    RuleEntry("folder_or_file_name", 0.6, modality_from_names),
    RuleEntry("dataset_file_name", 0.55, modality_from_dataset_file_name),
    RuleEntry("hounsfield_rescale", 0.5, modality_from_pixel_scale),
    RuleEntry("brain_2d_image", 0.4, modality_from_brain_photo),
    RuleEntry("image_statistics", 0.35, modality_from_image_look),
    RuleEntry("file_format", 0.3, modality_from_format),
]

# -- label -------------------------------------------------------------------------
# Dataset class names (folded, spaces and underscores removed) -> anomaly class.
LABEL_NAMES = {
    "normal": NORMAL, "notumor": NORMAL, "notfractured": NORMAL, "nofinding": NORMAL,
    "negative": NORMAL, "healthy": NORMAL, "nonfractured": NORMAL, "nofracture": NORMAL,
    "pneumonia": "infection", "covid": "infection", "covid19": "infection",
    "viralpneumonia": "infection", "bacterialpneumonia": "infection", "tuberculosis": "infection",
    "lungopacity": "consolidation", "consolidation": "consolidation", "opacity": "consolidation",
    "tumor": "tumor", "tumour": "tumor", "glioma": "tumor", "meningioma": "tumor",
    "pituitary": "tumor", "malignant": "tumor", "benign": "tumor", "mass": "tumor",
    "nodule": "tumor", "cancer": "tumor",
    # the older Kaggle brain tumour set: glioma_tumor/, meningioma_tumor/, pituitary_tumor/, no_tumor/
    "gliomatumor": "tumor", "meningiomatumor": "tumor", "pituitarytumor": "tumor", "notumour": NORMAL,
    "hemorrhage": "hemorrhage", "haemorrhage": "hemorrhage", "bleed": "hemorrhage",
    "intracranialhemorrhage": "hemorrhage",
    "fracture": "fracture", "fractured": "fracture",
    "edema": "edema", "oedema": "edema", "atelectasis": "atelectasis",
    "pneumothorax": "pneumothorax", "effusion": "other_anomaly", "abnormal": "other_anomaly",
    "lesion": "other_anomaly", "neoplasm": "tumor", "neoplasticlesion": "tumor",
    "positive": "other_anomaly",  # MURA: an abnormal study, of any kind
    "cyst": "other_anomaly", "stone": "other_anomaly", "kidneystone": "other_anomaly",
    # RSNA intracranial hemorrhage subtypes
    "epidural": "hemorrhage", "intraparenchymal": "hemorrhage", "intraventricular": "hemorrhage",
    "subarachnoid": "hemorrhage", "subdural": "hemorrhage",
    "maskpositive": "tumor", "maskempty": NORMAL,
    # NIH ChestX-ray14 findings
    "infiltration": "consolidation", "cardiomegaly": "other_anomaly",
    "emphysema": "other_anomaly", "fibrosis": "other_anomaly", "pleuralthickening": "other_anomaly",
    "hernia": "other_anomaly",
    "finding": "other_anomaly",  # a 3D cube dataset's positives (app/cubes.py): a finding of any kind
    "pleuraleffusion": "other_anomaly",  # CheXpert's and VinDr's name for NIH's Effusion
    "nodr": NORMAL,  # diabetic retinopathy grade 0 (APTOS, EyePACS: "No DR")
    "nondemented": NORMAL,  # the Alzheimer MRI sets' NonDemented/ beside VeryMildDemented/, MildDemented/...
    "melanoma": "tumor", "carcinoma": "tumor", "adenocarcinoma": "tumor", "metastasis": "tumor",
}
# A label cell that says nobody knows: the item is unlabeled, not a class (ISIC's "unknown").
NO_LABEL = frozenset({"unknown", "unk", "na", "nan", "notavailable", "missing", "unlabeled", "unlabelled",
                      "uncertain", ""})  # folded as label_key folds: "N/A" is "na", "?" is ""
# The anomaly classes' own spellings: a dataset that writes "tumour" for one folder and "tumor"
# in a table names one class, not two (settle_classes).
SPELLINGS = {"tumour": "tumor", "haemorrhage": "hemorrhage", "oedema": "edema", "fractured": "fracture"}


def _first_finding(label: str) -> str:
    """'Effusion|Pneumothorax' -> the first finding that maps to a class other than other_anomaly."""
    parts = [p for p in label.split("|") if p]
    for part in parts:
        mapped = LABEL_NAMES.get(label_key(part))
        if mapped and mapped != "other_anomaly":
            return part
    return parts[0] if parts else label


@lru_cache(maxsize=65536)  # asked for every row of a label table (millions) and every folder name
def label_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", _fold(name).lower())


STUDY_FOLDER = re.compile(r"^study\d+_(positive|negative)$", re.IGNORECASE)  # MURA: study1_negative


def label_from_folder(header: Header, path: PurePath) -> str | None:
    """The nearest folder whose name is a known class name; returns that folder name
    (a MURA study folder, ``study2_positive``: its last word). A folder that holds a label
    table (``TableFolders`` in the header, paths as ``path`` writes them) names a dataset,
    not a class: "pneumonia/images/*.png" with "pneumonia/labels.csv" is a mix of classes."""
    folders = path.parent.parts
    holders = {PurePath(f) for f in header.get("TableFolders", ())}
    for k in range(len(folders) - 1, -1, -1):
        part, place = folders[k], PurePath(*folders[: k + 1])
        if any(h == place or place in h.parents for h in holders):
            continue
        study = STUDY_FOLDER.match(part)
        if study:
            return study.group(1).lower()
        if LABEL_NAMES.get(label_key(part)):
            return part
    return None


# Shenzhen and Montgomery County chest X-ray sets (NLM): the file name's last digit is the
# reading, 0 normal and 1 tuberculosis (CHNCXR_0001_0.png, MCUCXR_0104_1.png).
TB_FILE = re.compile(r"^(?:CHNCXR|MCUCXR)_\d{4}_([01])\.[A-Za-z]+$")


def label_from_file_name(header: Header, path: PurePath) -> str | None:
    """A label a public dataset writes into its file names (TB_FILE)."""
    match = TB_FILE.match(path.name)
    if match:
        return "tuberculosis" if match.group(1) == "1" else "normal"
    return None


def label_from_sibling_folder(header: Header, path: PurePath) -> str | None:
    """A folder that is a class by its place: beside a known class folder (the organizer
    finds them, app/organize/classes.py class_folders, and puts the name in the header)."""
    return header.get("ClassFolder") or None


def label_from_table(header: Header, path: PurePath) -> str | None:
    """A label table beside the images (the organizer puts its answer in the header)."""
    return header.get("LabelTable") or None


def label_from_annotation(header: Header, path: PurePath) -> str | None:
    """A DICOM SEG or RTSTRUCT that outlines a lesion in this series (app.organize.dicom_objects)."""
    return header.get("AnnotatedLesion") or None


def label_from_mask(header: Header, path: PurePath) -> str | None:
    """A lesion mask beside the image: non-empty means tumor (LGG, BUSI layouts)."""
    if "MaskNonEmpty" not in header:
        return None
    return "mask_positive" if header["MaskNonEmpty"] else "mask_empty"


def label_from_label_map(header: Header, path: PurePath) -> str | None:
    """A volume's label map in a layout that names its lesion values (a Decathlon task's
    dataset.json, KiTS, LiTS, BraTS; app/label_maps.py): a lesion value present means tumor."""
    if "LesionMap" not in header:
        return None
    return "mask_positive" if header["LesionMap"] else "mask_empty"


LABEL_RULES = [
    RuleEntry("label_table", 1.0, label_from_table),
    RuleEntry("class_folder", 0.9, label_from_folder),
    RuleEntry("dicom_seg_or_rtstruct", 0.85, label_from_annotation),
    RuleEntry("lesion_mask", 0.85, label_from_mask),
    RuleEntry("label_map", 0.85, label_from_label_map),
    RuleEntry("file_name_label", 0.8, label_from_file_name),
    RuleEntry("class_folder_beside_known", 0.7, label_from_sibling_folder),
]


def findings(source_label: str) -> str:
    """A multi-label source label's classes, "|"-joined ("Effusion|Infiltration" ->
    "consolidation|other_anomaly"); empty for a single label (its class is the row's label)."""
    parts = [p for p in source_label.split("|") if p.strip()]
    if len(parts) < 2:
        return ""
    return "|".join(sorted({anomaly_class(p) for p in parts}))


def anomaly_class(source_label: str) -> str:
    """The DESIGN.md anomaly class for a dataset's own class name (multi-label: the first telling
    one); a name this tool does not know keeps its own (own_class): "0" and "1", or "nv" and
    "mel", are two classes, never both "other_anomaly"."""
    first = _first_finding(source_label)
    return LABEL_NAMES.get(label_key(first)) or own_class(first)


def own_class(name: str) -> str:
    """A dataset's own class name as a class: lower case, words joined by "_" ("Very Mild
    Demented" -> "very_mild_demented"); a bare number is "class_<n>" as in MedMNIST files; a
    name of signs alone ("+") gets a short hash of itself, so two such names stay two."""
    number = re.fullmatch(r"\s*([+-]?)(\d+)(?:\.0*)?\s*", name)  # 1, 1.0 (pandas writes floats), -1
    if number:
        return f"class_{'minus_' if number.group(1) == '-' else ''}{int(number.group(2))}"
    words = re.sub(r"([a-z])([A-Z][a-z])", r"\1_\2", name)  # VeryMildDemented: three words
    slug = re.sub(r"[^a-z0-9]+", "_", _fold(words).lower()).strip("_")[:40].rstrip("_")
    if not slug:
        return "class_" + hashlib.sha256(name.strip().encode()).hexdigest()[:6]
    return f"class_{slug}" if slug.isdigit() else slug


def is_no_label(value: str) -> bool:
    """A label cell that says the label is not known ("unknown", "n/a", "NaN", empty)."""
    return label_key(value) in NO_LABEL


# -- patient -----------------------------------------------------------------------
PATIENT_PATTERNS = [
    ("kaggle_pneumonia_person", re.compile(r"^(person\d+)_")),
    ("kaggle_pneumonia_im", re.compile(r"^(?:NORMAL2-)?(IM-\d+)-")),
    ("nih_chestxray14", re.compile(r"^(\d{8})_\d{3}\.png$")),
    ("bids_subject", re.compile(r"^(sub-[A-Za-z0-9]+)")),
    ("tcga_case", re.compile(r"^(TCGA_[A-Z0-9]{2}_[A-Z0-9]{4})")),
    ("patient_number", re.compile(r"^(patient\d+)", re.IGNORECASE)),
    # brain MR collections that keep a subject's sequences or sessions in separate files or folders
    ("ixi_subject", re.compile(r"^(IXI\d{3})-")),  # IXI002-Guys-0828-T1.nii.gz, ...-T2, -PD, -MRA
    ("adni_subject", re.compile(r"^ADNI_(\d{3}_S_\d{4})_")),  # ADNI_002_S_0295_MR_...
    ("oasis_subject", re.compile(r"^(OAS[1-3]_?\d{4})")),  # OAS1_0001_MR1 (sessions MR1, MR2), OAS30001
    ("mimic_subject", re.compile(r"^(p\d{8})$")),  # MIMIC-CXR-JPG: files/p10/p10000032/s50414267/<dicom_id>.jpg
    # OCT2017 (Kermany): <class>-<patient>-<B-scan>.jpeg; a patient's B-scans sit in several classes
    ("oct2017_patient", re.compile(r"^(?:CNV|DME|DRUSEN|NORMAL)-(\d+)-\d+\.(?:jpe?g|png)$", re.IGNORECASE)),
]


def patient_from_dicom(header: Header, path: PurePath) -> str | None:
    value = str(header.get("PatientID", "")).strip()
    return f"dicom:{value}" if value else None


def patient_from_file_name(header: Header, path: PurePath) -> str | None:
    for name, pattern in PATIENT_PATTERNS:
        match = pattern.match(path.name)
        if match:
            return f"{name}:{match.group(1)}"
    return None


def patient_from_folder(header: Header, path: PurePath) -> str | None:
    for part in reversed(path.parent.parts):
        for name, pattern in PATIENT_PATTERNS:
            match = pattern.match(part)
            if match:
                return f"{name}:{match.group(1)}"
    return None


# A sequence's name after a case folder's own (BraTS2021_00000/BraTS2021_00000_flair.nii.gz,
# BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz): a word, not a running number.
SEQUENCE_SUFFIX = re.compile(r"^[_-][A-Za-z][A-Za-z0-9]{0,15}$")


def patient_from_case_folder(header: Header, path: PurePath) -> str | None:
    """The case a folder holds, when its files are named after it and differ only by the
    sequence (flair, t1, t1ce, t2): one patient's scans, never to be split across train and
    test. The folder's name must hold a number (a case id, not 'images')."""
    case, stem = path.parent.name, path.name.split(".")[0]
    if any(c.isdigit() for c in case) and stem.startswith(case) and SEQUENCE_SUFFIX.match(stem[len(case):]):
        return f"case_folder:{case}"
    return None


PATIENT_RULES = [
    RuleEntry("dicom_patient_id", 1.0, patient_from_dicom),
    RuleEntry("file_name_pattern", 0.8, patient_from_file_name),
    RuleEntry("case_folder", 0.75, patient_from_case_folder),
    RuleEntry("folder_name_pattern", 0.7, patient_from_folder),
]
