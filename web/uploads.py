"""One uploaded file, received into a folder of the server's own under a generated name.

Two ways: the request's body is the file (``received``, the kind given as a parameter), or
a multipart form with one file field (``received_form``, the kind read from the file
name's ending; the rest of the name is never kept: it can identify a patient). Either way
the body is counted as it streams, so an upload over the limit is refused before it is
kept, and nothing is written outside the given folder (no system temporary files); a zip
(one DICOM series) is unpacked by the collectors' safe unpacker.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

UPLOAD_LIMIT = 2 << 30  # bytes of one upload (a zipped CT series fits; MAX_VOXELS still guards the decode)
UPLOAD_KINDS = {"dcm": ".dcm", "png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "tif": ".tif", "tiff": ".tif",
                "nii": ".nii", "nii.gz": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "zip": ".zip"}


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"The file is larger than this server takes ({limit:,} bytes).")


def kind_of(file_name: str) -> str:
    """The upload kind of a file name by its ending ("scan.nii.gz" -> "nii.gz"); "" when none fits."""
    lowered = file_name.lower()
    return next((kind for kind in sorted(UPLOAD_KINDS, key=len, reverse=True) if lowered.endswith("." + kind)), "")


async def _finish(target: Path, folder: Path, limit: int) -> Path:
    """The received file, or for a zip the folder it unpacks to."""
    if target.suffix != ".zip":
        return target
    from app.collectors.archives import safe_extract

    series = folder / "series"
    await run_in_threadpool(safe_extract, target, series, max_bytes=limit)
    target.unlink()
    return series


@asynccontextmanager
async def received_form(request: Request, under: Path, limit: int = UPLOAD_LIMIT,
                        field_limit: int = 4096) -> AsyncIterator[tuple[Path, dict[str, str]]]:
    """The one file of a multipart form (as ``received``), and its text fields.

    Raises:
        HTTPException: 400 not a multipart form, no file, two files, or an unknown kind;
            413 over ``limit``.
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind_header, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind_header != b"multipart/form-data" or not boundary:
        raise HTTPException(400, "Send the file as a multipart form (multipart/form-data) with one file field.")
    if int(request.headers.get("content-length") or 0) > limit + 64 * 1024:
        raise _too_large(limit)
    folder = Path(under) / uuid.uuid4().hex
    folder.mkdir(parents=True, mode=0o700)
    fields: dict[str, str] = {}
    part: dict[str, Any] = {}
    files: list[Path] = []
    problem: list[HTTPException] = []

    def header_field(data: bytes, start: int, end: int) -> None:
        part["field"] = part.get("field", b"") + data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        part["value"] = part.get("value", b"") + data[start:end]

    def header_end() -> None:
        part.setdefault("headers", {})[part.pop("field", b"").lower()] = part.pop("value", b"")

    def headers_finished() -> None:
        _, disposition = parse_options_header(part.get("headers", {}).get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        file_name = disposition.get(b"filename")
        part.update(name=name, size=0, text=b"")
        if file_name is None:
            return
        kind = kind_of(file_name.decode("utf-8", "replace"))
        if files:
            problem.append(HTTPException(400, "Send one file per upload."))
        elif not kind:
            problem.append(HTTPException(400, "This kind of file is not read here: send a DICOM file (.dcm), a "
                                              "zipped DICOM series (.zip), PNG, JPEG, TIFF, NIfTI, NRRD or MHA."))
        else:
            files.append(folder / f"upload{UPLOAD_KINDS[kind]}")
            part["out"] = open(files[-1], "wb")

    def part_data(data: bytes, start: int, end: int) -> None:
        part["size"] += end - start
        if "out" in part:
            if part["size"] > limit:
                problem.append(_too_large(limit))
            else:
                part["out"].write(data[start:end])
        elif part["size"] <= field_limit:
            part["text"] += data[start:end]

    def part_end() -> None:
        if "out" in part:
            part.pop("out").close()
        elif part.get("name"):
            fields[part["name"]] = part["text"].decode("utf-8", "replace")
        part.clear()

    parser = MultipartParser(boundary, {"on_header_field": header_field, "on_header_value": header_value,
                                        "on_header_end": header_end, "on_headers_finished": headers_finished,
                                        "on_part_data": part_data, "on_part_end": part_end})
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if problem:
                    raise problem[0]
            parser.finalize()
        except ValueError as err:  # python_multipart's parse errors
            raise HTTPException(400, "The multipart form is malformed; send it again (one file field).") from err
        if problem:
            raise problem[0]
        if not files or files[0].stat().st_size == 0:
            raise HTTPException(400, "The form holds no file (or an empty one): choose the file to upload.")
        yield await _finish(files[0], folder, limit), fields
    finally:
        if "out" in part:
            part["out"].close()
        shutil.rmtree(folder, ignore_errors=True)


@asynccontextmanager
async def received(request: Request, kind: str, under: Path, limit: int = UPLOAD_LIMIT) -> AsyncIterator[Path]:
    """The upload in the request's body as a file (or, for a zip, a folder) under ``under``,
    deleted with its folder when the block ends, whatever happens in it."""
    suffix = UPLOAD_KINDS.get(kind.lower())
    if suffix is None:
        raise HTTPException(400, f"Unknown kind {kind!r}: send one of {', '.join(UPLOAD_KINDS)}.")
    if int(request.headers.get("content-length") or 0) > limit:
        raise _too_large(limit)
    folder = Path(under) / uuid.uuid4().hex
    folder.mkdir(parents=True, mode=0o700)
    try:
        target, size = folder / f"upload{suffix}", 0
        with open(target, "wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                handle.write(chunk)
        if size == 0:
            raise HTTPException(400, "The request body is empty: send the file's bytes as the body.")
        yield await _finish(target, folder, limit)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def said_of_the_upload(message: str, under: Path) -> str:
    """An error's first line, speaking of "the upload" rather than of where the server keeps it."""
    import re

    line = message.splitlines()[0] if message else ""
    return re.sub(re.escape(str(under)) + r"[^\s'\")]*", "the upload", line)
