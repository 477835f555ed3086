"""Scan a folder tree: one record per readable file, a reason per skipped one.

Workers read DICOM headers only (``stop_before_pixels``) and hash file contents.
Patient identifiers are pseudonymized inside the worker, so the raw ones never
travel further than the function that read them.
"""

from __future__ import annotations

import gc
import hashlib
import io
import os
import re
import stat
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from app.children import die_with_parent
from app.cube_store import STORE_SUFFIXES
from app.imaging import MAX_VOXELS, check_image_size, check_volume_size
from app.organize.detect import (
    BODY_PART_TAGS, PATIENT_RULES, SPANS, body_part_term, description_keywords, detect,
)
from app.organize.dicom_objects import ANNOTATIONS, annotation_facts, is_screen_capture, not_an_image, skip_reason
from app.pseudonyms import pseudonymize
from app.private import identifier_tokens, item_id, token_hash
from app.progress import Progress, report

IMAGE_2D = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUMES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".hdr", ".nhdr", ".mnc")  # .mnc: MINC2 (ITK reads it)
# Headers whose voxels sit in another file: MetaImage .mhd + .raw (LUNA16), Analyze/NIfTI pair
# .hdr + .img (OASIS-1), detached NRRD .nhdr + .raw.gz.
DETACHED = (".mhd", ".hdr", ".nhdr")
DATA_FILES = (".raw", ".raw.gz", ".zraw", ".img", ".img.gz")
TABLES = (".csv", ".tsv")
MASK_SUFFIXES = ("_mask", "_seg", "_segmentation", "_label")
MASK_FOLDERS = {"masks", "mask", "segmentations", "segmentation", "ground_truth", "groundtruth",
                "labelstr", "labelsts",  # the Medical Segmentation Decathlon's label maps
                "ground", "gt", "labels"}  # CHAOS keeps its liver outlines as PNGs in Ground/
# A label map's name in the public 3D sets: KiTS segmentation.nii.gz, LiTS segmentation-0.nii,
# BraTS *_seg.nii.gz, BIDS derivatives *_seg-manual / *_dseg / *_lesion-manual.
# BUSI numbers a second lesion's mask: benign (4)_mask_1.png.
# KiTS23 keeps each annotator's outline of each instance: instances/tumor_instance-1_annotation-2.nii.gz.
MASK_NAME = re.compile(r"(^|[_-])(seg|dseg|mask|segmentation|labels?|lesion-manual|annotation)([_-][a-z0-9]+)?$",
                       re.IGNORECASE)
# Words of a folder's name that say it holds outlines (LUNA16's seg-lungs-LUNA16/, lung_masks/).
MASK_FOLDER_WORDS = {"seg", "segs", "segmentation", "segmentations", "mask", "masks"}


MAX_LABEL_VALUES = 64  # a label map has a few values; more is a picture, not a map: none kept


def _label_values(path: Path) -> list[int]:
    """The values present in a label map volume (at most MAX_LABEL_VALUES; else, or when it
    cannot be read whole, none: it then labels nothing, as every label map did before)."""
    import numpy as np

    from app.imaging import simpleitk

    sitk = simpleitk()
    try:
        _check_volume(path)  # its size declared within the limit, its data whole
        values = np.unique(sitk.GetArrayViewFromImage(sitk.ReadImage(str(path))))
    except Exception:  # noqa: BLE001  (an unreadable map is no label, not a failed scan)
        return []
    if len(values) > MAX_LABEL_VALUES or not np.all(np.mod(values, 1) == 0):
        return []
    return [int(v) for v in values]


def masked_stem(mask_stem: str) -> str:
    """The stem of the image a mask belongs to: 'benign (4)' for 'benign (4)_mask_1'."""
    return MASK_NAME.sub("", mask_stem)


IGNORED = {"SHA256SUMS", ".DS_Store", "Thumbs.db", "desktop.ini"}  # clutter, not data: no line
# The only DICOM tags the scanner keeps. No name, birth date, address or accession; of the
# free-text descriptions only the words a detection rule reads (description_keywords).
KEPT_TAGS = ("Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription",
             "ProtocolName", "InstanceNumber", "NumberOfFrames", "RescaleIntercept", "RescaleType",
             "SOPClassUID", "ViewPosition", "ImageType")
