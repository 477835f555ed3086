"""Privacy audit: look for patient identifiers in what the app wrote (or in any folder).

Two kinds of finding:

- *known identifiers*: tokens the scans read in DICOM headers (patient names, IDs, birth
  dates, accession numbers, addresses, institutions). The workspace keeps only keyed
  hashes of them (``data/private/identifiers.json``, app.private), so the audit finds them
  without anybody storing the values;
- *patterns* that look like identifiers whatever their source: dates (a date followed by
  a time of day is a timestamp of an event and is left alone), record-number-like digit
  runs (8 digits or more, or a short run after MRN/PID/ID), DICOM person names
  (``Family^Given``).

Searched: file and folder names; text files (txt, md, csv, json, log, yaml); PNG text
chunks; ONNX metadata; DICOM headers (their text elements; dates in date elements are
dates of the examination and are not patterns); and, for known identifiers only, the
printable strings of any other file (checkpoints, arrays). Pixels cannot be searched:
the app draws no text into images for that reason.

Auditing a workspace leaves out what holds identifiers by design: ``data/raw/`` (the
inputs themselves) and ``data/private/`` (the map back to them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.private import COMMON_WORDS, identifier_tokens, token_hash

TEXT_SUFFIXES = (".txt", ".md", ".csv", ".json", ".log", ".yaml", ".yml", ".tsv", ".pem")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
MAX_BYTES = 512 << 20  # larger files: names only (said in the result)
_TIME = r"(?![T_\s-]?\d\d:?\d\d)"  # a date followed by a time of day is a timestamp
_DATE = re.compile(
    r"(?<![0-9A-Za-z])(?:"
    r"(?:19|20)\d\d[-/.](?:0[1-9]|1[0-2])[-/.](?:0[1-9]|[12]\d|3[01])"
    r"|(?:0[1-9]|[12]\d|3[01])[-/.](?:0[1-9]|1[0-2])[-/.](?:19|20)\d\d"
    r"|(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    r")(?![0-9A-Za-z])" + _TIME)
_YYYYMMDD = r"(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)"  # a date already, not a record number
_RECORD = re.compile(r"(?<![0-9A-Za-z.,])(?!" + _YYYYMMDD + r")\d{8,}(?![0-9A-Za-z.,])" + _TIME
                     + r"|(?i:\b(?:MRN|PID|MR|ACC)[-_#: ]?\d{4,}\b)")
_PERSON = re.compile(r"[A-Za-z][A-Za-z'-]+\^[A-Za-z][A-Za-z'-]*")
_WORDS = re.compile(rb"[A-Za-z0-9]{4,}")  # the ASCII tokens of a binary file
PATTERNS = (("date", _DATE), ("record number", _RECORD), ("person name", _PERSON))


@dataclass(frozen=True)
class Finding:
    path: str  # relative to the audited folder; a file or folder name with a finding is masked
    where: str  # "file name", "text", "PNG text chunk", "ONNX metadata", "DICOM PatientName", ...
    kind: str  # "known identifier", "date", "record number", "person name"
    excerpt: str  # masked: the first two characters, the rest starred


@dataclass(frozen=True)
class AuditResult:
    root: Path
    files: int
    findings: list[Finding]
    skipped: list[str]  # files too large to read (names checked only)
    excluded: list[str]  # folders left out by design (a workspace's raw inputs and private map)
    known_identifiers: int  # how many identifier hashes were searched for


def _mask(text: str) -> str:
    return text[:2] + "*" * max(0, min(len(text), 12) - 2)


class _Searcher:
    def __init__(self, secret: bytes | None, hashes: set[str]) -> None:
        self.secret, self.hashes = secret, hashes

    def binary(self, data: bytes) -> Iterator[tuple[str, str]]:
        """Known identifiers among the ASCII tokens of ``data`` (each distinct one hashed once)."""
        if not (self.secret and self.hashes):
            return
        for token in {t.upper() for t in _WORDS.findall(data)} - {w.encode() for w in COMMON_WORDS}:
            text = token.decode("ascii")
            if token_hash(self.secret, text) in self.hashes:
                yield "known identifier", _mask(text)

    def text(self, text: str, patterns: bool = True) -> Iterator[tuple[str, str]]:
        """(kind, masked excerpt) of every finding in ``text``."""
        if self.secret and self.hashes:
            for token in identifier_tokens(text):
                if token_hash(self.secret, token) in self.hashes:
                    yield "known identifier", _mask(token)
        if patterns:
            for kind, pattern in PATTERNS:
                for match in pattern.finditer(text):
                    yield kind, _mask(match.group(0))


def audit(path: Path, secret: bytes | None = None, hashes: list[str] | None = None) -> AuditResult:
    """Audit ``path`` (a workspace, a dataset export, a bundle, any folder or file).

    ``secret`` and ``hashes``: the workspace's key and identifier hashes (known identifiers);
    without them only patterns are looked for.
    """
    root = Path(path).expanduser().resolve()
    searcher = _Searcher(secret, set(hashes or []))
    excluded = [root / "data" / "raw", root / "data" / "private", root / "data" / ".pseudonym_key"] \
        if (root / "data").is_dir() and (root / "checkpoints").is_dir() else []
    findings: list[Finding] = []
    skipped: list[str] = []
    files = 0
    flagged: set[str] = set()  # names with a finding: shown masked wherever they are part of a path
    for item in _walk(root, excluded):
        in_name = list(searcher.text(item.name))
        if in_name:
            flagged.add(item.name)
        parts = item.relative_to(root).parts if item != root else (item.name,)
        shown = "/".join(_mask(part) if part in flagged else part for part in parts)
        findings += [Finding(shown, "file name" if item.is_file() else "folder name", kind, excerpt)
                     for kind, excerpt in in_name]
        if not item.is_file() or item.is_symlink():
            continue
        files += 1
        if item.stat().st_size > MAX_BYTES:
            skipped.append(shown)
            continue
        findings += [Finding(shown, where, kind, excerpt) for where, kind, excerpt in _content(item, searcher)]
    return AuditResult(root, files, findings, skipped,
                       [e.relative_to(root).as_posix() for e in excluded if e.exists()], len(searcher.hashes))


def _walk(root: Path, excluded: list[Path]) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for item in sorted(root.rglob("*")):
        if any(item == e or e in item.parents for e in excluded) or (root / "data" / "locks") in item.parents:
            continue
        yield item


def _content(path: Path, searcher: _Searcher) -> Iterator[tuple[str, str, str]]:
    name = path.name.lower()
    data = path.read_bytes()
    if name.endswith(TEXT_SUFFIXES):
        text = data.decode("utf-8", "replace")
        if name.endswith(".json"):
            yield from _json(text, searcher)
        else:
            yield from (("text", kind, excerpt) for kind, excerpt in searcher.text(text))
        return
    if data[:8] == b"\x89PNG\r\n\x1a\n":  # pixels are compressed: the text chunks are what can be read
        yield from _png(path, searcher)
    elif name.endswith(".onnx"):  # weights are numbers: the metadata is what holds text
        yield from _onnx(path, searcher)
    elif name.endswith(DICOM_SUFFIXES) or data[128:132] == b"DICM":
        yield from _dicom(path, searcher)
    elif data[:4] == b"PK\x03\x04":  # a checkpoint (.pt) or an .npz: its members that are not numbers
        yield from _zip(path, searcher)
    else:  # any other file: its ASCII words, for known identifiers only (patterns would match noise)
        yield from (("bytes", kind, excerpt) for kind, excerpt in searcher.binary(data))


_TENSOR = re.compile(r"(^|/)data/\d+$")  # a PyTorch checkpoint's raw tensor storages
_NUMERIC_NPY = re.compile(rb"'descr': '[<>|=]?[fiucb]\d*'")


def _zip(path: Path, searcher: _Searcher) -> Iterator[tuple[str, str, str]]:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.is_dir() or _TENSOR.search(member.filename):
                    continue
                with archive.open(member) as handle:
                    head = handle.read(512)
                    if member.filename.endswith(".npy") and _NUMERIC_NPY.search(head):
                        continue
                    data = head + handle.read()
                yield from ((f"bytes of {member.filename}", kind, excerpt) for kind, excerpt in searcher.binary(data))
    except (zipfile.BadZipFile, OSError):
        yield from (("bytes", kind, excerpt) for kind, excerpt in searcher.binary(path.read_bytes()))


def _json(text: str, searcher: _Searcher) -> Iterator[tuple[str, str, str]]:
    """Keys and string values (numbers are not identifiers; their digits would look like them)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        yield from (("text", kind, excerpt) for kind, excerpt in searcher.text(text))
        return
    for value in _strings(document):
        yield from (("JSON text", kind, excerpt) for kind, excerpt in searcher.text(value))


