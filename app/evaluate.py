"""Evaluate a finished run on a split: metrics, plots and a readable report.

Thresholds come from the validation split, never from the split evaluated.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app import plots
from app.atomic import swap_in, temp_sibling
from app.data import phase_inputs, split_rows
from app.laterality import flips_sentence
from core.errors import DatasetError, TrainingError, WorkbenchError
from core.metrics import (
    anomaly_auroc, anomaly_intervals, bootstrap_intervals, classification_metrics, metric_label, multilabel_intervals,
    multilabel_metrics, youden_threshold,
)
from app.progress import Progress
from app.training import load_run_phase, predict_batches
from app.verdict import model_verdict
from app.runs import Run
from app.workspace import Workspace, now_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    run: str
    split: str
    metrics: dict[str, Any]
    report: Path
    plots: list[Path]


def _scores(ws: Workspace, phase: Any, dataset: str, split: str, progress: Progress | None,
            tta: bool = False) -> tuple[np.ndarray, list]:
    """Outputs for the labeled rows of ``split``; with ``tta`` averaged with the mirrored images."""

    rows = [r for r in split_rows(ws, dataset, split) if r["labeled"]]
    if phase.spec.output == "class_probabilities":
        rows = phase.select_rows(rows)
    if not rows:
        raise DatasetError(f"The {split} split of {dataset!r} holds no labeled image to evaluate on.")
    images = phase_inputs(ws, phase, rows, progress, f"Loading {split} images")
    parts = []
    for start in range(0, len(images), 256):  # a cube store is read a part at a time
        batch = images[start : start + 256]
        output = predict_batches(phase, batch, 64)
        parts.append((output + predict_batches(phase, batch.flip(-1), 64)) / 2 if tta else output)
    return np.concatenate(parts), rows


def _operating_point(is_anomaly: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    flagged = scores >= threshold
    positives, negatives = is_anomaly == 1, is_anomaly == 0
    return {
        "threshold": float(threshold),
        "accuracy": float((flagged == (is_anomaly == 1)).mean()) if len(scores) else math.nan,
        "sensitivity": float(flagged[positives].mean()) if positives.any() else math.nan,
        "specificity": float((~flagged[negatives]).mean()) if negatives.any() else math.nan,
    }


def _at_val_threshold(val_score: np.ndarray, val_rows: list, is_anomaly: np.ndarray,
                      anomaly_score: np.ndarray) -> dict[str, float]:
    """Accuracy, sensitivity and specificity at the anomaly threshold chosen on validation
    (Youden on the validation images' anomaly scores ``val_score``: 1 - P(normal), or the most
    likely finding's probability), as ``*_at_val_threshold``; empty when none can be chosen."""
    val_anomaly = np.array([0 if r["label"] == "normal" else 1 for r in val_rows])
    cut = youden_threshold(val_anomaly, val_score)
    if cut is None:
        return {}
    return {f"{k}_at_val_threshold": v for k, v in _operating_point(is_anomaly, anomaly_score, cut).items()}


def evaluate_run(ws: Workspace, run: str, split: str = "test", progress: Progress | None = None,
                 tta: bool = False) -> Evaluation:
    """Evaluate run ``run`` on ``split``; writes plots (Grad-CAM overlays for classifiers) and
    report.md into the run's ``evaluation/`` folder, then the run's metadata. The folder is
    written aside and swapped in whole: an interrupted evaluation leaves the previous one. ``tta``: average each prediction with the one on
    the mirrored image (test-time augmentation).

    Raises:
        DatasetError / TrainingError: no such run, unfinished run, or nothing to evaluate.
        BusyError: the run is being trained or exported by another process.
    """
    with ws.lock("run", run):
        return _evaluate_run(ws, run, split, progress, tta)


def dataset_changed(ws: Workspace, meta: dict[str, Any]) -> bool:
    """Whether the dataset a run was trained on was organized again since (another version)."""
    trained_on = meta.get("dataset_version")
    if not trained_on:
        return False
    try:
        current = ws.dataset_metadata(meta["dataset"]).get("version")
    except WorkbenchError:
        return True
    return current != trained_on


def _evaluate_run(ws: Workspace, run: str, split: str, progress: Progress | None, tta: bool) -> Evaluation:
    this = Run.load(ws, run)
    meta = this.meta
    if dataset_changed(ws, meta):
        log.warning("The dataset %r was organized again after run %s was trained on it: the %s split may now "
                    "hold images the run trained on. Train a new run to measure it fairly.",
                    meta["dataset"], run, split)
    phase = load_run_phase(ws, run)
    if tta and phase.spec.output != "class_probabilities":
        # An anomaly scorer's threshold was fitted on scores of unmirrored images.
        raise TrainingError(f"Test-time augmentation is for classifier runs; {run} is a {meta['phase']} run. "
                            "Evaluate it without --tta.")
    pairs = (meta.get("flips") or {}).get("mirror_pairs")
    if tta and pairs:
        raise TrainingError(f"{run}'s classes mirror each other ({pairs[0]['classes'][0]} / {pairs[0]['classes'][1]}): "
                            "averaging an image with its mirror would mix them. Evaluate it without --tta.")
    final = ws.run_dir(run) / "evaluation"
    staging = temp_sibling(final, "new")
    staging.mkdir()
    try:
        _keep_other_splits(final, staging, split)
        metrics, report, made = _write_outputs(ws, run, meta, phase, split, progress, tta, staging)
        swap_in(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    this.change(lambda current: {"evaluation": {**current.get("evaluation", {}),
                                                split: {**metrics, "evaluated": now_iso()}}})
    return Evaluation(run, split, metrics, final / report.name, [final / p.name for p in made])


def _keep_other_splits(final: Path, staging: Path, split: str) -> None:
    """Copy into ``staging`` the figures of the splits not evaluated now (a test evaluation
    keeps the val one's); this split's, the report and the learning curves are made anew."""
    if not final.is_dir():
        return
    for path in final.iterdir():
        if path.is_file() and path.name != "report.md" and path.stem != "learning_curves" \
                and not path.stem.endswith(f"_{split}"):
            shutil.copy2(path, staging / path.name)


def _write_outputs(ws: Workspace, run: str, meta: dict[str, Any], phase: Any, split: str,
                   progress: Progress | None, tta: bool, run_dir: Path) -> tuple[dict[str, Any], Path, list[Path]]:
    """Metrics of ``run`` on ``split``, with the plots and report written into ``run_dir``."""
    outputs, rows = _scores(ws, phase, meta["dataset"], split, progress, tta)
    is_anomaly = np.array([0 if r["label"] == "normal" else 1 for r in rows])
    made: list[Path] = []
    if getattr(phase, "multilabel", False):
        metrics = _finding_outputs(ws, run, meta, phase, split, outputs, rows, is_anomaly, tta, run_dir, made)
    elif phase.spec.output == "class_probabilities":
        targets = np.array([phase.classes.index(r["label"]) for r in rows])
        metrics = classification_metrics(outputs, targets, phase.classes)
        metrics["ci95"] = bootstrap_intervals(outputs, targets)
        made.append(plots.confusion_matrix_plot(metrics["confusion_matrix"], phase.classes,
                                                run_dir / f"confusion_{split}.png", f"{run} ({split})"))
        made.append(plots.reliability_diagram(outputs, targets, run_dir / f"reliability_{split}.png",
                                              f"Calibration (ECE {metrics['ece']:.3f})"))
        if "normal" in phase.classes:
            anomaly_score = 1.0 - outputs[:, phase.classes.index("normal")]
            metrics["anomaly_auroc"] = anomaly_auroc(is_anomaly, anomaly_score)
            if not math.isnan(metrics["anomaly_auroc"]):
                metrics["ci95"]["anomaly_auroc"] = anomaly_intervals(is_anomaly, anomaly_score)
                if split != "val":  # an anomaly threshold chosen on validation (Youden), applied here
                    val_outputs, val_rows = _scores(ws, phase, meta["dataset"], "val", None, tta)
                    metrics.update(_at_val_threshold(1.0 - val_outputs[:, phase.classes.index("normal")], val_rows,
                                                     is_anomaly, anomaly_score))
                made.append(plots.roc_plot(is_anomaly, anomaly_score, run_dir / f"roc_{split}.png",
                                           "Anomalous vs normal"))
                made.append(plots.pr_plot(is_anomaly, anomaly_score, run_dir / f"pr_{split}.png",
                                          "Anomalous vs normal"))
    else:
        threshold = phase.threshold
        if threshold is None:  # VAE: the 95th percentile of validation normals
            val_scores, val_rows = _scores(ws, phase, meta["dataset"], "val", progress)
            normals = val_scores[[r["label"] == "normal" for r in val_rows]]
            threshold = float(np.percentile(normals if len(normals) else val_scores, 95))
        metrics = {"anomaly_auroc": anomaly_auroc(is_anomaly, outputs), "n": len(rows),
                   **_operating_point(is_anomaly, outputs, threshold),
                   "ci95": {"anomaly_auroc": anomaly_intervals(is_anomaly, outputs)}}
        made.append(plots.score_histogram(is_anomaly, outputs, threshold, run_dir / f"scores_{split}.png",
                                          f"{run} ({split})"))
        if not math.isnan(metrics["anomaly_auroc"]):
            made.append(plots.roc_plot(is_anomaly, outputs, run_dir / f"roc_{split}.png", "Anomalous vs normal"))
            made.append(plots.pr_plot(is_anomaly, outputs, run_dir / f"pr_{split}.png", "Anomalous vs normal"))
    if meta.get("history"):
        made.append(plots.learning_curves(meta["history"], run_dir / "learning_curves.png", run))
    if phase.gradcam_target():
        from app.explain import gradcam_overlays

        made.append(gradcam_overlays(ws, run, split, progress=progress, folder=run_dir).path)
    elif phase.spec.output == "anomaly_score":
        from app.explain import residual_overlays

        made.append(residual_overlays(ws, run, split, progress=progress, folder=run_dir).path)
    if "calibration" in meta:
        metrics["calibration"] = meta["calibration"]
    metrics["tta"] = tta
    metrics["dataset_changed"] = dataset_changed(ws, meta)
    if split == "test":
        metrics["verdict"] = model_verdict({**meta, "evaluation": {"test": metrics}}).as_dict()
    return metrics, _write_report(run_dir, meta, split, metrics, made), made


def _finding_outputs(ws: Workspace, run: str, meta: dict[str, Any], phase: Any, split: str, outputs: np.ndarray,
                     rows: list, is_anomaly: np.ndarray, tta: bool, run_dir: Path, made: list[Path]) -> dict[str, Any]:
    """The figures of a multi-label run (one probability per finding), as MedMNIST reports
    them (core.metrics.multilabel_metrics), its per-finding AUC plot and its calibration;
    "any finding" against none scored by the most likely finding's probability, with the
    threshold chosen on validation. Plots are added to ``made``."""
    targets = phase.targets(rows).numpy()
    metrics = multilabel_metrics(outputs, targets, phase.classes, chosen=phase.finding_thresholds)
    metrics["ci95"] = multilabel_intervals(outputs, targets)
    made.append(plots.finding_aucs_plot(metrics["per_class"], run_dir / f"findings_{split}.png",
                                        f"{run} ({split}): each finding"))
    flat = outputs.reshape(-1)
    made.append(plots.reliability_diagram(np.stack([1 - flat, flat], axis=1), targets.reshape(-1).astype(int),
                                          run_dir / f"reliability_{split}.png",
                                          f"Calibration, every finding's yes/no (ECE {metrics['ece']:.3f})",
                                          counted="answers"))
    anomaly_score = outputs.max(axis=1)
    metrics["anomaly_auroc"] = anomaly_auroc(is_anomaly, anomaly_score)
    if not math.isnan(metrics["anomaly_auroc"]):
        metrics["ci95"]["anomaly_auroc"] = anomaly_intervals(is_anomaly, anomaly_score)
        if split != "val":
            val_outputs, val_rows = _scores(ws, phase, meta["dataset"], "val", None, tta)
            metrics.update(_at_val_threshold(val_outputs.max(axis=1), val_rows, is_anomaly, anomaly_score))
        made.append(plots.roc_plot(is_anomaly, anomaly_score, run_dir / f"roc_{split}.png", "Any finding vs none"))
        made.append(plots.pr_plot(is_anomaly, anomaly_score, run_dir / f"pr_{split}.png", "Any finding vs none"))
    return metrics


def is_classifier_run(meta: dict[str, Any]) -> bool:
    """Whether a run's metadata is that of a classifier (class probabilities out)."""
    from core.errors import UnknownNameError
    from models import get_phase_class

    try:
        return get_phase_class(meta["phase"]).spec.output == "class_probabilities"
    except (KeyError, UnknownNameError):  # no phase recorded, or one this version does not know
        return False


def ensemble_partners(ws: Workspace, run: str) -> list[str]:
    """Finished classifier runs that ``run`` can be averaged with (evaluate_ensemble):
    the same dataset and classes, ``run`` itself left out; none when ``run`` is no classifier."""
    this = ws.run_metadata(run)
    if not is_classifier_run(this):
        return []
    return [m["run"] for m in ws.runs()
            if m["run"] != run and m.get("status") in ("complete", "stopped") and is_classifier_run(m)
            and not m.get("trial_of")  # a search's trials and members: its run holds what it kept
            and m.get("dataset") == this.get("dataset") and m.get("classes") == this.get("classes")]


def evaluate_ensemble(ws: Workspace, runs: list[str], split: str = "test", tta: bool = False) -> dict[str, Any]:
    """Metrics of several classifier runs of one dataset averaged (their calibrated class
    probabilities, e.g. runs that differ only in seed): the same figures as one run's,
    with the anomaly threshold chosen on validation from the averaged validation outputs.
    Nothing is written. Raises TrainingError when the runs disagree on dataset or classes."""
    phases = [load_run_phase(ws, run) for run in runs]
    datasets = {ws.run_metadata(run)["dataset"] for run in runs}
    if len(datasets) != 1 or any(p.spec.output != "class_probabilities" or p.classes != phases[0].classes for p in phases):
        raise TrainingError("An ensemble needs classifier runs of one dataset with the same classes.")
    dataset, classes = datasets.pop(), phases[0].classes

    def averaged(which: str) -> tuple[np.ndarray, list]:
        outputs = [_scores(ws, phase, dataset, which, None, tta) for phase in phases]
        return np.mean([o for o, _ in outputs], axis=0), outputs[0][1]

    outputs, rows = averaged(split)
    if getattr(phases[0], "multilabel", False):  # one probability per finding: "any finding" by the likeliest
        targets = phases[0].targets(rows).numpy()
        metrics = {**multilabel_metrics(outputs, targets, classes), "ci95": multilabel_intervals(outputs, targets)}
        is_anomaly = np.array([0 if r["label"] == "normal" else 1 for r in rows])
        metrics["anomaly_auroc"] = anomaly_auroc(is_anomaly, outputs.max(axis=1))
        if split != "val":
            val_outputs, val_rows = averaged("val")
            metrics.update(_at_val_threshold(val_outputs.max(axis=1), val_rows, is_anomaly, outputs.max(axis=1)))
        return {**metrics, "runs": list(runs), "tta": tta}
    targets = np.array([classes.index(r["label"]) for r in rows])
    metrics = classification_metrics(outputs, targets, classes)
    metrics["ci95"] = bootstrap_intervals(outputs, targets)
    if "normal" in classes:
        normal = classes.index("normal")
        is_anomaly = np.array([0 if r["label"] == "normal" else 1 for r in rows])
        metrics["anomaly_auroc"] = anomaly_auroc(is_anomaly, 1.0 - outputs[:, normal])
        if split != "val":
            val_outputs, val_rows = averaged("val")
            metrics.update(_at_val_threshold(1.0 - val_outputs[:, normal], val_rows, is_anomaly, 1.0 - outputs[:, normal]))
    return {**metrics, "runs": list(runs), "tta": tta}


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _weights(record: dict[str, Any] | None) -> str:
    if not record:
        return "none: trained from scratch"
    return f"{record.get('file')} (sha256 {str(record.get('sha256', ''))[:16]}...)"


def mirror_sentence(mirror: dict[str, Any]) -> str:
    """What the recipe search decided about the mirror view (app/recipes.py _mirror_choice)."""
    said = (f"validation AUC {mirror['val_auc_single']:.4f} on the images as given, "
            f"{mirror['val_auc_mirrored']:.4f} averaged with their mirrors")
    if mirror["kept"]:
        return (f"Mirror view: the model averages each image with its left-right mirror ({said}); it trained on "
                "mirrored images too. The exported model does the same.")
    return f"Mirror view not used: it scored lower on validation ({said})."


def _write_report(run_dir: Path, meta: dict[str, Any], split: str, metrics: dict[str, Any], made: list[Path]) -> Path:
    lines = [
        f"# Run {meta['run']}", "",
        f"- phase: {meta['phase']}", f"- dataset: {meta['dataset']}",
        f"- {'findings (one probability each)' if meta.get('config', {}).get('multilabel') else 'classes'}: "
        f"{', '.join(meta.get('classes', []))}", f"- evaluated on: {split} split",
        f"- dataset version trained on: {meta.get('dataset_version') or 'not recorded'}",
        f"- seed: {meta.get('config', {}).get('seed', 'not recorded')}",
        *([f"- trained on: {meta['device']}"] if meta.get("device") else []),
        *([f"- pretrained weights: {_weights(meta['pretrained_weights'])}"] if "pretrained_weights" in meta else []),
        f"- figures below: {'test-time augmentation (each image averaged with its mirror)' if metrics.get('tta') else 'single view (no test-time augmentation)'}",
        "",
    ]
    if metrics.get("verdict"):
        verdict = metrics["verdict"]
        lines += [f"**Verdict: {verdict['level']}**" + (f": {'; '.join(verdict['reasons'])}." if verdict["reasons"]
                                                        else ": no weakness found in these figures."), ""]
    if flips_sentence(meta.get("flips")):
        lines += [flips_sentence(meta.get("flips")), ""]
    if metrics.get("dataset_changed"):
        lines += ["**The dataset was organized again after this run was trained: its splits may have changed, "
                  "so these figures may include images the model trained on. Train a new run to measure it "
                  "fairly.**", ""]
    lines += ["| metric | value |", "| --- | --- |"]
    intervals = metrics.get("ci95", {})
    several = bool(meta.get("config", {}).get("multilabel"))
    lines += [f"| {metric_label(k, several)} | {_fmt(v)}" + (f" (95% CI {intervals[k][0]:.3f}-{intervals[k][1]:.3f})" if k in intervals else "") + " |"
              for k, v in metrics.items() if not isinstance(v, (list, dict))]
    if several:
        lines += ["", "Several findings per image: the model gives each finding its own probability. As MedMNIST "
                  "reports multi-label sets, the ROC AUC is the mean of the findings' AUCs and the accuracy the mean of "
                  "their accuracies at a probability of 0.5 (mostly the absent findings called absent); the anomaly "
                  "AUROC scores any finding against none by the most likely finding's probability."]
    if "per_class" in metrics and several:
        chosen = all("threshold" in c for c in metrics["per_class"].values())
        lines += ["", "| finding | AUC (shown against not shown) | sensitivity / specificity at 0.5 | "
                  + ("threshold chosen on validation | sensitivity / specificity there | " if chosen else "")
                  + "images showing it |", "| --- | --- | --- | " + ("--- | --- | " if chosen else "") + "--- |"]
        lines += [f"| {name} | {_fmt(c.get('auc', float('nan')))} | {_fmt(c['sensitivity'])} / {_fmt(c['specificity'])} | "
                  + (f"{_fmt(c['threshold'])} | {_fmt(c['sensitivity_at_val_threshold'])} / "
                     f"{_fmt(c['specificity_at_val_threshold'])} | " if chosen else "")
                  + f"{c['support']} |" for name, c in metrics["per_class"].items()]
        if chosen:
            lines += ["", "Predictions name a finding when its probability reaches its threshold chosen on the "
                      "validation split (Youden's point: sensitivity + specificity highest there)."]
    elif "per_class" in metrics:
        lines += ["", "| class | sensitivity | specificity | AUC (this class against the rest) | support |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {name} | {_fmt(c['sensitivity'])} | {_fmt(c['specificity'])} | {_fmt(c.get('auc', float('nan')))} | "
                  f"{c['support']} |" for name, c in metrics["per_class"].items()]
    if isinstance(meta.get("recipe"), dict) and meta.get("trials"):
        # app/recipes.py: the recipes screened on validation, and the one this run went on with. Runs searched
        # before successive halving have no round in their trials: no round column, and no sentence about it.
        halved = any("round" in t for t in meta["trials"])
        lines += ["", f"## Recipe: {meta['recipe'].get('name')} (chosen on the validation split)", "",
                  ("Round 0 screens every recipe briefly; each later round goes on with the better half of the round "
                   "before, for longer (successive halving)." if halved else
                   "Every recipe was screened briefly, each with an equal share of the time (a run searched before "
                   "the search worked in rounds).") + " Scored on validation only.", "",
                  ("| round " if halved else "") + "| recipe screened | epochs | best validation figure | seconds |",
                  ("| --- " if halved else "") + "| --- | --- | --- | --- |"]
        lines += [(f"| {t.get('round', 0)} " if halved else "") +
                  f"| {t['recipe']}{' (chosen)' if t['recipe'] == meta['recipe'].get('name') else ''} | "
                  f"{t['epochs']} | {_fmt(t['val_monitor'])} | {t['seconds']} |" for t in meta["trials"]]
        lines += ["", "Settings: " + ", ".join(f"{k} {v}" for k, v in meta["recipe"].items() if k != "name") + "."]
    found = meta.get("ensemble") or {}
    if found.get("members"):
        # app/recipes.py _members: trained in the time left, each kept only when validation agreed.
        averaged = found.get("averaged_in") == meta["run"] and len(found["runs"]) > 1
        lines += ["", "## Members (trained in the time left; kept when the average scored at least as well on "
                  "validation)", "", "| member | recipe | seed | validation AUC without it | with it | kept |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {m['member']} | {m['recipe']} | {m['seed']} | {_fmt(m['val_auc_before'])} | "
                  f"{_fmt(m['val_auc_with'])} | {'yes' if m['kept'] else 'no'} |" for m in found["members"]]
        lines += ["", f"This run is the average of {len(found['runs'])} models (their logits): validation AUC "
                  f"{_fmt(found['val_auc_alone'])} for the winner alone ({found['runs'][0]}), {_fmt(found['val_auc'])} "
                  "averaged." if averaged else "No member was kept: this run is the winner"
                  + (", averaged with its mirror (below)." if (found.get("mirror") or {}).get("kept") else " alone.")]
    if found.get("mirror"):
        # app/recipes.py _mirror_choice: test-time augmentation folded into the model, when validation agreed.
        lines += ["", mirror_sentence(found["mirror"])]
    if found.get("failed"):
        lines += ["", f"Training a member failed ({found['failed']}); the models before it stand."]
    if found.get("average_failed"):
        lines += ["", f"Writing the average into this run failed ({found['average_failed']}): it is the winner alone."]
    calibration = metrics.get("calibration")
    if isinstance(calibration, dict) and calibration:
        # Set after training: a classifier's temperature (fitted on validation) and per-class bias (the training shares)
        # with its log-loss and calibration errors before and after; a VAE's scoring choices.
        lines += ["", "## Calibration (the temperature fitted on the validation split)", "", "| setting | value |", "| --- | --- |"]
        for key, value in calibration.items():
            if key == "bias" and isinstance(value, list):
                value = ", ".join(f"{name} {b:+.3f}" for name, b in zip(meta.get("classes", []), value))
            elif isinstance(value, dict):
                value = "; ".join(f"{k} {_fmt(v)}" for k, v in value.items())
            lines.append(f"| {key} | {_fmt(value) if value is not None else 'none'} |")
    if meta.get("time_plan"):
        # app.engine.TimeBudget: the plan of epochs fitted (and refitted) to a time limit.
        lines += ["", "## Time plan (epochs fitted to the time limit)", "",
                  "| after epoch | seconds an epoch | seconds left | epochs planned |", "| --- | --- | --- | --- |"]
        lines += [f"| {p['after_epoch']} | {p['seconds_per_epoch']} | {p['seconds_left']} | {p['epochs']} |"
                  for p in meta["time_plan"]]
    lines += ["", "## Configuration", "", "```", *[f"{k}: {v}" for k, v in meta.get("config", {}).items()], "```", ""]
    lines += [f"![{p.stem}]({p.name})" for p in made]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
