"""Several findings per image (ChestMNIST's 14 columns, NIH's "a|b" rows): one probability
per finding, trained, calibrated, evaluated, explained, exported and predicted as such."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.organize.multilabel import dataset_findings
from app.organize.organizer import organize, read_rows
from app.training import train
from core.errors import DatasetError
from core.metrics import multilabel_metrics

SPOTS = [(2, 2), (2, 18), (18, 10)]  # where each finding shows: a bright square of its own
OPTIONS = {"backbone": "resnet10t", "image_size": 32, "epochs": 6, "batch_size": 16, "pretrained": False,
           "augment": "none"}


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    images = (rng.random((len(labels), 28, 28)) * 60).astype(np.uint8)
    for k, row in enumerate(labels):
        for finding, (y, x) in enumerate(SPOTS):
            if row[finding]:
                images[k, y : y + 8, x : x + 8] = 240
    return images


def multilabel_npz(path: Path, n: tuple[int, int, int] = (120, 40, 40)) -> Path:
    """A MedMNIST-format file with three 0/1 finding columns (any of them, or none, per image)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        labels = (rng.random((count, 3)) < 0.35).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _images(labels, rng), labels
    np.savez(path, **arrays)
    return path


def test_a_multi_label_file_organizes_with_its_findings(ws, tmp_path: Path) -> None:
    from menus.render import label_lines

    result = organize(ws, multilabel_npz(tmp_path / "chestmnist.npz"), "chest")
    assert result.findings == ("atelectasis", "cardiomegaly", "effusion")
    assert "Several findings per image (3: atelectasis, cardiomegaly, effusion)" in "\n".join(label_lines(result))
    config = json.loads((ws.organized_path("chest") / "training_config.json").read_text())
    # ChestMNIST's own names for its first columns; the classes stay the anomaly view (normal: no finding).
    assert config["findings"] == ["atelectasis", "cardiomegaly", "effusion"]
    assert "normal" in config["classes"] and config["ordinal"] is False and "hybrid" not in config["recommended_phases"]
    rows = read_rows(ws.organized_path("chest") / "splits" / "train.csv")
    both = next(r for r in rows if "|" in r["source_label"])
    assert both["label"] != "normal" and both["modality"] == "XR" and both["region"] == "chest"
    assert all(r["label"] == "normal" for r in rows if r["source_label"] == "normal")
    counts = ws.dataset_metadata("chest")["counts"]["by_finding"]
    assert set(counts) == {"atelectasis", "cardiomegaly", "effusion"} and min(counts.values()) > 20


def test_a_stray_pair_of_labels_keeps_one_class_per_image() -> None:
    rows = [{"labeled": True, "source_label": "cat"}] * 300 + [{"labeled": True, "source_label": "cat|dog"}] * 3
    assert dataset_findings(rows) == [], "three images of 303 that two label sources disagree on"
    rows += [{"labeled": True, "source_label": "dog|mouse"}] * 6
    assert dataset_findings(rows) == ["cat", "dog", "mouse"]


def test_a_file_of_other_numbers_per_column_is_refused(ws, tmp_path: Path) -> None:
    arrays = {f"{s}_{k}": np.zeros((4, 28, 28) if k == "images" else (4, 3), np.uint8) for s in ("train", "val", "test")
              for k in ("images", "labels")}
    arrays["train_labels"][0, 1] = 3
    np.savez(tmp_path / "oddmnist.npz", **arrays)
    with pytest.raises(DatasetError, match="not as 0/1 columns"):
        organize(ws, tmp_path / "oddmnist.npz", "odd")


def test_metrics_are_means_over_the_findings() -> None:
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], float)
    probabilities = np.array([[0.9, 0.2], [0.3, 0.6], [0.7, 0.4], [0.1, 0.1]])
    m = multilabel_metrics(probabilities, targets, ["a", "b"])
    assert m["roc_auc_ovr"] == pytest.approx(1.0) and m["accuracy"] == pytest.approx(7 / 8)
    assert m["exact_match"] == pytest.approx(3 / 4) and m["per_class"]["b"]["sensitivity"] == pytest.approx(0.5)
    at = multilabel_metrics(probabilities, targets, ["a", "b"], chosen=[0.5, 0.3])["per_class"]["b"]
    assert at["sensitivity_at_val_threshold"] == 1.0 and at["specificity_at_val_threshold"] == 1.0


