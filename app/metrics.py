"""Metrics from predictions: plain numpy in, plain dicts out (scikit-learn does the work)."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(probabilities: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, Cohen's kappa, one-vs-rest ROC-AUC, confusion matrix.

    ROC-AUC is NaN when a class is absent from ``targets`` (it is undefined then).
    """
    from sklearn.metrics import (
        accuracy_score, balanced_accuracy_score, cohen_kappa_score, confusion_matrix, f1_score,
        roc_auc_score,
    )

    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(classes)))
    present = sorted(set(targets.tolist()))
    auc = float("nan")
    if len(present) >= 2:
        if len(classes) == 2:
            auc = float(roc_auc_score(targets, probabilities[:, 1]))
        else:
            # Macro over the classes present in this split, one versus the rest.
            per_class = [roc_auc_score(targets == k, probabilities[:, k]) for k in present]
            auc = float(np.mean(per_class))
    return {
        "accuracy": float(accuracy_score(targets, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(targets, predicted)),
        "f1_macro": float(f1_score(targets, predicted, labels=labels, average="macro", zero_division=0)),
        "kappa": float(cohen_kappa_score(targets, predicted)) if len(present) > 1 else float("nan"),
        "roc_auc_ovr": auc,
        "confusion_matrix": confusion_matrix(targets, predicted, labels=labels).tolist(),
        "n": int(len(targets)),
    }


def anomaly_auroc(is_anomaly: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC of anomaly scores against normal (0) / anomalous (1); NaN if one side is empty."""
    from sklearn.metrics import roc_auc_score

    if len(set(is_anomaly.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(is_anomaly, scores))
