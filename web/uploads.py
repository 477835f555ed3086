"""One uploaded file, received into a folder of the server's own under a generated name.

The file's own name is never asked for (it can identify a patient); the kind of file is.
The body is counted as it streams, so an upload over the limit is refused before it is
kept; a zip (one DICOM series) is unpacked by the collectors' safe unpacker.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

UPLOAD_LIMIT = 2 << 30  # bytes of one upload (a zipped CT series fits; MAX_VOXELS still guards the decode)
UPLOAD_KINDS = {"dcm": ".dcm", "png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "tif": ".tif", "tiff": ".tif",
                "nii": ".nii", "nii.gz": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "zip": ".zip"}


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"The file is larger than this server takes ({limit:,} bytes).")


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
        if suffix == ".zip":
            from app.collectors.archives import safe_extract

            series = folder / "series"
            await run_in_threadpool(safe_extract, target, series, max_bytes=limit)
            target.unlink()
            target = series
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def said_of_the_upload(message: str, under: Path) -> str:
    """An error's first line, speaking of "the upload" rather than of where the server keeps it."""
    import re

    line = message.splitlines()[0] if message else ""
    return re.sub(re.escape(str(under)) + r"[^\s'\")]*", "the upload", line)
