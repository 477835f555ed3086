"""Metrics from predictions: plain numpy in, plain dicts out (scikit-learn does the work)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _pr_auc(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Macro one-vs-rest average precision over the classes present."""
    from sklearn.metrics import average_precision_score

    present = sorted(set(targets.tolist()))
    if len(present) < 2:
        return float("nan")
    if probabilities.shape[1] == 2:
        return float(average_precision_score(targets == 1, probabilities[:, 1]))
    return float(np.mean([average_precision_score(targets == k, probabilities[:, k]) for k in present]))


def _rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count half), in numpy."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def headline_metrics(probabilities: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and macro one-vs-rest ROC-AUC, in plain numpy:
    the same values as scikit-learn's, fast enough to recompute a thousand times."""
    classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    matrix = np.bincount(targets * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    true_counts, predicted_counts, hits = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    present = true_counts > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(present, hits / true_counts, 0.0)
        precision = np.where(predicted_counts > 0, hits / predicted_counts, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    seen = present | (predicted_counts > 0)
    if classes == 2:
        auc = _rank_auc(probabilities[:, 1], targets == 1)
    else:
        aucs = [_rank_auc(probabilities[:, k], targets == k) for k in np.flatnonzero(present)]
        auc = float(np.mean(aucs)) if len(aucs) >= 2 else float("nan")
    return {
        "accuracy": float((predicted == targets).mean()),
        "balanced_accuracy": float(recall[present].mean()),
        "f1_macro": float(f1[seen].mean()),
        "roc_auc_ovr": auc,
    }


def classification_metrics(probabilities: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, F1 (macro, weighted), Cohen's kappa, ROC-AUC and PR-AUC
    (one-vs-rest, macro), per-class sensitivity, specificity and one-vs-rest ROC-AUC, calibration errors,
    confusion matrix.

    AUCs are NaN when fewer than two classes are present in ``targets`` (undefined then).
    """
    from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score

    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(classes)))
    present = sorted(set(targets.tolist()))
    matrix = confusion_matrix(targets, predicted, labels=labels)
    per_class = {}
    for k, name in enumerate(classes):
        tp, fn = matrix[k, k], matrix[k].sum() - matrix[k, k]
        fp = matrix[:, k].sum() - matrix[k, k]
        tn = matrix.sum() - tp - fn - fp
        per_class[name] = {
            "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
            "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
            "support": int(tp + fn),
            "auc": _one_vs_rest_auc(probabilities[:, k], targets == k),
        }
    return {
        **headline_metrics(probabilities, targets),
        "f1_weighted": float(f1_score(targets, predicted, labels=labels, average="weighted", zero_division=0)),
        "kappa": float(cohen_kappa_score(targets, predicted)) if len(present) > 1 else float("nan"),
        "pr_auc_ovr": _pr_auc(probabilities, targets),
        **calibration_errors(probabilities, targets),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "n": int(len(targets)),
    }


def _one_vs_rest_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC of one class's probability against all others; NaN when either side is empty."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, scores)) if 0 < positive.sum() < len(positive) else float("nan")


def calibration_errors(probabilities: np.ndarray, targets: np.ndarray, bins: int = 10) -> dict[str, float]:
    """Expected and maximum calibration error of the top-class confidence (equal-width bins)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece, mce = 0.0, 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            ece += inside.mean() * gap
            mce = max(mce, gap)
    return {"ece": float(ece), "mce": float(mce)}


def bootstrap_intervals(
    probabilities: np.ndarray, targets: np.ndarray, rounds: int = 1000, seed: int = 0
) -> dict[str, list[float]]:
    """95% percentile-bootstrap intervals of the headline metrics (test images resampled)."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(rounds):
        pick = rng.integers(0, len(targets), len(targets))
        for key, value in headline_metrics(probabilities[pick], targets[pick]).items():
            if not np.isnan(value):
                draws.setdefault(key, []).append(value)
    return {key: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for key, v in draws.items() if len(v) > rounds // 2}


def anomaly_intervals(is_anomaly: np.ndarray, scores: np.ndarray, rounds: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of the anomaly AUROC."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(scores), len(scores))
        value = anomaly_auroc(is_anomaly[pick], scores[pick])
        if not np.isnan(value):
            values.append(value)
    if len(values) <= rounds // 2:
        return [float("nan"), float("nan")]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def anomaly_auroc(is_anomaly: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC of anomaly scores against normal (0) / anomalous (1); NaN if one side is empty."""
    from sklearn.metrics import roc_auc_score

    if len(set(is_anomaly.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(is_anomaly, scores))


def youden_threshold(is_anomaly: np.ndarray, scores: np.ndarray) -> float | None:
    """The score cut that maximizes sensitivity + specificity - 1 (None without both kinds)."""
    from sklearn.metrics import roc_curve

    if len(set(np.asarray(is_anomaly).tolist())) < 2:
        return None
    fpr, tpr, cuts = roc_curve(is_anomaly, scores)
    # The first point of the curve is "flag nothing", at a cut above every score (infinite
    # in current scikit-learn); a cut among the scores is as good when the model cannot
    # separate the kinds at all (every point then has the same index 0), and is a number.
    finite = np.isfinite(cuts)
    finite[0] = False
    if not finite.any():
        return None
    candidates = np.flatnonzero(finite)
    best = int(candidates[np.argmax((tpr - fpr)[candidates])])
    return float(cuts[best])


METRIC_LABELS = {
    "n": "images", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
    "roc_auc_ovr": "ROC AUC (macro, one vs. rest)", "pr_auc_ovr": "PR AUC (macro)",
    "f1_macro": "F1 (macro)", "f1_weighted": "F1 (weighted)", "kappa": "Cohen's kappa",
    "ece": "calibration error (ECE)", "mce": "largest calibration error (MCE)",
    "anomaly_auroc": "anomaly AUROC (normal vs. any finding)", "threshold": "anomaly threshold",
    "threshold_at_val_threshold": "anomaly threshold (chosen on validation)",
    "accuracy_at_val_threshold": "accuracy at that threshold",
    "sensitivity_at_val_threshold": "sensitivity at that threshold",
    "specificity_at_val_threshold": "specificity at that threshold",
    "tta": "test-time augmentation (mirror)", "dataset_changed": "dataset organized again since training",
    "val_auroc": "validation AUROC", "best_val_monitor": "best validation score", "epochs_trained": "epochs trained",
    "weight": "weight of the classifier (hybrid)",
    "exact_match": "images with every finding called right", "finding_threshold": "probability that calls a finding",
    "finding_accuracy_at_val_thresholds": "accuracy per finding at its threshold chosen on validation (mean)",
}


# The same keys where each image has several findings, each its own probability (MedMNIST's means).
FINDING_LABELS = {
    "roc_auc_ovr": "ROC AUC (mean over the findings)",
    "accuracy": "accuracy (mean over the findings, at 0.5)",
    "ece": "calibration error (ECE, every finding's yes/no)",
}


def metric_label(key: str, several: bool = False) -> str:
    """A metric's name as a reader says it (``threshold_at_val_threshold`` is no word);
    ``several``: the figures of a model with several findings per image."""
    if several and key in FINDING_LABELS:
        return FINDING_LABELS[key]
    if " " in key:
        return key  # already words ("skipped files (see scan_report.json)", "class other_anomaly"): kept as written
    return METRIC_LABELS.get(key, key.replace("_", " "))


# -- several findings per image (multi-label) ----------------------------------------------------
def finding_figures(probabilities: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, float]:
    """MedMNIST's multi-label headline figures: the mean over findings of each finding's
    ROC-AUC (those present and absent in ``targets``) and of its accuracy at ``threshold``."""
    positive = targets > 0.5
    aucs = [_rank_auc(probabilities[:, k], positive[:, k]) for k in range(targets.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return {"roc_auc_ovr": float(np.mean(aucs)) if aucs else float("nan"),
            "accuracy": float(((probabilities >= threshold) == positive).mean())}


def multilabel_metrics(probabilities: np.ndarray, targets: np.ndarray, findings: list[str],
                       threshold: float = 0.5, chosen: list[float] | None = None) -> dict[str, Any]:
    """Figures of a model that gives each finding its own probability (N, findings), against
    ``targets`` (N, findings) of 0/1, as MedMNIST reports ChestMNIST: ``roc_auc_ovr`` the mean
    of the per-finding ROC-AUCs (findings with images of both kinds), ``accuracy`` the mean
    per-finding accuracy at ``threshold``; ``exact_match`` the share of images whose every
    finding is called right; per finding its AUC, sensitivity and specificity at the
    threshold and its count; the calibration error of every finding's probability taken as
    a yes/no answer of its own."""
    from sklearn.metrics import average_precision_score

    positive = targets > 0.5
    called = probabilities >= threshold
    per_class = {}
    for k, name in enumerate(findings):
        tp = int((called[:, k] & positive[:, k]).sum())
        fn = int((~called[:, k] & positive[:, k]).sum())
        fp = int((called[:, k] & ~positive[:, k]).sum())
        tn = len(targets) - tp - fn - fp
        per_class[name] = {
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "support": tp + fn,
            "auc": _one_vs_rest_auc(probabilities[:, k], positive[:, k]),
        }
        if chosen is not None:
            at = probabilities[:, k] >= chosen[k]
            shown, absent = positive[:, k], ~positive[:, k]
            per_class[name].update(threshold=float(chosen[k]),
                                   sensitivity_at_val_threshold=float(at[shown].mean()) if shown.any() else float("nan"),
                                   specificity_at_val_threshold=float((~at[absent]).mean()) if absent.any() else float("nan"))
    present = [k for k in range(len(findings)) if 0 < positive[:, k].sum() < len(positive)]
    flat = probabilities.reshape(-1)
    return {
        **finding_figures(probabilities, targets, threshold),
        "exact_match": float((called == positive).all(axis=1).mean()) if len(targets) else float("nan"),
        "pr_auc_ovr": float(np.mean([average_precision_score(positive[:, k], probabilities[:, k]) for k in present]))
        if present else float("nan"),
        **calibration_errors(np.stack([1 - flat, flat], axis=1), positive.reshape(-1).astype(int)),
        "per_class": per_class,
        "finding_threshold": threshold,
        **({"finding_accuracy_at_val_thresholds": float(((probabilities >= np.asarray(chosen)) == positive).mean())}
           if chosen is not None else {}),
        "n": int(len(targets)),
    }


def multilabel_intervals(probabilities: np.ndarray, targets: np.ndarray, threshold: float = 0.5,
                         rounds: int = 200, seed: int = 0) -> dict[str, list[float]]:
    """95% percentile-bootstrap intervals of the multi-label headline figures (images resampled).
    200 rounds: a round ranks every finding's scores, 50 ms on ChestMNIST's 22,433 test images."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(rounds):
        pick = rng.integers(0, len(targets), len(targets))
        for key, value in finding_figures(probabilities[pick], targets[pick], threshold).items():
            if not np.isnan(value):
                draws.setdefault(key, []).append(value)
    return {key: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for key, v in draws.items() if len(v) > rounds // 2}
