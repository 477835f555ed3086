"""The Kaggle collector with the real kaggle package, against a local server that answers
the calls it makes (list, download with a redirect to the file), faults included."""

import io
import os
import zipfile

import pytest

from app.collectors import collect
from app.collectors.kaggle import find_credentials, search
from core.errors import CollectError
from tests.fakes.http_server import FakeServer, Route

API = "/v1/datasets.DatasetApiService"  # api.kaggle.com/v1/...


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    for key in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def kaggle_server(no_credentials, monkeypatch):
    from kagglesdk import kaggle_env

    monkeypatch.setenv("KAGGLE_USERNAME", "tester")
    monkeypatch.setenv("KAGGLE_KEY", "secret-key")
    with FakeServer() as server:  # the package's production endpoint, pointed at loopback
        monkeypatch.setitem(kaggle_env._env_to_endpoint, kaggle_env.KaggleEnv.PROD, server.url)
        server.routes[f"{API}/ListDatasets"] = Route(
            {"datasets": [{"ref": "someone/chest-xrays", "title": "Chest X-rays", "totalBytes": 4096,
                           "licenseName": "CC0: Public Domain"}]}, content_type="application/json")
        server.routes[f"{API}/DownloadDataset"] = Route(redirect="/blobs/chest-xrays.zip")
        yield server


def test_without_credentials_the_message_says_how_to_set_them_up(ws, no_credentials) -> None:
    with pytest.raises(CollectError, match="Create New Token"):
        collect("kaggle", ws, dataset="someone/chest-xrays")


def test_a_kaggle_json_readable_by_others_is_warned_about(no_credentials) -> None:
    folder = no_credentials / ".kaggle"
    folder.mkdir()
    (folder / "kaggle.json").write_text('{"username": "a", "key": "b"}')
    os.chmod(folder / "kaggle.json", 0o644)
    assert "chmod 600" in find_credentials().warning
    os.chmod(folder / "kaggle.json", 0o600)
    assert find_credentials() .warning == ""


def test_search_and_a_download_that_is_busy_then_cut_and_resumed(ws, kaggle_server, monkeypatch) -> None:
    import time

    monkeypatch.setattr(time, "sleep", lambda _: None)
    kaggle_server.routes[f"{API}/DownloadDataset"].statuses = [429, 503]
    payload = _zip({"images/a.png": os.urandom(200_000), "images/b.png": os.urandom(200_000),
                    "labels.csv": b"image,label\na.png,normal\nb.png,pneumonia\n"})
    kaggle_server.routes["/blobs/chest-xrays.zip"] = Route(
        payload, content_type="application/zip", cut_after=[150_000],
        headers={"Accept-Ranges": "bytes", "ETag": '"v1"', "Last-Modified": "Mon, 02 Nov 2026 10:00:00 GMT"})
    found = search("chest")
    assert found == [{"ref": "someone/chest-xrays", "title": "Chest X-rays", "bytes": 4096,
                      "licence": "CC0: Public Domain"}]
    listed = kaggle_server.requests_to(f"{API}/ListDatasets")[0]
    assert listed.method == "POST" and listed.headers.get("Authorization", "").startswith("Basic ")
    seen = []
    result = collect("kaggle", ws, dataset="someone/chest-xrays",
                     progress=lambda task, done, total, **info: seen.append((done, total, info.get("unit"))))
    downloads = [entry for entry in seen if entry[2] == "bytes"]
    assert downloads[-1][0] == len(payload), "size reported in bytes"
    assert result.files == 3 and (result.path / "images" / "a.png").stat().st_size == 200_000
    assert [r.status for r in kaggle_server.requests_to(f"{API}/DownloadDataset")] == [429, 503, 302]
    blob = kaggle_server.requests_to("/blobs/chest-xrays.zip")
    assert len(blob) >= 2 and (blob[-1].headers.get("Range") or "").startswith("bytes="), "resumed"
    entry = ws.load_index()["chest-xrays"]
    assert entry["complete"] and entry["licence"] == "CC0: Public Domain" and len(entry["sha256"]) == 64


def test_a_damaged_zip_is_rejected_and_missing_datasets_are_clear(ws, kaggle_server) -> None:
    payload = bytearray(_zip({"images/a.png": b"x" * 50_000}))
    payload[100:110] = b"0123456789"  # damage the stored data: its CRC no longer matches
    kaggle_server.routes["/blobs/chest-xrays.zip"] = Route(bytes(payload), content_type="application/zip")
    with pytest.raises(CollectError, match="damaged"):
        collect("kaggle", ws, dataset="someone/chest-xrays")
    assert not ws.load_index()["chest-xrays"]["complete"]
    kaggle_server.routes[f"{API}/DownloadDataset"] = Route(b'{"code": 404, "message": "Not found"}',
                                                           content_type="application/json", statuses=[404])
    with pytest.raises(CollectError, match="404|no dataset"):
        collect("kaggle", ws, dataset="someone/nothing-here")
    with pytest.raises(CollectError, match="OWNER/DATASET"):
        collect("kaggle", ws, dataset="not a ref")
