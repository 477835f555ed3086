"""Export bundles (model card, SHA-256, INT8) and prediction with the router."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from app.bundle import export_bundle, load_bundle, sha256_of
from core.errors import ExportError
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
    assert card["files"] == {"model.onnx": sha256_of(result.path / "model.onnx"),
                             "ood_gate.json": sha256_of(result.path / "ood_gate.json")}
    assert card["ood_gate"]["threshold"] > 0 and ["XR", "chest"] in card["ood_gate"]["seen"]
    assert card["input"]["shape"] == ["batch", 1, 32, 32] and card["input"]["preprocessing"]["clahe"] is False
    assert set(card["modality"]) == {"XR", "MR", "CT"} and "chest" in card["region"]
    assert {"dataset_metadata_sha256", "training_config_sha256", "packages"} <= set(card["provenance"])
    assert card["provenance"]["packages"]["onnxruntime"]
    if phase != "supervised":
        assert isinstance(card["decision_threshold"], float)
    assert "Run it without MedAnomaly Workbench" in (result.path / "README.md").read_text()
    assert load_bundle(result.path, keys_from=demo_ws.data_dir).card["name"] == runs[phase]
    assert not list(demo_ws.exports_dir.glob(".*.partial")), "no half-written bundle left behind"


def test_a_tampered_model_file_fails_its_sha256_check(demo_ws, runs, tmp_path) -> None:
    source = export_bundle(demo_ws, runs["supervised"]).path
    copy = tmp_path / "bundle"
    shutil.copytree(source, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="does not match the SHA-256 in its model card"):
        load_bundle(copy, keys_from=demo_ws.data_dir)
    (copy / "model.onnx").unlink()
    with pytest.raises(ExportError, match="missing from the bundle"):
        load_bundle(copy, keys_from=demo_ws.data_dir)


def test_int8_copy_reports_its_metric_change(demo_ws, runs) -> None:
    result = export_bundle(demo_ws, runs["supervised"], int8=True, accept_int8_drop=True)
    q = result.int8
    assert q["metric"] == "val_roc_auc" and np.isfinite(q["fp32"]) and np.isfinite(q["int8"])
    assert q["change"] == pytest.approx(q["int8"] - q["fp32"])
    card = load_bundle(result.path, keys_from=demo_ws.data_dir).card
    assert card["int8"]["drop_accepted"] == (q["change"] < -0.02) and card["int8"]["max_drop_allowed"] == 0.02
    assert set(card["files"]) == {"model.onnx", "model.int8.onnx", "ood_gate.json"}
    assert card["int8"]["file"] == "model.int8.onnx"
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
    by_input = {demo_ws.private.path_of(p.item).relative_to(folder.resolve()).parts[0]: p for p in result.predictions}
    assert by_input["chest"].run == runs["hybrid"] and by_input["chest"].engine == "onnxruntime"
    assert by_input["chest"].is_anomaly in (True, False) and by_input["chest"].threshold is not None
    assert by_input["ct_series"].run == runs["hybrid"] and by_input["ct_series"].predicted_class
    ultrasound = by_input["breast_ultrasound"]
    assert ultrasound.run == "" and ultrasound.modality == "US" and ultrasound.outside
    assert "outside what this model was trained on: no model was trained on US breast images" in ultrasound.note
    assert not by_input["chest"].outside and by_input["chest"].ood_distance is not None
    assert result.csv.read_text().count("\n") == 4
    assert json.loads(result.json.read_text())["results"][0]["item"].startswith("I")
    assert "new.png" not in result.csv.read_text() and "name" not in json.loads(result.json.read_text())["results"][0]
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
    from core.errors import WorkbenchError
    from app.state import Kind, write_state

    ws.run_dir("c3d").mkdir(parents=True)
    write_state(ws.run_dir("c3d") / "metadata.json", Kind.RUN_METADATA,
                {"run": "c3d", "phase": "cube3d", "dataset": "x", "status": "complete", "config": {}})
    image = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(image)
    with pytest.raises(WorkbenchError, match="is a cube3d run; predict takes 2D models"):
        predict(ws, image, run="c3d")


# -- trust: signatures, graphs that do not match their card, answers that are not numbers ------------
def _copy_bundle(demo_ws, runs, tmp_path):
    source = export_bundle(demo_ws, runs["supervised"]).path
    copy = tmp_path / "bundle"
    shutil.copytree(source, copy)
    return copy


def _replace_model(demo_ws, copy, module, sign: bool = True) -> None:
    """Put another ONNX graph in the bundle, fix the card's hash, and (as a forger would) re-sign it."""
    import torch

    from app.signing import sign_bundle
    from app.state import Kind, read_state, write_state

    torch.onnx.export(module, (torch.zeros(2, 1, 32, 32),), str(copy / "model.onnx"), input_names=["image"],
                      output_names=["probabilities"], dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
                      opset_version=17, dynamo=False)
    card = read_state(copy / "metadata.json", Kind.MODEL_CARD)
    card["files"]["model.onnx"] = sha256_of(copy / "model.onnx")
    write_state(copy / "metadata.json", Kind.MODEL_CARD, {k: v for k, v in card.items() if k not in ("kind", "schema_version")})
    if sign:
        sign_bundle(demo_ws.data_dir, copy, "metadata.json")


