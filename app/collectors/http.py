"""Downloads that survive a dropped connection (requests).

A file is fetched into ``NAME.part`` beside its destination; an interrupted transfer
resumes from where it stopped with an HTTP Range request (on the next attempt, or the
next run), 429 and 5xx answers and dropped connections are retried with exponential
backoff (``Retry-After`` honoured), the free disk is checked before any byte is
written, and the file takes its final name only when whole and, when a SHA-256 is
known, verified. Progress is reported in bytes (size, speed and ETA in the menus).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.errors import CollectError
from app.progress import Progress, report

CHUNK = 1 << 16  # what a cut connection can lose: the chunk being read
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
DISK_MARGIN = 256 << 20  # keep this much free beyond what a download needs


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str
    resumed_from: int  # bytes already on disk when this call began (0: a fresh download)
    attempts: int  # requests made (1 when nothing went wrong)


class _Again(Exception):
    """A transient failure: wait and try again (resuming)."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def new_session(headers: dict[str, str] | None = None) -> Any:
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = "MedAnomaly-Workbench"
    session.headers.update(headers or {})
    return session


def check_disk(folder: Path, needed: int) -> None:
    """Refuse to start a download the disk cannot hold (with a margin)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed + DISK_MARGIN > free:
        raise CollectError(
            f"Not enough free disk in {folder}: the download needs {_size(needed)} (+ {_size(DISK_MARGIN)} spare), "
            f"{_size(free)} is free. Free some space or use a workspace on a larger disk (--workspace)."
        )


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to backoff


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    session: Any = None,
    progress: Progress | None = None,
    task: str | None = None,
    retries: int = 6,
    backoff: float = 1.0,
    timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Downloaded:
    """Fetch ``url`` to ``dest``; ``dest`` appears only when whole (and matching ``sha256``).

    Raises:
        CollectError: the server refuses (401/403/404), the host cannot be reached, the
            retries run out (the partial file is kept: running again resumes), the disk
            is too small, or the checksum is wrong (the file is deleted).
    """
    import requests

    dest = Path(dest)
    name, host = dest.name, urlsplit(url).netloc or url
    if dest.exists() and (sha256 is None or sha256_of(dest) == sha256.lower()):
        size = dest.stat().st_size
        report(progress, task or name, size, size, unit="bytes")
        return Downloaded(dest, size, sha256_of(dest), size, 0)
    part = dest.with_name(dest.name + ".part")
    session = session or new_session()
    began = part.stat().st_size if part.exists() else 0
    attempts, failures = 0, 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        attempts += 1
        try:
            headers = {"Range": f"bytes={have}-", "Accept-Encoding": "identity"} if have else {"Accept-Encoding": "identity"}
            with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
                status = response.status_code
                if status == 416 and have:
                    break  # nothing left past what we hold: verify it below
                if status in RETRY_STATUS:
                    raise _Again(f"the server answered {status}", _retry_after(response.headers.get("Retry-After")))
                if status in (401, 403):
                    raise CollectError(f"{host} refused {name} ({status}): check your credentials or access rights "
                                       "for this dataset (see the user guide, Collectors).")
                if status == 404:
                    raise CollectError(f"{name} is not at {url} (404): the source may have moved it.")
                if status >= 400:
                    raise CollectError(f"{host} answered {status} for {name}.")
                if have and status != 206:
                    have = 0  # the server ignored the range: start over
                length = int(response.headers.get("Content-Length") or 0)
                total = have + length if length else None
                check_disk(dest.parent, length)
                done = have
                with open(part, "ab" if have else "wb") as handle:
                    for chunk in response.iter_content(CHUNK):
                        handle.write(chunk)
                        done += len(chunk)
                        report(progress, task or name, done, total, unit="bytes")
                if total is not None and done < total:
                    raise _Again(f"the connection closed after {_size(done)} of {_size(total)}")
            break
        except (_Again, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
            if _unreachable(err):
                raise CollectError(f"Cannot reach {host}: no network, or the name does not resolve. "
                                   "Check the connection (or proxy settings) and run the same command again.") from err
            moved = (part.stat().st_size if part.exists() else 0) > have
            failures = 1 if moved else failures + 1  # a flaky line that keeps moving never gives up
            if failures > retries:
                kept = part.stat().st_size if part.exists() else 0
                raise CollectError(f"Downloading {name} from {host} failed {failures} times ({err}). "
                                   f"{_size(kept)} are kept: run the same command again to resume.") from err
            wait = getattr(err, "wait", None)
            sleep(min(300.0, wait if wait is not None else backoff * 2 ** (failures - 1)))
    digest = sha256_of(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise CollectError(f"{name} does not match its published SHA-256 (got {digest[:12]}..., expected "
                           f"{sha256[:12]}...): the file was deleted. Run again to download it afresh.")
    part.replace(dest)
    return Downloaded(dest, dest.stat().st_size, digest, began, attempts)


def _unreachable(err: BaseException) -> bool:
    """A failed name lookup or a refused connection on the first byte: no use retrying for minutes."""
    text = repr(err)
    return any(s in text for s in ("NameResolutionError", "Name or service not known", "nodename nor servname",
                                   "Temporary failure in name resolution", "No address associated"))
