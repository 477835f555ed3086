"""The Cancer Imaging Archive (TCIA), with tcia-utils for the queries (NBIA API).

Series are found with ``tcia_utils.nbia.getSeries`` (collection, modality, body part),
limited to the first ``max_patients`` patients; each series zip comes from the same
NBIA endpoint tcia-utils uses, through the resumable download engine (retries,
resume, disk check), is CRC-checked, its SHA-256 recorded, its file count compared
with the archive's ImageCount, and unpacked safely under hashed folder names. A
rerun skips finished series. Restricted collections: set MEDANOMALY_TCIA_TOKEN to a
TCIA access token (sent as a bearer token with the downloads).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass
from typing import Any

from app.collectors import CollectResult, option, register_collector
from app.collectors.archives import safe_extract
from app.collectors.http import download, new_session
from core.errors import CollectError
from app.progress import Progress, report
from app.workspace import now_iso

LICENCE = "per collection (most TCIA collections: CC BY 4.0; see the collection's page and its data usage policy)"


def _nbia() -> Any:
    from app.collectors.extras import client

    logging.getLogger("tcia_utils").setLevel(logging.CRITICAL)  # its errors become ours, with advice
    return client("tcia_utils.nbia", "TCIA")


def list_collections() -> list[str]:
    """Collection names, as TCIA lists them.

    Raises:
        CollectError: TCIA cannot be reached.
    """
    found = _nbia().getCollections()
    if not found:
        raise CollectError("TCIA returned no collection list: no network? Check the connection and run again.")
    return sorted(str(c.get("Collection", c)) if isinstance(c, dict) else str(c) for c in found)


def _why_no_series(nbia: Any, collection: str, modality: str | None, body_part: str | None) -> str:
    """An empty answer means no network, a name TCIA does not know, or filters nothing matches:
    asking for the collection list tells which (tcia-utils returns nothing for all three)."""
    known = nbia.getCollections()
    if not known:
        return ("Cannot reach TCIA (services.cancerimagingarchive.net): check the network, a proxy or VPN, "
                "and run again.")
    names = [str(c.get("Collection", c)) if isinstance(c, dict) else str(c) for c in known]
    if collection.lower() not in {n.lower() for n in names}:
        close = difflib.get_close_matches(collection, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return f"TCIA has no collection named {collection!r}.{hint} See them all: collect tcia --list."
    filters = " and ".join(f for f in (f"modality {modality}" if modality else "",
                                        f"body part {body_part}" if body_part else "") if f)
    return (f"Collection {collection!r} has no series with {filters or 'these filters'}: "
            "drop or change the filter (DICOM terms: CT, MR, PT; CHEST, HEAD...).")


def _hashed(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TciaOptions:
    collection: str = option(help="collection name, e.g. LIDC-IDRI", positional=True,
                             ask="Collection (e.g. LIDC-IDRI; `main.py collect tcia --list` lists them):")
    list: bool = option(False, listing=True, help="list the collections instead of downloading")
    modality: str | None = option(None, help="only series of this modality (CT, MR, PT, ...)",
                                  ask="Only this modality (CT, MR, PT; empty: all):")
    body_part: str | None = option(None, help="only series of this body part (BodyPartExamined, e.g. CHEST)")
    max_patients: int | None = option(None, help="only the first N patients", ask="At most how many patients?",
                                      ask_default=20)
    name: str | None = option(None, help="dataset name (default: the collection's name)")

@register_collector("tcia", "TCIA collection (The Cancer Imaging Archive: CT, MR, PET...; by modality and body part)",
                    options=TciaOptions, needs_network=True)
def collect_tcia(
    workspace: Any,
    *,
    collection: str,
    modality: str | None = None,
    body_part: str | None = None,
    max_patients: int | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> CollectResult:
    """Download the series of ``collection`` (filtered) into data/raw/tcia/<name>/.

    Raises:
        CollectError: no network, no matching series, a damaged or incomplete series.
    """
    nbia = _nbia()
    series = nbia.getSeries(collection=collection, modality=modality or "", bodyPart=body_part or "")
    if not series:
        raise CollectError(_why_no_series(nbia, collection, modality, body_part))
    patients = sorted({s.get("PatientID", "") for s in series})
    if max_patients:
        keep = set(patients[:max_patients])
        series = [s for s in series if s.get("PatientID", "") in keep]
    name = name or collection.lower().replace(" ", "-")
    target = workspace.raw_target("tcia", name)
    entry = workspace.load_index().get(name, {})
    done: dict[str, str] = dict(entry.get("series_done", {}))
    workspace.record_dataset(name, source="tcia", collection=collection, raw_path=workspace.relative(target),
                             complete=False, licence=LICENCE, started=entry.get("started", now_iso()),
                             series_done=done)
    token = os.environ.get("MEDANOMALY_TCIA_TOKEN")
    session = new_session({"Authorization": f"Bearer {token}"} if token else None)
    base = nbia.setApiUrl("getImage", "")
    for k, item in enumerate(series):
        uid = str(item["SeriesInstanceUID"])
        key = _hashed(uid)
        folder = target / _hashed(str(item.get("PatientID", ""))) / key
        if key in done and folder.is_dir():
            continue
        got = download(f"{base}getImage?NewFileNames=Yes&SeriesInstanceUID={uid}",
                       target.parent / ".downloads" / f"{key}.zip", session=session, progress=progress,
                       task=f"Series {k + 1}/{len(series)}")
        try:
            with zipfile.ZipFile(got.path) as zf:
                broken = zf.testzip()
                count = sum(1 for m in zf.infolist() if m.filename.lower().endswith(".dcm"))
        except zipfile.BadZipFile:
            broken, count = got.path.name, 0
        expected = int(item.get("ImageCount") or 0)
        if broken is not None or (expected and count != expected):
            got.path.unlink()
            raise CollectError(f"Series {k + 1} of {collection} arrived damaged or incomplete "
                               f"({count} of {expected} images): it was deleted; run again.")
        safe_extract(got.path, folder, progress=progress)
        got.path.unlink()
        done[key] = got.sha256
        workspace.record_dataset(name, series_done=done)
        report(progress, f"TCIA {collection}", k + 1, len(series))
    files = sum(1 for _ in target.rglob("*.dcm"))
    workspace.record_dataset(name, source="tcia", collection=collection, raw_path=workspace.relative(target),
                             files=files, complete=True, collected=now_iso(), licence=LICENCE, series_done=done,
                             filters={"modality": modality, "body_part": body_part, "max_patients": max_patients})
    kept = len({s.get("PatientID", "") for s in series})
    return CollectResult(name, target, files, f"({len(series)} series of {kept} patients from TCIA {collection})")
