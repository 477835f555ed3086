"""The REST API (FastAPI TestClient): every endpoint, the token rule, names that try to leave the
workspace, and a training started, followed live and stopped through it."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from web.guard import host_name, is_loopback
from tests.web.conftest import demo_file, uploads_left
from web.server import API, create_app
from web.tokens import has_token, new_token

LOCAL = "http://127.0.0.1:8765"  # what a browser on this machine sends as Host


def _wait(client: TestClient, job_id: str, states=("finished", "failed", "cancelled"), timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        view = client.get(f"{API}/jobs/{job_id}").json()
        if view["state"] in states:
            return view
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {view['state']} after {timeout} s")


def test_datasets_runs_and_the_schema(demo) -> None:
    client = TestClient(create_app(demo), base_url=LOCAL)
    assert [d["name"] for d in client.get(f"{API}/datasets").json()] == ["demo"]
    one = client.get(f"{API}/datasets/demo").json()
    assert one["name"] == "demo" and "counts" in one
    assert client.get(f"{API}/runs").json() == [] or isinstance(client.get(f"{API}/runs").json(), list)
    schema = client.get(f"{API}/openapi.json").json()
    assert {f"{API}/datasets", f"{API}/runs/{{name}}", f"{API}/jobs/train", f"{API}/jobs/{{job_id}}/cancel"} <= set(
        schema["paths"])


@pytest.mark.parametrize("name", ["..", "...%2F..%2Fetc", "a%00b", "con", " spaced", "x" * 300])
def test_names_that_are_not_names_are_refused_in_one_line(demo, name) -> None:
    client = TestClient(create_app(demo), base_url=LOCAL)
    for path in (f"{API}/datasets/{name}", f"{API}/runs/{name}"):
        answer = client.get(path)
        assert answer.status_code in (400, 404), (path, answer.status_code)
        assert "Traceback" not in answer.text and "detail" in answer.json()
    refused = client.post(f"{API}/jobs/train", json={"dataset": "demo", "run": "../../outside"})
    assert refused.status_code == 400 and "cannot be a run name" in refused.json()["detail"]
    assert not (demo.root.parent / "outside").exists()


def test_unknown_things_are_404_and_bad_bodies_422(demo) -> None:
    client = TestClient(create_app(demo), base_url=LOCAL)
    assert client.get(f"{API}/datasets/absent").status_code == 404
    assert "No training run named 'nope'" in client.get(f"{API}/runs/nope").json()["detail"]
    assert client.get(f"{API}/jobs/nope").status_code == 404
    assert client.post(f"{API}/jobs/nope/cancel").status_code == 404
    assert client.post(f"{API}/jobs/train", json={"dataset": "demo", "epochs": 0}).status_code == 422
    assert client.post(f"{API}/jobs/train", json={"dataset": "demo", "phase": "superviesd"}).status_code == 400


def test_on_loopback_only_requests_to_this_machine_and_json_posts_are_answered(demo) -> None:
    """A site whose name is made to point at 127.0.0.1 (DNS rebinding) would be same-origin to a
    browser: its requests name that site as Host and are refused; a form post (no JSON) too."""
    assert host_name("[::1]:8765") == "::1" and host_name("localhost:80") == "localhost" and host_name("::1") == "::1"
    app = create_app(demo)
    for base in ("http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"):
        assert TestClient(app, base_url=base).get(f"{API}/datasets").status_code == 200
    rebound = TestClient(app, base_url="http://evil.example:8765")
    assert rebound.get(f"{API}/datasets").status_code == 400
    assert rebound.post(f"{API}/jobs/train", json={"dataset": "demo"}).status_code == 400
    form = TestClient(app, base_url=LOCAL).post(f"{API}/jobs/train", content='{"dataset": "demo"}',
                                               headers={"Content-Type": "text/plain"})
    assert form.status_code == 415 and TestClient(app, base_url=LOCAL).get(f"{API}/jobs").json() == []


def test_off_loopback_every_request_needs_the_token(demo) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    token = new_token(demo)
    assert has_token(demo) and token not in (demo.data_dir / "server_token.sha256").read_text()
    client = TestClient(create_app(demo, require_token=True))
    for path in (f"{API}/datasets", f"{API}/runs", f"{API}/jobs"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.post(f"{API}/jobs/train", json={"dataset": "demo"}).status_code == 401
    again = new_token(demo)
    assert client.get(f"{API}/datasets", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get(f"{API}/datasets", headers={"Authorization": f"Bearer {again}"}).status_code == 200


def test_a_training_is_started_followed_live_stopped_and_shown(demo) -> None:
    client = TestClient(create_app(demo), base_url=LOCAL)
    started = client.post(f"{API}/jobs/train", json={"dataset": "demo", "phase": "supervised", "run": "api-run",
                                                      "epochs": 30, "image_size": 32, "batch_size": 16,
                                                      "backbone": "resnet10t"})
    assert started.status_code == 202 and started.json()["run"] == "api-run"
    job = started.json()["id"]
    kinds = []
    with client.stream("GET", f"{API}/jobs/{job}/stream") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                kinds.append(event["kind"])
                if event["kind"] == "progress" and event["task"] == "Epochs" and event["done"] >= 1:
                    assert client.post(f"{API}/jobs/{job}/cancel").status_code == 202
                if event["kind"] in ("finished", "failed", "cancelled"):
                    break
    assert kinds[0] == "started" and kinds[-1] == "cancelled", kinds[-3:]
    view = _wait(client, job)
    assert view["state"] == "cancelled" and view["error"] == ""
    run = client.get(f"{API}/runs/api-run").json()
    assert run["status"] == "stopped" and 1 <= len(run["history"]) < 30, "stopped after an epoch, resumable"
    events = client.get(f"{API}/jobs/{job}/events", params={"after": 1}).json()
    assert events[0]["seq"] == 2 and events[-1]["kind"] == "cancelled"
    assert [j["id"] for j in client.get(f"{API}/jobs").json()] == [job]
    assert any(r["run"] == "api-run" for r in client.get(f"{API}/runs").json())


def test_an_uploaded_image_is_predicted_and_the_upload_is_not_kept(trained) -> None:
    client = TestClient(create_app(trained), base_url=LOCAL)
    image = demo_file(trained, ".dcm")
    answer = client.post(f"{API}/predict", params={"kind": "dcm", "run": "predictor", "allow_ood": "true"},
                         content=image.read_bytes(), headers={"Content-Type": "application/octet-stream"})
    assert answer.status_code == 200, answer.text
    [found] = answer.json()["predictions"]
    assert found["run"] == "predictor" and found["item"] and "name" not in found
    assert image.name not in answer.text and image.stem not in answer.text, "the file's own name is never used"
    assert (trained.root / answer.json()["saved"]).exists() and uploads_left(trained) == []


def test_uploads_too_large_malformed_unknown_or_unsafe_are_refused_and_leave_nothing(trained, tmp_path) -> None:
    import zipfile

    small = TestClient(create_app(trained, upload_limit=1000), base_url=LOCAL)
    octet = {"Content-Type": "application/octet-stream"}
    too_big = small.post(f"{API}/predict", params={"kind": "png"}, content=b"\0" * 5000, headers=octet)
    assert too_big.status_code == 413
    client = TestClient(create_app(trained), base_url=LOCAL)
    assert client.post(f"{API}/predict", params={"kind": "exe"}, content=b"MZ", headers=octet).status_code == 400
    assert client.post(f"{API}/predict", params={"kind": "png"}, content=b"", headers=octet).status_code == 400
    broken = client.post(f"{API}/predict", params={"kind": "png", "run": "predictor"},
                         content=b"\x89PNG\r\n\x1a\n not really", headers=octet)
    assert broken.status_code == 422 and "Traceback" not in broken.text and "the upload" in broken.json()["detail"]
    assert str(trained.root) not in broken.text, "where the server keeps its files is not said"
    unsafe = tmp_path / "series.zip"
    with zipfile.ZipFile(unsafe, "w") as archive:
        archive.writestr("../../escaped.dcm", b"DICM")
    refused = client.post(f"{API}/predict", params={"kind": "zip"}, content=unsafe.read_bytes(), headers=octet)
    assert refused.status_code == 422 and "Refused" in refused.json()["detail"]
    assert not list(trained.root.parent.rglob("escaped.dcm")) and uploads_left(trained) == []


def test_main_py_serve_answers_on_loopback_and_shows_a_new_token_once(tmp_path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    server = subprocess.Popen([sys.executable, str(root / "main.py"), "serve", "--port", str(port), "--new-token",
                               "--workspace", str(tmp_path / "ws")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        deadline, answer = time.time() + 90, None
        while answer is None and time.time() < deadline:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{API}/datasets", timeout=2) as reply:
                    answer = json.loads(reply.read())
            except OSError:
                time.sleep(0.3)
        assert answer == [], "an empty workspace, answered without a token on loopback"
    finally:
        server.terminate()
        out = server.communicate(timeout=30)[0]
    assert "Access token (shown once" in out and f"http://127.0.0.1:{port}/api/v1 (this machine only)" in out
    assert (tmp_path / "ws" / "data" / "server_token.sha256").exists()


def test_a_run_is_exported_as_a_job_and_its_bundle_downloaded(trained) -> None:
    import io
    import zipfile

    client = TestClient(create_app(trained), base_url=LOCAL)
    assert client.get(f"{API}/runs/predictor/bundle.zip").status_code in (200, 404)
    assert client.post(f"{API}/jobs/export", json={"run": "api-run-absent"}).status_code == 404
    job = client.post(f"{API}/jobs/export", json={"run": "predictor"})
    assert job.status_code == 202
    assert _wait(client, job.json()["id"])["state"] == "finished"
    download = client.get(f"{API}/runs/predictor/bundle.zip")
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(download.content)).namelist()
    assert {"predictor/model.onnx", "predictor/metadata.json", "predictor/signature.json"} <= set(names)
    system = client.get(f"{API}/system").json()
    assert system["cpus"] >= 1 and system["disk_free_bytes"] > 0 and "onnxruntime" in system["packages"]


def test_the_settings_menu_serves_the_api_and_a_taken_port_is_one_clear_line(ws, monkeypatch) -> None:
    import socket
    from io import StringIO

    from rich.console import Console

    import web.server
    from core.errors import WorkbenchError
    from menus import screens
    from menus.settings import Settings

    served = []
    monkeypatch.setattr(web.server, "serve", lambda *args: served.append(args))
    monkeypatch.setattr(screens, "ask_choice", lambda message, choices, **kwargs: "__serve__")
    screen = Console(file=StringIO(), width=80)
    monkeypatch.setattr(screens, "console", screen)
    with socket.socket() as probe:  # a free port for the menu's server
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    monkeypatch.setattr(screens, "API_PORT", free)
    screens.settings_menu(screens.Session(ws, Settings.load(ws)))
    assert served == [(ws, "127.0.0.1", free)]
    assert f"http://127.0.0.1:{free}/api/v1" in screen.file.getvalue()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(WorkbenchError, match=f"Cannot listen on 127.0.0.1:{port}.*Choose another port"):
            web.server.check_port("127.0.0.1", port)
    with pytest.raises(WorkbenchError, match="between 1 and 65535"):
        web.server.check_port("127.0.0.1", 70000)