def test_a_rare_finding_is_called_below_half_where_validation_says_so() -> None:
    from models.supervised import finding_thresholds

    rng = np.random.default_rng(0)
    rare = (rng.random(400) < 0.05).astype(float)  # shown on 5%: a well-ranked but low probability
    probabilities = np.stack([np.where(rare > 0, 0.3, 0.05) + rng.random(400) * 0.05, rng.random(400)], axis=1)
    cuts = finding_thresholds(probabilities, np.stack([rare, np.zeros(400)], axis=1))
    assert 0.1 < cuts[0] <= 0.35 and cuts[1] == 0.5, "a finding validation never shows keeps 0.5"


def test_a_multi_label_run_trains_evaluates_exports_and_predicts(ws, tmp_path: Path) -> None:
    from app.bundle import export_bundle
    from app.evaluate import evaluate_run
    from app.predict import predict

    organize(ws, multilabel_npz(tmp_path / "chestmnist.npz"), "chest")
    train(ws, "chest", "supervised", run="findings", **OPTIONS)
    meta = ws.run_metadata("findings")
    assert meta["classes"] == ["atelectasis", "cardiomegaly", "effusion"] and meta["config"]["multilabel"] is True
    assert meta["config"]["class_weights"] is False and meta["calibration"]["bias"] is None
    cuts = meta["calibration"]["finding_thresholds"]  # each finding's call, chosen on validation
    assert set(cuts) == set(meta["classes"]) and all(0 < c < 1 for c in cuts.values())
    assert meta["history"][-1]["val_auc"] > 0.8
    found = evaluate_run(ws, "findings", "test")
    m = found.metrics
    assert m["roc_auc_ovr"] > 0.8 and set(m["per_class"]) == set(meta["classes"]), m
    assert m["anomaly_auroc"] > 0.9 and "accuracy_at_val_threshold" in m and m["verdict"]["level"] in ("fit", "weak")
    assert all(m["per_class"][f]["threshold"] == pytest.approx(cuts[f]) for f in cuts)
    assert 0.5 < m["finding_accuracy_at_val_thresholds"] <= 1
    report = found.report.read_text()
    assert "| finding | AUC (shown against not shown) | sensitivity / specificity at 0.5 | threshold chosen on " \
           "validation" in report and "findings (one probability each)" in report
    assert "| accuracy (mean over the findings, at 0.5) |" in report and "| ROC AUC (mean over the findings) |" in report
    from rich.console import Console

    from menus.render import metrics_table

    console = Console(width=100, record=True)
    console.print(metrics_table("test", m))
    assert "accuracy (mean over the findings, at 0.5)" in console.export_text()
    assert {p.name for p in found.plots} >= {"findings_test.png", "reliability_test.png", "gradcam_test.png"}
    from fastapi.testclient import TestClient

    from tests.web.test_pages import LOCAL, PAGE
    from web.server import create_app

    page = TestClient(create_app(ws), base_url=LOCAL).get("/runs/findings", headers=PAGE).text
    assert 'id="findings"' in page and "<th>finding</th>" in page and "images showing it" in page
    assert "<th>threshold (chosen on validation)</th>" in page
    export_bundle(ws, "findings", int8=True, accept_int8_drop=True)
    card = json.loads((ws.export_dir("findings") / "metadata.json").read_text())
    assert card["task"] == "multilabel_classification" and "sigmoid" in card["outputs"][0]["meaning"]
    assert card["int8"]["metric"] == "val_roc_auc" and abs(card["int8"]["change"]) < 0.1, card["int8"]
    assert card["finding_thresholds"] == cuts
    folder = tmp_path / "films"
    folder.mkdir()
    wanted = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]], np.uint8)
    for k, image in enumerate(_images(wanted, np.random.default_rng(7))):
        Image.fromarray(image).save(folder / f"film{k}.png")
    answers = {r.name: r for r in predict(ws, folder, run="findings", allow_ood=True, show_names=True).predictions}
    assert all(r.engine == "onnxruntime" for r in answers.values())
    named = {name: r.predicted_class for name, r in answers.items()}
    assert named["film2.png"] == "no finding" and answers["film2.png"].is_anomaly is False, named
    assert set(named["film0.png"].split("|")) == {"atelectasis", "effusion"}, named
    assert sum(p > 0.5 for p in answers["film0.png"].probabilities.values()) == 2, "sigmoids, not one softmax"