def test_a_replaced_model_with_a_matching_hash_fails_the_signature(demo_ws, runs, tmp_path) -> None:
    import torch

    copy = _copy_bundle(demo_ws, runs, tmp_path)
    assert load_bundle(copy, keys_from=demo_ws.data_dir).trust.startswith("signed by ")
    _replace_model(demo_ws, copy, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 5), torch.nn.Softmax(1)),
                   sign=False)
    with pytest.raises(ExportError, match="signature of .* does not verify"):
        load_bundle(copy, keys_from=demo_ws.data_dir)
    (copy / "signature.json").unlink()
    with pytest.raises(ExportError, match="is not signed"):
        load_bundle(copy, keys_from=demo_ws.data_dir)
    assert load_bundle(copy, keys_from=demo_ws.data_dir, trust_unsigned=True).trust.startswith("unsigned")


def test_a_bundle_signed_elsewhere_is_trusted_only_with_its_public_key(demo_ws, runs, tmp_path) -> None:
    from app.signing import sign_bundle
    from app.workspace import Workspace

    copy = _copy_bundle(demo_ws, runs, tmp_path)
    other = Workspace.open(tmp_path / "other")
    sign_bundle(other.data_dir, copy, "metadata.json")
    with pytest.raises(ExportError, match="which this workspace does not trust"):
        load_bundle(copy, keys_from=demo_ws.data_dir)
    here = Workspace.open(tmp_path / "here")
    (here.data_dir / "trusted_keys").mkdir()
    shutil.copy(copy / "signing_key.pub.pem", here.data_dir / "trusted_keys" / "colleague.pem")
    assert load_bundle(copy, keys_from=here.data_dir).trust.startswith("signed by ")
    # The check with plain Python and the public key alone, as docs/user_guide.md shows it.
    import base64

    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    signature = json.loads((copy / "signature.json").read_text())
    key = load_pem_public_key((copy / "signing_key.pub.pem").read_bytes())
    key.verify(base64.b64decode(signature["signature"]), (copy / "metadata.json").read_bytes())


def test_a_graph_whose_outputs_do_not_match_the_card_is_refused(demo_ws, runs, tmp_path) -> None:
    import torch

    copy = _copy_bundle(demo_ws, runs, tmp_path)
    _replace_model(demo_ws, copy, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 3), torch.nn.Softmax(1)))
    bundle = load_bundle(copy, keys_from=demo_ws.data_dir)  # signed and hashed: the graph itself is wrong
    with pytest.raises(ExportError, match="does not match its model card.*not \\(batch, 5 classes\\)"):
        bundle.session()


def test_nan_outputs_are_an_error_never_an_answer(demo_ws, runs, tmp_path, monkeypatch) -> None:
    import torch

    from app import predict as predict_module

    class Broken(torch.nn.Module):
        def forward(self, image):
            return torch.softmax(image.flatten(1)[:, :5] * float("nan"), dim=1)

    copy = _copy_bundle(demo_ws, runs, tmp_path)
    _replace_model(demo_ws, copy, Broken())
    monkeypatch.setattr(predict_module.Workspace, "export_dir", lambda self, run: copy)
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(image)
    with pytest.raises(ExportError, match="NaN or infinite probabilities"):
        predict(demo_ws, image.parent, run=runs["supervised"], overlays=False)