FREE_TEXT = ("StudyDescription", "SeriesDescription", "ProtocolName", "BodyPartExamined")
# Read only to be hashed (app.private: what `audit` searches for); the values go no further.
IDENTIFIER_TAGS = ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "AccessionNumber",
                   "PatientAddress", "InstitutionName", "ReferringPhysicianName")


@dataclass
class FileRecord:
    path: str
    format: str
    sha256: str
    header: dict[str, Any] = field(default_factory=dict)
    patient: str = ""
    patient_rule: str = ""
    series_uid: str = ""
    position: float | None = None
    identifiers: list[str] = field(default_factory=list)  # keyed hashes of identifier tokens (app.private)


@dataclass
class Skipped:
    path: str
    reason: str


class NotAnImage(Exception):
    """A DICOM object that holds no image: ``kind`` (dicom_objects.WHAT); for SEG and RTSTRUCT,
    the series they mark up and the lesion they outline."""

    def __init__(self, kind: str, series: list[str] | None = None, lesion: str = "") -> None:
        super().__init__(kind)
        self.kind, self.series, self.lesion = kind, series or [], lesion


def is_mask(path: Path) -> bool:
    """A segmentation mask rather than an image: ``*_mask.png``, a volume's label map
    (``segmentation.nii.gz``, ``*_seg-manual.nii.gz``) or a file in ``masks/``, ``labelsTr/``
    or a folder whose name ends in "mask" (Montgomery's ``ManualMask/leftMask/``) or has a word
    of MASK_FOLDER_WORDS (LUNA16's ``seg-lungs-LUNA16/``)."""
    stem, folder = path.name.lower().split(".")[0], path.parent.name.lower()
    return (stem.endswith(MASK_SUFFIXES) or bool(MASK_NAME.search(stem)) or folder in MASK_FOLDERS
            or folder.endswith(("mask", "masks")) or bool(set(re.split(r"[-_ .]+", folder)) & MASK_FOLDER_WORDS))


def base_name(name: str, suffixes: tuple[str, ...]) -> str:
    """``name`` without the longest of ``suffixes`` it ends with (case aside): names may hold
    dots of their own (LUNA16's 1.3.6.1.4.1.14519...mhd)."""
    found = max((x for x in suffixes if name.lower().endswith(x)), key=len, default="")
    return name[: len(name) - len(found)]


def data_file(header: Path) -> Path | None:
    """The file a detached header keeps its voxels in, when there is one."""
    name = header.name.lower()
    if name.endswith((".mhd", ".nhdr")):
        key = "elementdatafile" if name.endswith(".mhd") else "data file"
        with open(header, "rb") as handle:
            for line in handle.read(16384).decode("latin-1").splitlines():
                field, _, value = line.partition(":" if key == "data file" else "=")
                if field.strip().lower() == key and value.strip() and value.strip().upper() not in ("LOCAL", "LIST"):
                    return header.parent / value.strip()
        return None
    if name.endswith(".hdr"):
        base = base_name(header.name, (".hdr",))
        return next((p for p in (header.parent / f"{base}.img", header.parent / f"{base}.img.gz") if p.exists()),
                    header.parent / f"{base}.img")
    return None


def _is_companion(path: Path) -> bool:
    """A data file some header beside it reads (x.raw beside x.mhd, x.img beside x.hdr)."""
    base = base_name(path.name, DATA_FILES)
    return any((path.parent / f"{base}{h}").exists() for h in DETACHED)


def file_format(path: Path) -> str | None:
    """'dicom', 'image2d', 'mask', 'volume', 'table', 'json', 'companion' or None, from the name
    (then the bytes)."""
    name = path.name.lower()
    if name.endswith(IMAGE_2D):
        return "mask" if is_mask(path) else "image2d"
    if name.endswith(TABLES):
        return "table"
    if name.endswith(VOLUMES):
        return "mask" if is_mask(path) else "volume"
    if name.endswith(".json"):
        return "json"  # a BIDS sidecar or dataset description: read for its facts, never an item
    if name.endswith(DATA_FILES) and _is_companion(path):
        return "companion"  # read through its header: never an item, never a skipped file
    if name.endswith((".dcm", ".dicom", ".ima")) or "." not in name or _has_dicom_preamble(path):
        return "dicom"
    return None


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