def test_a_multi_label_run_refuses_an_ordinal_loss(ws, tmp_path: Path) -> None:
    from core.errors import TrainingError

    organize(ws, multilabel_npz(tmp_path / "chestmnist.npz"), "chest")
    with pytest.raises(TrainingError, match="several findings per image"):
        train(ws, "chest", "supervised", run="graded", ordinal=1.0, **OPTIONS)


NIH_FINDINGS = ("Effusion", "Mass", "Nodule")


def nih_tree(base: Path, images: int = 60) -> Path:
    """An NIH ChestX-ray14 tree: PNGs under images_001/images and Data_Entry_2017.csv, whose
    rows name their findings "a|b" (three of NIH's, drawn as squares) or "No Finding"."""
    rng = np.random.default_rng(3)
    labels = (rng.random((images, 3)) < 0.35).astype(np.uint8)
    (base / "images_001" / "images").mkdir(parents=True)
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position"]
    for k, (image, row) in enumerate(zip(_images(labels, rng), labels)):
        name = f"{k + 1:08d}_000.png"
        Image.fromarray(image).save(base / "images_001" / "images" / name)
        found = "|".join(n for n, shown in zip(NIH_FINDINGS, row) if shown) or "No Finding"
        lines.append(f"{name},{found},0,{k + 1},58,M,PA")
    (base / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    return base


def test_nih_rows_naming_several_findings_train_one_probability_per_finding(ws, tmp_path: Path) -> None:
    """The table's own finding names become the run's findings, "No Finding" none of them."""
    organize(ws, nih_tree(tmp_path / "nih"), "nih", workers=1)
    config = json.loads((ws.organized_path("nih") / "training_config.json").read_text())
    assert config["findings"] == list(NIH_FINDINGS)
    train(ws, "nih", "supervised", run="nih", **{**OPTIONS, "epochs": 1})
    meta = ws.run_metadata("nih")
    assert meta["classes"] == list(NIH_FINDINGS) and meta["config"]["multilabel"] is True


def test_the_workflow_on_findings_skips_the_hybrid_and_says_why(ws, tmp_path: Path, monkeypatch) -> None:
    from app import workflow
    from app.workflow import WorkflowOptions, run_workflow

    monkeypatch.setitem(workflow.FAST, "supervised", {"image_size": 32, "epochs": 2, "batch_size": 16,
                                                      "backbone": "resnet10t"})
    monkeypatch.setitem(workflow.FAST, "vae", {"image_size": 32, "epochs": 1, "batch_size": 16})
    state = run_workflow(ws, WorkflowOptions(dataset="chest", source=str(nih_tree(tmp_path / "nih")), fast=True))
    steps = state["steps"]
    assert all(record["status"] == "done" for record in steps.values()) and "finished" in state
    assert "several findings per image" in steps["hybrid"]["skipped"]
    assert steps["hybrid"]["run"] not in steps["evaluate"]["metrics"] and len(steps["export"]["exports"]) == 2
    assert "exact_match" in steps["evaluate"]["metrics"][steps["supervised"]["run"]]


def test_two_multi_label_runs_average_as_findings(ws, tmp_path: Path) -> None:
    from app.evaluate import ensemble_partners, evaluate_ensemble

    organize(ws, multilabel_npz(tmp_path / "chestmnist.npz"), "chest")
    for seed in (0, 1):
        train(ws, "chest", "supervised", run=f"seed{seed}", seed=seed, **{**OPTIONS, "epochs": 4})
    assert ensemble_partners(ws, "seed0") == ["seed1"]
    m = evaluate_ensemble(ws, ["seed0", "seed1"])
    assert "exact_match" in m and set(m["per_class"]) == {"atelectasis", "cardiomegaly", "effusion"}
    assert m["roc_auc_ovr"] > 0.7 and "accuracy_at_val_threshold" in m, m