# Keys whose values are the app's own digests (hex; one in a few thousand is all digits and
# would read as a record number): a digest cannot hold an identifier, so they are not searched.
DIGEST_KEYS = frozenset({"version", "dataset_version", "key_id", "sha256", "signature"})


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            if key in DIGEST_KEYS and isinstance(inner, str) and re.fullmatch(r"[0-9a-f]{8,}", inner):
                continue
            yield from _strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(inner)


def _png(path: Path, searcher: _Searcher) -> Iterator[tuple[str, str, str]]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            chunks = dict(getattr(image, "text", {}) or {})
    except OSError:
        return
    for key, value in chunks.items():
        yield from (("PNG text chunk", kind, excerpt) for kind, excerpt in searcher.text(f"{key} {value}"))


def _onnx(path: Path, searcher: _Searcher) -> Iterator[tuple[str, str, str]]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX after all: its strings are still searched
        return
    texts = [model.producer_name, model.doc_string, model.graph.name, model.graph.doc_string,
             *[f"{p.key} {p.value}" for p in model.metadata_props]]
    for text in texts:
        yield from (("ONNX metadata", kind, excerpt) for kind, excerpt in searcher.text(text or ""))


TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC", "AE"}  # dates (DA, DT, TM) are the examination's


def _dicom(path: Path, searcher: _Searcher) -> Iterator[tuple[str, str, str]]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - unreadable: its strings are still searched
        return
    found: list[tuple[str, str, str]] = []

    def visit(dataset: Any, element: Any) -> None:
        if element.VR not in TEXT_VRS and element.VR not in ("DA", "DT"):
            return
        values = element.value if isinstance(element.value, pydicom.multival.MultiValue) else [element.value]
        for value in values:
            text = str(value or "")
            where = f"DICOM {element.keyword or element.tag}"
            found.extend((where, kind, excerpt) for kind, excerpt in
                         searcher.text(text, patterns=element.VR in TEXT_VRS))

    ds.walk(visit)
    yield from found


def audit_workspace(ws: Any, path: Path | None = None) -> AuditResult:
    """Audit ``path`` (default: the workspace itself) with the workspace's known identifiers."""
    hashes = ws.private.identifier_hashes()
    key = ws.data_dir / ".pseudonym_key"
    return audit(path or ws.root, ws.secret() if key.exists() else None, hashes)