READ_TAGS = [*KEPT_TAGS, *IDENTIFIER_TAGS, "SeriesInstanceUID", "ImagePositionPatient",
             "ImageOrientationPatient", "PhotometricInterpretation"]
SIZE_TAGS = ["Rows", "Columns", "BitsAllocated", "SamplesPerPixel"]  # binary (US): read apart
READ_TAG_NUMBERS_BY_NAME: dict[str, int] = {}  # filled on first use (pydicom is imported lazily)
READ_TAG_NUMBERS: list[int] = []


def _tag_numbers(keywords: list[str]) -> dict[str, int]:
    from pydicom.datadict import tag_for_keyword

    return {k: tag_for_keyword(k) for k in keywords}


def _text(raw: dict[int, Any], keyword: str) -> str | None:
    """A string tag's text straight from its raw bytes.

    pydicom's value conversion costs as much as reading the file; every tag read
    here is a string (CS, LO, UI, DS, IS), so decoding the bytes is enough.
    """
    value = raw.get(READ_TAG_NUMBERS_BY_NAME[keyword])
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")
        return text.strip(" \x00") or None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value) or None  # as stored: ORIGINAL\PRIMARY\AXIAL
    return None if value is None else str(value)


def _raw_elements(handle: Any) -> tuple[dict[int, Any], Any] | None:
    """The wanted tags' raw values and the transfer syntax, with the file left at PixelData.

    Walks the elements with pydicom's own element reader and skips every value it
    was not asked for, without building a Dataset. Returns None for files it does
    not take on (no preamble, deflated): ``dcmread`` reads those.
    """
    from pydicom.filereader import data_element_generator
    from pydicom.uid import UID

    handle.seek(128)
    if handle.read(4) != b"DICM":
        return None
    meta = {e.tag: e.value for e in data_element_generator(
        handle, False, True, stop_when=lambda tag, vr, length: tag >> 16 != 2)}
    syntax_bytes = meta.get(0x00020010)
    if not syntax_bytes:
        return None
    syntax = UID(syntax_bytes.decode("ascii", "replace").strip(" \x00"))
    if syntax.is_deflated or not syntax.is_transfer_syntax:
        return None
    raw = {e.tag: e.value for e in data_element_generator(
        handle, syntax.is_implicit_VR, syntax.is_little_endian,
        stop_when=lambda tag, vr, length: tag >= 0x7FE00008, specific_tags=READ_TAG_NUMBERS)}
    return raw, syntax


def _numbers(text: str | None) -> list[float] | None:
    try:
        return [float(v) for v in text.split("\\")] if text else None
    except ValueError:
        return None


def _ushort(raw: dict[int, Any], keyword: str, syntax: Any) -> int | None:
    """An unsigned short tag's value, from raw bytes (the fast reader) or an int (dcmread)."""
    import struct

    value = raw.get(READ_TAG_NUMBERS_BY_NAME[keyword])
    if isinstance(value, bytes) and len(value) >= 2:
        return int(struct.unpack("<H" if getattr(syntax, "is_little_endian", True) else ">H", value[:2])[0])
    return int(value) if isinstance(value, int) else None