def test_an_int8_copy_that_loses_too_much_is_refused_and_the_previous_bundle_stays(demo_ws, runs, monkeypatch) -> None:
    import dataclasses

    from app.formats import FORMATS, get_format

    before = export_bundle(demo_ws, runs["supervised"]).path
    kept = sha256_of(before / "metadata.json")

    def lossy(ws, run, source, target):
        shutil.copy(source, target)
        return {"file": target.name, "metric": "val_roc_auc", "fp32": 0.8809, "int8": 0.6470, "change": -0.2339}

    monkeypatch.setitem(FORMATS._entries, "int8", dataclasses.replace(get_format("int8"), build=lossy))
    with pytest.raises(ExportError, match="INT8 lowers val_roc_auc from 0.8809 to 0.6470.*--accept-int8-drop"):
        export_bundle(demo_ws, runs["supervised"], int8=True)
    assert sha256_of(before / "metadata.json") == kept and not (before / "model.int8.onnx").exists()
    accepted = export_bundle(demo_ws, runs["supervised"], int8=True, accept_int8_drop=True)
    card = load_bundle(accepted.path, keys_from=demo_ws.data_dir).card
    assert card["int8"]["drop_accepted"] is True and card["int8"]["change"] == pytest.approx(-0.2339)


def test_the_card_and_report_say_what_really_happened(demo_ws, runs) -> None:
    from app.evaluate import evaluate_run

    meta = demo_ws.run_metadata(runs["supervised"])
    # Trained with pretrained=False here; a default run with no cached weights is settled to False too.
    assert meta["pretrained_weights"] is None and meta["config"]["pretrained"] is False
    evaluate_run(demo_ws, runs["supervised"], "test", tta=True)
    card = load_bundle(export_bundle(demo_ws, runs["supervised"]).path, keys_from=demo_ws.data_dir).card
    provenance = card["provenance"]
    assert provenance["pretrained_weights"] is None and provenance["seed"] == meta["config"]["seed"]
    assert provenance["dataset_version"] == demo_ws.dataset_metadata("demo")["version"]
    assert provenance["code_version"].startswith(("git ", "unknown"))
    assert "test-time augmentation" in card["metrics"]["setting"]
    report = (demo_ws.run_dir(runs["supervised"]) / "evaluation" / "report.md").read_text()
    assert "pretrained weights: none: trained from scratch" in report and "test-time augmentation" in report


def test_a_default_run_without_cached_weights_records_that_it_trained_from_scratch(monkeypatch) -> None:
    from models import create_phase
    from models import supervised

    monkeypatch.setattr(supervised, "cached_weights", lambda name: None)
    phase = create_phase("supervised", ["normal", "x"], image_size=32, backbone="resnet10t")  # pretrained=True
    assert phase.config.pretrained is False and phase.model.pretrained_source == ""


def test_real_radiographs_are_outside_what_the_demo_models_saw(demo_ws, runs) -> None:
    from tests.conftest import shared

    folder = shared("xray/chest_samples")
    result = predict(demo_ws, folder, overlays=False)
    assert result.predictions and all(p.outside for p in result.predictions)
    assert all(p.predicted_class == "" and p.is_anomaly is None for p in result.predictions)
    assert result.outside == len(result.predictions)
    loose = predict(demo_ws, folder, run=runs["supervised"], overlays=False, allow_ood=True)
    judged = [p for p in loose.predictions if p.ood_distance is not None]
    assert judged and all("unlike its training images" in p.note and p.predicted_class for p in judged)


