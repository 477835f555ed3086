"""Export bundles (model card, SHA-256, INT8) and prediction with the router."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from app.bundle import export_bundle, load_bundle, sha256_of
from app.errors import ExportError
from app.predict import Model, find_items, predict, route
from app.training import train

TINY = {"image_size": 32, "batch_size": 16}


@pytest.fixture(scope="module")
def runs(demo_ws):
    sup = train(demo_ws, "demo", "supervised", run="b-sup", epochs=1, pretrained=False, **TINY)
    vae = train(demo_ws, "demo", "vae", run="b-vae", epochs=1, latent_dim=8, **TINY)
    hyb = train(demo_ws, "demo", "hybrid", run="b-hyb", supervised_run=sup.run, vae_run=vae.run)
    return {"supervised": sup.run, "vae": vae.run, "hybrid": hyb.run}


@pytest.mark.parametrize("phase", ["supervised", "vae", "hybrid"])
def test_every_phase_exports_a_bundle_with_a_model_card(demo_ws, runs, phase) -> None:
    result = export_bundle(demo_ws, runs[phase])
    # The hybrid's score passes the VAE error through an exponential tail, which
    # magnifies float32 rounding; its phase allows 1e-3 (models/hybrid.py).
    assert result.max_abs_diff <= (1e-3 if phase == "hybrid" else 1e-4)
    card = json.loads((result.path / "metadata.json").read_text())
    assert card["files"] == {"model.onnx": sha256_of(result.path / "model.onnx")}
    assert card["input"]["shape"] == ["batch", 1, 32, 32] and card["input"]["preprocessing"]["clahe"] is False
    assert set(card["modality"]) == {"XR", "MR", "CT"} and "chest" in card["region"]
    assert {"dataset_metadata_sha256", "training_config_sha256", "packages"} <= set(card["provenance"])
    assert card["provenance"]["packages"]["onnxruntime"]
    if phase != "supervised":
        assert isinstance(card["decision_threshold"], float)
    assert "Run it without MedAnomaly Workbench" in (result.path / "README.md").read_text()
    assert load_bundle(result.path).card["name"] == runs[phase]
    assert not list(demo_ws.exports_dir.glob(".*.partial")), "no half-written bundle left behind"


def test_a_tampered_model_file_fails_its_sha256_check(demo_ws, runs, tmp_path) -> None:
    source = export_bundle(demo_ws, runs["supervised"]).path
    copy = tmp_path / "bundle"
    shutil.copytree(source, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="does not match the SHA-256 in its model card"):
        load_bundle(copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(ExportError, match="missing from the bundle"):
        load_bundle(copy)


def test_int8_copy_reports_its_metric_change(demo_ws, runs) -> None:
    result = export_bundle(demo_ws, runs["supervised"], int8=True)
    q = result.int8
    assert q["metric"] == "val_roc_auc" and np.isfinite(q["fp32"]) and np.isfinite(q["int8"])
    assert q["change"] == pytest.approx(q["int8"] - q["fp32"])
    card = load_bundle(result.path).card
    assert set(card["files"]) == {"model.onnx", "model.int8.onnx"} and card["int8"]["file"] == "model.int8.onnx"
    import onnxruntime as ort

    session = ort.InferenceSession(str(result.path / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"image": np.random.rand(3, 1, 32, 32).astype(np.float32)})[0]
    assert probabilities.shape == (3, 5) and np.allclose(probabilities.sum(1), 1, atol=1e-3)


def test_the_router_picks_the_model_trained_on_the_same_kind_of_image() -> None:
    from app.predict import Item

    def model(run, modalities, regions):
        return Model(run, "supervised", ["normal", "x"], 32, False, modalities, regions, None, None)

    chest, brain = model("chest-xr", ["XR"], ["chest"]), model("brain-mr", ["MR"], ["brain"])
    assert route(Item("a", [], "image2d", "MR", "brain"), [chest, brain]) is brain
    assert route(Item("b", [], "image2d", "XR", "chest"), [chest, brain]) is chest
    assert route(Item("c", [], "image2d", "US", "breast"), [chest, brain]) is None


def test_predict_on_a_folder_routes_each_item_and_writes_results(demo_ws, runs, tmp_path) -> None:
    from tests.app.organize.test_looks import fan

    export_bundle(demo_ws, runs["hybrid"])
    folder = tmp_path / "new_scans"
    raw = demo_ws.raw_dir / "demo"
    chest = sorted(raw.rglob("*.png"))[0]
    (folder / "chest").mkdir(parents=True)
    shutil.copy(chest, folder / "chest" / "new.png")
    series = next(p for p in sorted(raw.rglob("S0001")) if p.is_dir())
    shutil.copytree(series, folder / "ct_series")
    (folder / "breast_ultrasound").mkdir()
    Image.fromarray((fan() * 255).astype(np.uint8)).save(folder / "breast_ultrasound" / "us.png")
    items = find_items(folder)
    assert len(items) == 3 and any(i.kind == "dicom_series" and len(i.files) > 1 for i in items)

    result = predict(demo_ws, folder)
    by_input = {p.input.split("/")[0]: p for p in result.predictions}
    assert by_input["chest"].run == runs["hybrid"] and by_input["chest"].engine == "onnxruntime"
    assert by_input["chest"].is_anomaly in (True, False) and by_input["chest"].threshold is not None
    assert by_input["ct_series"].run == runs["hybrid"] and by_input["ct_series"].predicted_class
    ultrasound = by_input["breast_ultrasound"]
    assert ultrasound.run == "" and ultrasound.modality == "US" and "no model for US breast" in ultrasound.note
    assert result.csv.read_text().count("\n") == 4
    assert json.loads(result.json.read_text())["results"][0]["input"]
    assert result.overlays and result.overlays[0].stat().st_size > 5_000
    assert [p.name for p in result.overlays] == [f"overlay_{runs['hybrid']}.png", f"overlay_{runs['hybrid']}_patch.png"]

    # One model chosen by hand: PyTorch when it has no bundle, on every item.
    shutil.rmtree(demo_ws.exports_dir / runs["vae"], ignore_errors=True)
    only = predict(demo_ws, folder / "chest" / "new.png", run=runs["vae"], overlays=False)
    assert [(p.run, p.engine) for p in only.predictions] == [(runs["vae"], "pytorch")]
    assert only.predictions[0].anomaly_score is not None
    again = predict(demo_ws, folder / "chest" / "new.png", run=runs["vae"], overlays=False)
    assert again.folder != only.folder and only.csv.exists(), "a second prediction never overwrites the first"


def test_predict_refuses_a_3d_run_clearly(ws, tmp_path) -> None:
    from app.errors import WorkbenchError
    from app.state import Kind, write_state

    ws.run_dir("c3d").mkdir(parents=True)
    write_state(ws.run_dir("c3d") / "metadata.json", Kind.RUN_METADATA,
                {"run": "c3d", "phase": "cube3d", "dataset": "x", "status": "complete", "config": {}})
    image = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(image)
    with pytest.raises(WorkbenchError, match="is a cube3d run; predict takes 2D models"):
        predict(ws, image, run="c3d")
