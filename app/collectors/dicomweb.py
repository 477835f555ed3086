"""DICOMweb (a hospital PACS, Orthanc, a cloud DICOM store), with dicomweb-client.

QIDO-RS finds the studies (one ``--study`` UID, or every study, optionally of one
modality, up to ``max_studies``) and their instances; WADO-RS retrieves each instance.
Instances are saved one file each under hashed folder names (UIDs can identify a
visit; the files themselves are raw data, pseudonymized by Organize); an instance
already on disk is not fetched again, so an interrupted retrieval resumes. 429 and
5xx answers are retried with backoff (urllib3 Retry, Retry-After honoured).

Credentials, from the environment (never stored): MEDANOMALY_DICOMWEB_TOKEN (a bearer
token), or MEDANOMALY_DICOMWEB_USER and MEDANOMALY_DICOMWEB_PASSWORD (HTTP basic).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.collectors import CollectResult, option, register_collector
from core.errors import CollectError
from app.progress import Progress, report
from app.workspace import now_iso

SERIES_UID, SOP_UID, STUDY_UID = "0020000E", "00080018", "0020000D"


def _session() -> Any:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    # Busy answers are retried patiently; a refused or unreachable address only twice.
    retry = Retry(total=8, connect=2, read=3, status=6, backoff_factor=1.0, backoff_max=60,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=("GET",),
                  respect_retry_after_header=True, raise_on_status=False)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    token = os.environ.get("MEDANOMALY_DICOMWEB_TOKEN")
    user, password = os.environ.get("MEDANOMALY_DICOMWEB_USER"), os.environ.get("MEDANOMALY_DICOMWEB_PASSWORD")
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif user and password:
        session.auth = (user, password)
    return session


def _hashed(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:16]


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _default_name(url: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", urlsplit(url).netloc or "pacs").strip("_") or "pacs"


@dataclass(frozen=True)
class DicomwebOptions:
    url: str = option(help="the DICOMweb root, e.g. https://pacs.example.org/dicom-web", positional=True, kind="url",
                      ask="DICOMweb address (e.g. https://pacs.example.org/dicom-web):")
    study: str | None = option(None, metavar="UID", help="one study (StudyInstanceUID); default: search")
    modality: str | None = option(None, help="only studies with this modality (e.g. CT, MR, CR)",
                                  ask="Only studies with this modality (empty: all):")
    max_studies: int = option(50, help="at most this many studies (default 50)", ask="At most how many studies?",
                              ask_default=20)
    name: str | None = option(None, help="dataset name (default: the server's name)")

@register_collector("dicomweb", "A PACS or DICOM store (DICOMweb: QIDO-RS search, WADO-RS retrieve)",
                    options=DicomwebOptions, needs_network=True)
def collect_dicomweb(
    workspace: Any,
    *,
    url: str,
    study: str | None = None,
    modality: str | None = None,
    max_studies: int = 50,
    name: str | None = None,
    progress: Progress | None = None,
) -> CollectResult:
    """Retrieve studies from the DICOMweb service at ``url`` into ``data/raw/dicomweb/<name>/``.

    Raises:
        CollectError: the service cannot be reached, refuses the credentials, or has no
            matching study.
    """
    import requests

    from app.collectors.extras import client

    DICOMwebClient = client("dicomweb_client.api", "DICOMweb").DICOMwebClient  # noqa: N806 - the class
    name = name or _default_name(url)
    target = workspace.raw_target("dicomweb", name)
    target.mkdir(parents=True, exist_ok=True)
    host = urlsplit(url).netloc or url
    workspace.record_dataset(name, source="dicomweb", raw_path=workspace.relative(target), complete=False,
                             licence="as set by the PACS owner (institutional data: follow your data-use agreement)",
                             started=now_iso(), url_host=host)
    client = DICOMwebClient(url=url.rstrip("/"), session=_session())
    client.set_http_retry_params(retry=False)  # the session's urllib3 Retry does it, Retry-After included
    try:
        if study:
            studies = [study]
        else:
            filters = {"ModalitiesInStudy": modality} if modality else None
            found = client.search_for_studies(search_filters=filters, limit=max_studies)
            studies = [_value(s, STUDY_UID) for s in found][:max_studies]
        if not studies:
            raise CollectError(f"No study{' of modality ' + modality if modality else ''} at {host}.")
        instances = []
        for uid in studies:
            for item in client.search_for_instances(study_instance_uid=uid):
                instances.append((uid, _value(item, SERIES_UID), _value(item, SOP_UID)))
        if not instances:
            raise CollectError(f"The {len(studies)} matching studies at {host} hold no instance.")
        fetched = 0
        for k, (study_uid, series_uid, sop_uid) in enumerate(instances):
            path = target / _hashed(study_uid) / _hashed(series_uid) / f"{_hashed(sop_uid)}.dcm"
            if not path.exists():
                dataset = client.retrieve_instance(study_uid, series_uid, sop_uid)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".part")
                dataset.save_as(tmp, enforce_file_format=True)
                tmp.replace(path)
                fetched += 1
            report(progress, f"Retrieving instances from {host}", k + 1, len(instances))
    except requests.HTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        if status in (401, 403):
            raise CollectError(f"{host} refused the request ({status}): set MEDANOMALY_DICOMWEB_TOKEN, or "
                               "MEDANOMALY_DICOMWEB_USER and MEDANOMALY_DICOMWEB_PASSWORD (see the user guide).") from err
        raise CollectError(f"{host} answered {status}: {err}. Run the same command again to resume.") from err
    except requests.ConnectionError as err:
        raise CollectError(f"Cannot reach the DICOMweb service at {url}: check the address, the network or VPN, "
                           "and run again (instances already retrieved are kept).") from err
    files = sum(1 for _ in target.rglob("*.dcm"))
    workspace.record_dataset(name, source="dicomweb", raw_path=workspace.relative(target), files=files,
                             complete=True, collected=now_iso(), studies=len(studies))
    return CollectResult(name, target, files, f"({fetched} retrieved now, {len(studies)} studies from {host})")
