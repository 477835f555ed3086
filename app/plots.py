"""Plots saved as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_plot(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
    plt = _pyplot()
    data = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.1 * len(classes) + 1.5))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(data):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > data.max() / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roc_plot(is_anomaly: np.ndarray, scores: np.ndarray, path: Path, title: str) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fpr, tpr, _ = roc_curve(is_anomaly, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUROC {roc_auc_score(is_anomaly, scores):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_histogram(is_anomaly: np.ndarray, scores: np.ndarray, threshold: float, path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    bins = np.histogram_bin_edges(scores, bins=25)
    ax.hist(scores[is_anomaly == 0], bins=bins, alpha=0.6, label="normal")
    ax.hist(scores[is_anomaly == 1], bins=bins, alpha=0.6, label="anomalous")
    ax.axvline(threshold, color="black", linestyle="--", label="threshold (from validation)")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    for key in ("val_auc", "val_balanced_accuracy", "val_auroc"):
        if key in history[0]:
            right.plot(epochs, [h[key] for h in history], marker="o", label=key)
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pr_plot(is_anomaly: np.ndarray, scores: np.ndarray, path: Path, title: str) -> Path:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _pyplot()
    precision, recall, _ = precision_recall_curve(is_anomaly, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(recall, precision, label=f"AP {average_precision_score(is_anomaly, scores):.3f}")
    ax.axhline(is_anomaly.mean(), color="grey", linestyle="--", label="chance")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_diagram(probabilities: np.ndarray, targets: np.ndarray, path: Path, title: str, bins: int = 10) -> Path:
    """Accuracy against confidence per confidence bin; the diagonal is perfect calibration."""
    plt = _pyplot()
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0, 1, bins + 1)
    centres, accuracy, counts = [], [], []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            centres.append((low + high) / 2)
            accuracy.append(correct[inside].mean())
            counts.append(int(inside.sum()))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(centres, accuracy, width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
