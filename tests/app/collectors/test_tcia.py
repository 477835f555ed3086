"""The TCIA collector with tcia-utils, against a local server answering like the NBIA API."""

import io
import zipfile

import pytest

from app.collectors import collect
from core.errors import CollectError
from tests.conftest import shared
from tests.fakes.http_server import FakeServer, Route

BASE = "/nbia-api/services/v4/"


def _series_zip(files) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for k, path in enumerate(files):
            zf.writestr(f"1-{k + 1:03d}.dcm", path.read_bytes())
    return buffer.getvalue()


@pytest.fixture
def nbia(monkeypatch):
    from tcia_utils import nbia as module

    dicoms = sorted(shared("dicom/mr_brain_t1w_series").glob("*.dcm"))
    zips = {"1.2.3.1": _series_zip(dicoms[:4]), "1.2.3.2": _series_zip(dicoms[4:7]), "1.2.3.3": _series_zip(dicoms[7:9])}
    listing = [
        {"SeriesInstanceUID": "1.2.3.1", "PatientID": "TCGA-01", "Modality": "MR", "ImageCount": 4},
        {"SeriesInstanceUID": "1.2.3.2", "PatientID": "TCGA-02", "Modality": "MR", "ImageCount": 3},
        {"SeriesInstanceUID": "1.2.3.3", "PatientID": "TCGA-03", "Modality": "MR", "ImageCount": 2},
    ]
    with FakeServer() as server:
        monkeypatch.setattr(module, "setApiUrl", lambda endpoint, api_url="nbia": f"{server.url}{BASE}")
        server.routes[f"{BASE}getSeries"] = Route(
            lambda r: [s for s in listing if r["query"].get("Modality", ["MR"])[0] == s["Modality"]],
            content_type="application/json")
        server.routes[f"{BASE}getCollectionValues"] = Route([{"Collection": "TCGA-GBM"}], content_type="application/json")
        server.routes[f"{BASE}getImage"] = Route(lambda r: zips[r["query"]["SeriesInstanceUID"][0]],
                                                 content_type="application/zip")
        yield server, zips


def test_tcia_series_are_filtered_limited_resumed_and_verified(ws, nbia, monkeypatch) -> None:
    import time

    from app.collectors.tcia import list_collections

    monkeypatch.setattr(time, "sleep", lambda _: None)
    server, zips = nbia
    assert list_collections() == ["TCGA-GBM"]
    server.routes[f"{BASE}getImage"].statuses = [503]
    server.routes[f"{BASE}getImage"].cut_after = [None, 70_000]  # the second answer is cut, then resumed
    result = collect("tcia", ws, collection="TCGA-GBM", modality="MR", max_patients=2)
    assert result.files == 7 and "2 series of 2 patients" in result.note
    asked = server.requests_to(f"{BASE}getSeries")[0].query
    assert asked["Collection"] == ["TCGA-GBM"] and asked["Modality"] == ["MR"]
    images = server.requests_to(f"{BASE}getImage")
    assert [r.status for r in images][:2] == [503, 200] and any(r.headers.get("Range") for r in images)
    entry = ws.load_index()["tcga-gbm"]
    assert entry["complete"] and len(entry["series_done"]) == 2 and "TCGA-01" not in str(entry)
    before = len(server.requests_to(f"{BASE}getImage"))
    collect("tcia", ws, collection="TCGA-GBM", modality="MR", max_patients=2)
    assert len(server.requests_to(f"{BASE}getImage")) == before, "finished series are not fetched again"


def test_an_incomplete_series_is_rejected(ws, nbia) -> None:
    server, zips = nbia
    zips["1.2.3.1"] = _series_zip(sorted(shared("dicom/mr_brain_t1w_series").glob("*.dcm"))[:3])  # 3 of 4
    with pytest.raises(CollectError, match="3 of 4 images"):
        collect("tcia", ws, collection="TCGA-GBM", max_patients=1)
    assert not ws.load_index()["tcga-gbm"]["complete"]


def test_an_unknown_collection_or_no_network_is_a_clear_message(ws, nbia) -> None:
    server, _ = nbia
    with pytest.raises(CollectError, match="has no series with modality PET: drop or change the filter"):
        collect("tcia", ws, collection="TCGA-GBM", modality="PET")
    server.routes[f"{BASE}getSeries"] = __import__("tests.fakes.http_server", fromlist=["Route"]).Route(
        [], content_type="application/json")
    with pytest.raises(CollectError, match="no collection named 'TCGA-GMB'. Did you mean TCGA-GBM"):
        collect("tcia", ws, collection="TCGA-GMB")
    del server.routes[f"{BASE}getCollectionValues"]  # as without network: tcia-utils answers nothing
    with pytest.raises(CollectError, match="^Cannot reach TCIA"):
        collect("tcia", ws, collection="TCGA-GBM")
