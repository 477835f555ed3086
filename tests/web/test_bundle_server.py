"""One exported bundle served alone (main.py serve --bundle): the same answers as predict in the
workspace, the bundle's checks before anything is served, and the token off loopback."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from app.predict import model_from_bundle
from core.errors import ExportError
from tests.web.conftest import demo_file
from web.bundle_server import API, create_bundle_app

LOCAL = "http://127.0.0.1:8765"
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def bundle(trained):
    from app.bundle import export_bundle

    return export_bundle(trained, "predictor").path


def test_a_served_bundle_answers_as_predict_in_the_workspace(trained, bundle) -> None:
    from app.predict import predict

    image = demo_file(trained, ".dcm")
    model = model_from_bundle(bundle, keys_from=trained.data_dir)
    served_app = create_bundle_app(model)
    with TestClient(served_app, base_url=LOCAL) as client:  # started and stopped as uvicorn would
        assert client.get(f"{API}/health").json() == {"status": "ok", "model": "predictor"}
        card = client.get(f"{API}/model").json()
        assert card["name"] == "predictor" and card["classes"] == model.classes and "ood_gate" in card
        served = client.post(f"{API}/predict", params={"kind": "dcm", "allow_ood": "true"},
                             content=image.read_bytes(), headers=OCTET)
        assert served_app.state.uploads.is_dir() and not list(served_app.state.uploads.iterdir())
    assert not served_app.state.uploads.exists(), "the private upload folder goes when the server stops"
    assert served.status_code == 200, served.text
    [answer] = served.json()["predictions"]
    [local] = predict(trained, image, run="predictor", allow_ood=True, overlays=False).predictions
    assert answer["item"] == "upload-1" and answer["engine"] == "onnxruntime"
    assert answer["predicted_class"] == local.predicted_class
    assert answer["probabilities"] == pytest.approx(local.probabilities, abs=1e-6)
    assert answer["outside"] == local.outside and image.name not in served.text


def test_a_changed_or_untrusted_bundle_is_never_served(trained, bundle, tmp_path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with pytest.raises(ExportError):  # signed by a key no one here trusts
        model_from_bundle(copy, keys_from=None)
    assert model_from_bundle(copy, keys_from=None, trust_unsigned=True).run == "predictor"
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ExportError, match="does not match the SHA-256"):
        model_from_bundle(copy, keys_from=trained.data_dir, trust_unsigned=True)


def test_off_loopback_the_bundle_server_needs_its_token(trained, bundle) -> None:
    model = model_from_bundle(bundle, keys_from=trained.data_dir)
    with TestClient(create_bundle_app(model, token="a-long-random-token")) as client:
        assert client.get(f"{API}/model").status_code == 401
        assert client.get(f"{API}/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(f"{API}/model", headers={"Authorization": "Bearer a-long-random-token"}).status_code == 200
        assert client.post(f"{API}/predict", params={"kind": "png"}, content=b"x", headers=OCTET).status_code == 401
