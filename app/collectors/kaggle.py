"""Kaggle datasets, with the official ``kaggle`` package (imported only here, and only once
credentials are known to exist: older releases exit at import without them).

Credentials, in the places Kaggle documents: an access token (KAGGLE_API_TOKEN, or
~/.kaggle/access_token), KAGGLE_USERNAME + KAGGLE_KEY, or kaggle.json in
KAGGLE_CONFIG_DIR, ~/.kaggle or ~/.config/kaggle. The package downloads the dataset's
zip (resuming a partial file and retrying dropped transfers itself); the zip's CRCs
are checked, its SHA-256 recorded, and it is unpacked safely (app/collectors/archives).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.collectors import CollectResult, option, register_collector
from app.collectors.archives import safe_extract
from app.collectors.http import check_disk, sha256_of
from core.errors import CollectError
from app.progress import Progress, report
from app.workspace import now_iso

log = logging.getLogger(__name__)
BUSY = (429, 500, 502, 503, 504)
RETRIES = 5

SETUP = ("Set up Kaggle credentials: on kaggle.com, Settings -> API -> 'Create New Token'; put the kaggle.json "
         "it gives in ~/.kaggle/ (chmod 600 ~/.kaggle/kaggle.json), or set KAGGLE_USERNAME and KAGGLE_KEY, or "
         "KAGGLE_API_TOKEN for an access token. Then run again.")


@dataclass(frozen=True)
class Credentials:
    kind: str  # "access token", "environment" or "kaggle.json"
    warning: str = ""  # e.g. kaggle.json readable by others


def config_dirs() -> list[Path]:
    home = Path.home()
    chosen = os.environ.get("KAGGLE_CONFIG_DIR")
    if chosen:
        return [Path(chosen)]
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [home / ".kaggle", xdg / "kaggle"]


def find_credentials() -> Credentials:
    """Where Kaggle credentials are, without importing the package.

    Raises:
        CollectError: there are none (the message says how to set them up).
    """
    if os.environ.get("KAGGLE_API_TOKEN") or any((Path.home() / ".kaggle" / n).is_file()
                                                 for n in ("access_token", "access_token.txt")):
        return Credentials("access token")
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return Credentials("environment")
    for folder in config_dirs():
        file = folder / "kaggle.json"
        if file.is_file():
            mode = file.stat().st_mode
            warning = (f"{file} can be read by other users of this machine: run chmod 600 {file}"
                       if mode & (stat.S_IRWXG | stat.S_IRWXO) else "")
            if warning:
                log.warning(warning)
            return Credentials("kaggle.json", warning)
    raise CollectError(f"No Kaggle credentials found. {SETUP}")


def _api() -> Any:
    find_credentials()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
    except SystemExit as err:  # the package's own exit when it finds nothing it accepts
        raise CollectError(f"Kaggle did not accept the credentials. {SETUP}") from err
    except ImportError as err:
        from app.collectors.extras import INSTALL

        raise CollectError(f"The kaggle package is missing or broken ({err}). {INSTALL}") from err
    return api


def _wait(response: Any, attempt: int) -> float:
    try:
        return min(300.0, float(response.headers.get("Retry-After")))
    except (TypeError, ValueError):
        return min(300.0, 2.0 ** attempt)


def _explain(err: Exception, what: str) -> CollectError:
    import requests

    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(err, requests.ConnectionError):
        return CollectError(f"Cannot reach Kaggle ({what}): no network? Run the same command again later; "
                            "a partial download resumes.")
    if status in (401, 403):
        return CollectError(f"Kaggle refused {what} ({status}): check the credentials, and accept the dataset's "
                            "rules on its Kaggle page if it has any.")
    if status == 404:
        return CollectError(f"Kaggle has no dataset {what!r} (404): check OWNER/DATASET (collect kaggle --search).")
    return CollectError(f"Kaggle failed on {what}: {err}")


def search(term: str, limit: int = 20) -> list[dict[str, Any]]:
    """Datasets matching ``term``: ref, title, size in bytes, licence."""
    import requests

    api = _api()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            found = api.dataset_list(search=term) or []
    except (requests.RequestException, ValueError) as err:
        raise _explain(err, f"the search for {term!r}") from err
    return [{"ref": d.ref, "title": d.title or "", "bytes": d.total_bytes or 0, "licence": d.license_name or ""}
            for d in found[:limit]]


@dataclass(frozen=True)
class KaggleOptions:
    dataset: str = option(help="OWNER/DATASET, as in the dataset's kaggle.com address", positional=True)
    search: str | None = option(None, metavar="TERM", listing=True,
                                help="list matching datasets instead of downloading")
    name: str | None = option(None, help="dataset name (default: the dataset's slug)")

@register_collector("kaggle", "Kaggle dataset (OWNER/DATASET; needs Kaggle credentials)", options=KaggleOptions,
                    needs_network=True)
def collect_kaggle(
    workspace: Any,
    *,
    dataset: str,
    name: str | None = None,
    progress: Progress | None = None,
) -> CollectResult:
    """Download and unpack Kaggle dataset ``dataset`` (OWNER/DATASET) into data/raw/kaggle/<name>/.

    Raises:
        CollectError: no credentials, no network, no such dataset, a damaged zip.
    """
    import requests

    if not re.fullmatch(r"[\w.-]+/[\w.-]+", dataset or ""):
        raise CollectError(f"Give the dataset as OWNER/DATASET (as in its kaggle.com URL), not {dataset!r}.")
    name = name or dataset.split("/")[1]
    target = workspace.raw_target("kaggle", name)
    downloads = workspace.raw_dir / "kaggle" / ".downloads"
    credentials = find_credentials()
    api = _api()
    workspace.record_dataset(name, source="kaggle", ref=dataset, complete=False, started=now_iso(),
                             raw_path=workspace.relative(target))
    size, licence = _listing(api, dataset)
    check_disk(downloads, 2 * size)  # the zip, then what it unpacks to
    archive = downloads / f"{dataset.split('/')[1]}.zip"
    task = f"Downloading {dataset} (Kaggle)"
    for attempt in range(RETRIES + 1):
        try:
            with contextlib.redirect_stdout(io.StringIO()), _watch(archive, size, progress, task):
                api.dataset_download_files(dataset, path=str(downloads), quiet=True, unzip=False)
            break
        except (requests.RequestException, ValueError) as err:
            response = getattr(err, "response", None)
            if getattr(response, "status_code", None) in BUSY and attempt < RETRIES:
                time.sleep(_wait(response, attempt))  # the package retries dropped transfers, not busy answers
                continue
            raise _explain(err, dataset) from err
    if not archive.is_file():
        raise CollectError(f"Kaggle sent no file for {dataset}; run again.")
    try:
        with zipfile.ZipFile(archive) as zf:
            broken = zf.testzip()
    except zipfile.BadZipFile:
        broken = archive.name
    if broken is not None:
        archive.unlink()
        raise CollectError(f"The download of {dataset} is damaged ({broken} fails its CRC): it was deleted; run again.")
    digest = sha256_of(archive)
    files = safe_extract(archive, target, progress=progress)
    archive.unlink()
    workspace.record_dataset(name, source="kaggle", ref=dataset, raw_path=workspace.relative(target), files=files,
                             complete=True, collected=now_iso(), sha256=digest, licence=licence)
    note = f"(Kaggle {dataset}; licence: {licence})" + (f" Warning: {credentials.warning}" if credentials.warning else "")
    return CollectResult(name, target, files, note)


def _listing(api: Any, dataset: str) -> tuple[int, str]:
    """(size in bytes or 0, licence) as Kaggle lists the dataset."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for found in api.dataset_list(search=dataset.split("/")[1]) or []:
                if found.ref == dataset:
                    return int(found.total_bytes or 0), found.license_name or f"see https://www.kaggle.com/datasets/{dataset}"
    except Exception as err:  # noqa: BLE001 - size and licence are courtesies; the download says what is wrong
        log.debug("Kaggle listing of %s unavailable: %s", dataset, type(err).__name__)
    return 0, f"see https://www.kaggle.com/datasets/{dataset}"


@contextlib.contextmanager
def _watch(path: Path, total: int, progress: Progress | None, task: str) -> Any:
    """Report the growing size of ``path`` while the package downloads it (size, speed, ETA)."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            done = path.stat().st_size if path.exists() else 0
            report(progress, task, done, max(total, done) or None, unit="bytes")

    watcher = threading.Thread(target=poll, daemon=True)
    if progress is not None:
        watcher.start()
    try:
        yield
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
        done = path.stat().st_size if path.exists() else 0
        report(progress, task, done, max(total, done) or None, unit="bytes")