def test_an_export_format_defined_here_goes_into_the_bundle_hashed_signed_and_loadable(demo_ws, runs,
                                                                                       tmp_path) -> None:
    """The export-format contract: a format registered by a test is built from the checked
    ONNX model, recorded in the card, hashed and signed with the bundle, and loaded by name."""
    from app.bundle import load_bundle
    from app.formats import FORMATS, register_format
    from menus.cli import build_parser

    @register_format("copy", file="model.copy.onnx", title="a byte copy",
                     check=lambda record, accept: None if record["bytes"] > 0 else "empty copy")
    def copy_format(ws, run, source, target):
        shutil.copy(source, target)
        return {"bytes": target.stat().st_size}

    try:
        assert build_parser().parse_args(["export", "r", "--format", "copy"]).formats == ["copy"]
        result = export_bundle(demo_ws, runs["supervised"], formats=["copy"])
        card = json.loads((result.path / "metadata.json").read_text())
        assert card["formats"]["copy"]["file"] == "model.copy.onnx" and card["formats"]["copy"]["bytes"] > 0
        assert "model.copy.onnx" in card["files"] and card["int8"] is None
        bundle = load_bundle(result.path, keys_from=demo_ws.data_dir)
        assert bundle.session(format="copy").get_inputs()[0].name == "image"
        changed = tmp_path / "changed"  # a copy: the shared workspace's bundle stays whole for later tests
        shutil.copytree(result.path, changed)
        (changed / "model.copy.onnx").write_bytes(b"changed")
        with pytest.raises(ExportError, match="model.copy.onnx"):
            load_bundle(changed, keys_from=demo_ws.data_dir)
    finally:
        FORMATS.unregister("copy")
        export_bundle(demo_ws, runs["supervised"])  # the bundle as the other tests expect it


def test_a_hybrid_of_a_smaller_classifier_averages_its_input_down_and_exports(demo_ws, tmp_path) -> None:
    """A recipe search may train the classifier at 32 px while the VAE keeps 64 (it finds more
    there): the hybrid takes 64-px images and averages them down, 2 x 2 blocks, for the
    classifier; the ONNX graph does the same."""
    import torch

    from app.training import load_run_phase
    from core.errors import TrainingError
    from tests.conftest import copy_of_demo

    ws = copy_of_demo(demo_ws, tmp_path / "ws")
    sup = train(ws, "demo", "supervised", run="s32", epochs=1, pretrained=False, **TINY)
    vae = train(ws, "demo", "vae", run="v64", epochs=1, latent_dim=8, image_size=64, batch_size=16)
    hyb = train(ws, "demo", "hybrid", run="h", supervised_run=sup.run, vae_run=vae.run)
    hybrid, classifier = load_run_phase(ws, hyb.run), load_run_phase(ws, sup.run)
    assert hybrid.config.image_size == 64 and hybrid.model_args()["classifier_size"] == 32
    images = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        probabilities, _ = hybrid.model(images)
        alone = classifier.predict(torch.nn.functional.avg_pool2d(images, 2))
    assert torch.allclose(probabilities, alone, atol=1e-5), "the classifier's answer, on the averaged image"
    result = export_bundle(ws, hyb.run)
    card = json.loads((result.path / "metadata.json").read_text())
    assert card["input"]["shape"] == ["batch", 1, 64, 64] and result.max_abs_diff <= 1e-3
    odd = train(ws, "demo", "vae", run="v48", epochs=1, latent_dim=8, image_size=48, batch_size=16)
    with pytest.raises(TrainingError, match="a multiple of it"):
        train(ws, "demo", "hybrid", run="h48", supervised_run=sup.run, vae_run=odd.run)


def test_prediction_reads_a_volume_the_way_the_organizer_does_sidecar_included(tmp_path) -> None:
    """A NIfTI predicted alone, or in its folder, takes the modality and region its BIDS sidecar
    gives, as it did when organized: a model is routed by them."""
    import nibabel as nib

    folder = tmp_path / "sub-03" / "anat"
    folder.mkdir(parents=True)
    volume = np.zeros((20, 20, 8), np.int16)
    volume[5:15, 5:15, 2:6] = 200
    scan = folder / "sub-03_T2w.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(scan))
    (folder / "sub-03_T2w.json").write_text(json.dumps({"Modality": "MR", "BodyPartExamined": "PELVIS"}))
    for given in (scan, folder):
        (item,) = find_items(given)
        assert (item.modality, item.region) == ("MR", "pelvis"), given