def _pixel_data_problem(handle: Any, size: int, syntax: Any, raw: dict[int, Any], frames: str | None) -> str | None:
    """After a stop_before_pixels read the file sits at PixelData: does it hold what the header declares?

    Checked before any pixel is decoded: the declared length must be in the file, and
    for uncompressed data it must match rows x columns x frames x samples x bytes.
    """
    import struct

    start = handle.tell()
    head = handle.read(12)
    if len(head) < 8 or head[:4] not in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        return None  # no pixel data element follows: nothing to check here
    little = getattr(syntax, "is_little_endian", True)
    # Pixel data's VR is one of these; where the syntax says explicit and no VR follows the tag,
    # the file was written implicit under an explicit syntax (common; pydicom reads it, after
    # a warning). An implicit syntax is trusted: its length bytes may happen to read as letters.
    pixel_vrs = (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN")
    implicit = getattr(syntax, "is_implicit_VR", False) or head[4:6] not in pixel_vrs
    order = "<" if little else ">"
    if implicit:
        header, length = 8, struct.unpack(order + "I", head[4:8])[0]
    else:
        header, length = 12, struct.unpack(order + "I", head[8:12])[0]
    if length == 0xFFFFFFFF:
        return None  # encapsulated (compressed) frames: their length is not declared up front
    if start + header + length > size:
        return "truncated DICOM (pixel data shorter than declared)"
    rows, columns = _ushort(raw, "Rows", syntax), _ushort(raw, "Columns", syntax)
    bits, samples = _ushort(raw, "BitsAllocated", syntax), _ushort(raw, "SamplesPerPixel", syntax) or 1
    count = (_numbers(frames) or [1])[0]
    if not (rows and columns and bits):
        return None
    if rows * columns * count * samples > MAX_VOXELS:
        return f"image too large ({rows} x {columns} x {int(count)} frames; the limit is {MAX_VOXELS:,} values)"
    if samples == 3 and str(_text(raw, "PhotometricInterpretation")).upper() in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        samples = 2  # two pixels share one pair of chroma samples: 4 values for 2 pixels (PS3.3 C.7.6.3.1.2)
    expected = rows * columns * int(count) * samples * bits // 8
    if bits % 8 == 0 and length < expected:  # more is padding, which readers leave aside
        return f"pixel data of {length:,} bytes where the header declares {expected:,}"
    return None


def _check_plain_image(path: Path) -> None:
    """Refuse truncated PNG and JPEG files without decoding them."""
    name = path.name.lower()
    if name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as image:
            check_image_size(image.size, path.name)
            image.verify()  # walks every chunk and checks its CRC
    elif name.endswith((".jpg", ".jpeg")):
        with open(path, "rb") as handle:
            handle.seek(-2, os.SEEK_END)
            if handle.read(2) != b"\xff\xd9":
                raise ValueError("truncated JPEG (no end-of-image marker)")


def _check_volume(path: Path) -> None:
    name = path.name.lower()
    if name.endswith(".mnc"):
        with open(path, "rb") as handle:
            if handle.read(3) == b"CDF":  # MINC1 is netCDF; MINC2 is HDF5
                raise ValueError("a MINC1 file (netCDF), which ITK does not read: convert it to MINC2 "
                                 "(mincconvert -2) or to NIfTI (mnc2nii)")
    if not name.endswith((".nii", ".nii.gz")):
        from app.imaging import simpleitk

        reader = simpleitk().ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()  # the header only: a file ITK cannot read is refused here
        check_volume_size((*reader.GetSize(), reader.GetNumberOfComponents()), path.name)
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib
        import numpy as np

        image = nib.load(path)
        check_volume_size(image.shape, path.name)
        if name.endswith(".nii"):
            needed = image.dataobj.offset + int(np.prod(image.shape)) * image.get_data_dtype().itemsize
            if needed > path.stat().st_size:
                raise ValueError("truncated NIfTI (less data than its header declares)")


def _raw_elements_dcmread(handle: Any) -> tuple[dict[int, Any], Any]:
    """What ``_raw_elements`` returns, through ``dcmread``, for the files it leaves alone."""
    import pydicom

    handle.seek(0)
    # specific_tags: only these are parsed, so names and birth dates are never even decoded.
    # force: old files without preamble and meta group are DICOM too; a non-DICOM file
    # read this way has neither SOP class nor modality and is refused by the caller.
    ds = pydicom.dcmread(handle, stop_before_pixels=True, specific_tags=READ_TAG_NUMBERS, force=True)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:  # no meta group: the encoding pydicom found is the one to read by
        from types import SimpleNamespace

        implicit, little = ds.original_encoding
        syntax = SimpleNamespace(is_implicit_VR=bool(implicit), is_little_endian=bool(little))
    raw = {}
    for tag in READ_TAG_NUMBERS:
        element = ds.get_item(tag)
        if element is not None:
            raw[tag] = element.value
    return raw, syntax


def _read_dicom(handle: Any, size: int) -> tuple[dict[str, Any], str, str, float | None, list[str]]:
    if not READ_TAG_NUMBERS:
        READ_TAG_NUMBERS_BY_NAME.update(_tag_numbers(READ_TAGS + SIZE_TAGS))
        READ_TAG_NUMBERS.extend(READ_TAG_NUMBERS_BY_NAME.values())
    raw, syntax = _raw_elements(handle) or _raw_elements_dcmread(handle)
    values = {k: _text(raw, k) for k in READ_TAGS}
    kind = not_an_image(values["SOPClassUID"], values["Modality"])
    if not kind and is_screen_capture(values["SOPClassUID"], values["ImageType"], values["SeriesDescription"]):
        kind = "SCREEN"
    if kind in ANNOTATIONS:
        import pydicom

        handle.seek(0)
        raise NotAnImage(kind, *annotation_facts(pydicom.dcmread(handle, stop_before_pixels=True, force=True), kind))
    if kind:
        raise NotAnImage(kind)
    problem = _pixel_data_problem(handle, size, syntax, raw, values["NumberOfFrames"])
    if problem:
        raise ValueError(problem)
    if values["SOPClassUID"] is None and values["Modality"] is None:
        raise ValueError("not a DICOM image (no SOP class, no modality)")
    header = _kept(values)
    identifiers = [values[k] for k in IDENTIFIER_TAGS if values[k]]
    position, orientation = _numbers(values["ImagePositionPatient"]), _numbers(values["ImageOrientationPatient"])
    z: float | None = None
    if position and orientation and len(orientation) == 6 and len(position) == 3:
        # Distance along the slice normal orders slices in any orientation.
        r, c = orientation[:3], orientation[3:]
        normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
        z = sum(p * n for p, n in zip(position, normal))
    elif values["InstanceNumber"] is not None and _numbers(values["InstanceNumber"]):
        z = _numbers(values["InstanceNumber"])[0]
    return header, values["PatientID"] or "", values["SeriesInstanceUID"] or "", z, identifiers


ARCHIVE = "an image archive (.npz or .h5, MedMNIST style); organize that file itself, not its folder"
# Files people leave beside their images, and what they are (or what to do with them).
# CIFTI files end in .nii but hold values on a brain's grayordinates, not an image (CIFTI-2's
# own names); neuroimaging trees (HCP) keep them beside the volumes.
CIFTI = (".dconn.nii", ".dtseries.nii", ".dscalar.nii", ".dlabel.nii", ".pconn.nii", ".ptseries.nii",
         ".pscalar.nii", ".plabel.nii", ".dpconn.nii", ".pdconn.nii", ".dfan.nii", ".fibertemp.nii")
PACKED = {(".zip", ".tar", ".tar.gz", ".tgz", ".7z", ".rar"): "a packed archive; unpack it, then organize the folder",
          (".xlsx", ".xls", ".ods"): "a spreadsheet; save it as CSV to use it as a label table",
          CIFTI: "a CIFTI file (values on the brain's surface and grey matter, such as time series or "
                 "connectivity), not an image",
          (".gii",): "a GIFTI surface, not an image",
          (".trk", ".tck"): "a tractography file (streamlines), not an image"}


def _kept(values: dict[str, Any]) -> dict[str, Any]:
    """The KEPT_TAGS of a header, free text reduced to the words a rule reads."""
    header = {k: values[k] for k in KEPT_TAGS if values.get(k) is not None}
    for key in FREE_TEXT:
        if key in header:
            term = body_part_term(header[key]) if key == "BodyPartExamined" else ""
            # a body part's defined term ("CHEST_TO_PELVIS") is kept whole; free text only as keywords
            header[key] = term if term in BODY_PART_TAGS or term in SPANS else description_keywords(header[key])
            if not header[key]:
                del header[key]
    return header


# What a BIDS sidecar may say of its image: dcm2niix writes the DICOM fields of the series it
# converted (sub-01_T1w.json beside sub-01_T1w.nii.gz). A dataset_description.json names the dataset.
SIDECAR_TAGS = ("Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName", "ImageType")
SIDECAR_BYTES = 1 << 20  # a sidecar or a dataset description is a few kB


def _read_json_facts(path: Path, size: int) -> tuple[dict[str, Any], list[str]]:
    """A JSON file's kept facts (free text as keywords, as a DICOM header's) and the identifier
    values to hash (a sidecar written without anonymizing holds PatientName...)."""
    import json

    if size > SIDECAR_BYTES:
        raise ValueError(f"a JSON file of {size:,} bytes, too large to be a sidecar or dataset description")
    data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    if not isinstance(data, dict):
        raise ValueError("a JSON file that is not an object of named fields")

    def text(value: Any) -> str | None:
        if isinstance(value, list):
            return "\\".join(str(v) for v in value if not isinstance(v, (dict, list))) or None
        return None if value is None or isinstance(value, dict) else str(value)

    header = _kept({k: text(data.get(k)) for k in SIDECAR_TAGS})
    if path.name == "dataset_description.json":
        header = {"DatasetName": description_keywords(text(data.get("Name")) or "")}
    elif path.name == "dataset.json" and isinstance(data.get("labels"), dict) and "training" in data:
        # a Medical Segmentation Decathlon task: its name and description name the organ
        named = " ".join(filter(None, (text(data.get("name")), text(data.get("description")))))
        header = {"DatasetName": description_keywords(named)}
    return header, [t for t in (text(data.get(k)) for k in IDENTIFIER_TAGS) if t]


IN_MEMORY = 64 << 20  # DICOM files up to this size are read once: hashed and parsed from memory


def scan_file(path: Path, root: Path, secret: bytes) -> tuple[FileRecord | Skipped, list[int] | None]:
    """Read one file's facts, or the reason it cannot be used, with its (size, mtime) signature."""
    shown = str(path)[len(str(root)) + 1 :]
    signature = None
    try:
        info = os.lstat(path)
        signature = [info.st_size, info.st_mtime_ns]
        if stat.S_ISLNK(info.st_mode):
            try:
                info = os.stat(path)
            except FileNotFoundError:
                return Skipped(shown, "broken symbolic link"), signature
        if info.st_size == 0:
            return Skipped(shown, "empty file"), signature
        if path.name.upper() == "DICOMDIR":
            return Skipped(shown, skip_reason("DICOMDIR")), signature
        kind = file_format(path)
        if kind is None and path.name.lower().endswith(STORE_SUFFIXES):
            return Skipped(shown, ARCHIVE), signature
        packed = next((why for ends, why in PACKED.items() if path.name.lower().endswith(ends)), None)
        if packed:
            return Skipped(shown, packed), signature
        if kind is None:
            return Skipped(shown, "not an image format this tool reads"), signature
        header: dict[str, Any] = {}
        if kind == "dicom":
            if info.st_size <= IN_MEMORY:
                data = path.read_bytes()
                record = FileRecord(path=str(path), format=kind, sha256=hashlib.sha256(data).hexdigest())
                parsed = _read_dicom(io.BytesIO(data), len(data))
            else:
                record = FileRecord(path=str(path), format=kind, sha256=file_sha256(path))
                with open(path, "rb") as handle:
                    parsed = _read_dicom(handle, info.st_size)
            header, patient_id, series_uid, record.position, identifiers = parsed
            record.header = header
            record.identifiers = sorted({token_hash(secret, t) for v in identifiers for t in identifier_tokens(v)})
            record.series_uid = pseudonymize(secret, series_uid, "S") if series_uid else ""
            header = {**header, "PatientID": patient_id}
        elif kind == "companion":
            return FileRecord(path=str(path), format=kind, sha256=""), signature  # hashed with its header
        else:
            record = FileRecord(path=str(path), format=kind, sha256=file_sha256(path))
            if kind == "volume" and path.name.lower().endswith(DETACHED):
                voxels = data_file(path)
                if voxels is not None:
                    if not voxels.is_file():
                        raise ValueError(f"its voxels' file {voxels.name!r} is missing")
                    # the header alone is alike across scans of one protocol: the content is both
                    record.sha256 = hashlib.sha256((record.sha256 + file_sha256(voxels)).encode()).hexdigest()
            if kind == "table":
                return record, signature
            if kind == "json":
                record.header, identifiers = _read_json_facts(path, info.st_size)
                record.identifiers = sorted({token_hash(secret, t) for v in identifiers for t in identifier_tokens(v)})
                return record, signature
            if kind == "mask" and path.name.lower().endswith(VOLUMES):
                # a label map: set aside (see organizer._context); its values tell a lesion's presence
                # where its layout names them (app/label_maps.py)
                record.header = {"VolumeMask": True, "Values": _label_values(path)}
                return record, signature
            if kind == "mask":
                area = _mask_area(path)
                record.header = {"MaskNonEmpty": area > 0, "MaskArea": round(area, 4)}
                return record, signature
            if kind == "image2d":
                _check_plain_image(path)
            elif kind == "volume":
                _check_volume(path)
        found = detect(PATIENT_RULES, header, PurePath(shown))
        if found.rule != "none":
            record.patient, record.patient_rule = pseudonymize(secret, found.value), found.rule
        return record, signature
    except NotAnImage as obj:
        if obj.kind not in ANNOTATIONS:
            return Skipped(shown, skip_reason(obj.kind)), signature
        record.format = "annotation"  # not an item: it marks up the series it references
        record.header = {"Annotation": obj.kind, "Lesion": obj.lesion,
                         "References": [pseudonymize(secret, uid, "S") for uid in obj.series]}
        return record, signature
    except PermissionError:
        return Skipped(shown, "permission denied"), signature
    except Exception as err:  # one bad file must never stop a scan
        why = str(err).replace(str(path), "the file").replace(str(root), "the folder").replace(path.name, "the file")
        return Skipped(shown, f"unreadable: {type(err).__name__}: {why[:120]}"), signature


def _mask_area(path: Path) -> float:
    """The fraction of a mask's pixels that are set."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as mask:
        pixels = np.asarray(mask)
    return float(np.count_nonzero(pixels.reshape(pixels.shape[0], pixels.shape[1], -1).any(axis=2)) / max(1, pixels.shape[0] * pixels.shape[1]))


def _scan_chunk(paths: list[str], root: str, secret: bytes) -> list[tuple[FileRecord | Skipped, list[int] | None]]:
    return [scan_file(Path(p), Path(root), secret) for p in paths]


def list_files(root: Path) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".partial"))
        for name in sorted(names):
            if name not in IGNORED and not name.startswith("."):
                yield Path(folder) / name


def _signature(path: Path) -> list[int] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


def scan_tree(
    root: Path,
    secret: bytes,
    *,
    workers: int = 1,
    cache: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> tuple[list[FileRecord], list[Skipped], dict[str, Any]]:
    """Scan every file under ``root`` with ``workers`` processes (1: in this process).

    ``cache`` maps a file (by a keyed hash of its path: the cache names no file) to what
    an earlier scan found, with the file's size and modification time; unchanged files
    are not read again. Returns the records, the skipped files, and the new cache.
    """
    # The scan allocates many small objects and no reference cycles: the cyclic
    # garbage collector would only walk the growing result lists again and again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _scan_tree(root, secret, workers, cache or {}, progress)
    finally:
        if collecting:
            gc.enable()


def _scan_tree(
    root: Path, secret: bytes, workers: int, cache: dict[str, Any], progress: Progress | None
) -> tuple[list[FileRecord], list[Skipped], dict[str, Any]]:
    all_paths = [str(p) for p in list_files(root)]
    fresh: dict[str, Any] = {}
    records: list[FileRecord] = []
    skipped: list[Skipped] = []
    paths = []
    for path in all_paths:
        key = item_id(secret, path)
        entry = cache.get(key)
        # Identifier hashes before the "T" prefix could read as record numbers: scanned again.
        if entry and entry["signature"] == _signature(Path(path)) and \
                all(h.startswith("T") for h in entry.get("record", {}).get("identifiers", [])):
            fresh[key] = entry
            if "record" in entry:
                records.append(FileRecord(path=path, **entry["record"]))
            else:
                skipped.append(Skipped(path[len(str(root)) + 1 :], **entry["skipped"]))
        else:
            paths.append(path)
    chunk = 64
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    done = len(all_paths) - len(paths)

    def take(results: list[tuple[FileRecord | Skipped, list[int] | None]]) -> None:
        nonlocal done
        for result, signature in results:
            found = isinstance(result, FileRecord)
            (records if found else skipped).append(result)
            if signature:
                path = result.path if found else str(root / result.path)
                kept = {k: v for k, v in vars(result).items() if k != "path"}
                fresh[item_id(secret, path)] = {"signature": signature, "record" if found else "skipped": kept}
        done += len(results)
        report(progress, "Scanning files", done, len(all_paths))

    report(progress, "Scanning files", done, len(all_paths))
    if workers <= 1 or len(chunks) <= 1:
        for part in chunks:
            take(_scan_chunk(part, str(root), secret))
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            for results in pool.map(_scan_chunk, chunks, [str(root)] * len(chunks), [secret] * len(chunks)):
                take(results)
    records.sort(key=lambda r: r.path)
    return records, skipped, fresh
