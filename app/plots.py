"""Plots saved as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def _figure(path: Path, size: tuple[float, float], title: str, columns: int = 1) -> Iterator[Any]:
    """Yield the axes of a new figure; save it to ``path`` and free it on the way out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=size)
    try:
        yield axes
        if columns > 1:
            fig.suptitle(title)
        else:
            axes.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def confusion_matrix_plot(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
    data = np.asarray(matrix)
    with _figure(path, (1.2 * len(classes) + 2, 1.1 * len(classes) + 1.5), title) as ax:
        ax.imshow(data, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set(xlabel="predicted", ylabel="true")
        for (i, j), value in np.ndenumerate(data):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > data.max() / 2 else "black")
    return path


def finding_aucs_plot(per_finding: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Each finding's ROC-AUC as a bar (of a multi-label model), labelled with its value and
    how many images showed it: how far to trust the bar."""
    names = list(per_finding)
    aucs = [per_finding[n]["auc"] for n in names]
    with _figure(path, (6.0, 0.35 * len(names) + 1.6), title) as ax:
        bars = ax.barh(range(len(names)), [0 if a != a else a for a in aucs], color="tab:blue", alpha=0.8)
        ax.bar_label(bars, [f"{a:.3f} (n={per_finding[n]['support']})" if a == a else f"no AUC (n={per_finding[n]['support']})"
                            for n, a in zip(names, aucs)], padding=3, fontsize=8)
        ax.axvline(0.5, color="grey", linestyle="--")
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set(xlabel="ROC-AUC (this finding shown against not shown; dashed: chance)", xlim=(0, 1.25),
               xticks=np.linspace(0, 1, 6))
    return path


def roc_plot(is_anomaly: np.ndarray, scores: np.ndarray, path: Path, title: str) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(is_anomaly, scores)
    with _figure(path, (4.5, 4.5), title) as ax:
        ax.plot(fpr, tpr, label=f"AUROC {roc_auc_score(is_anomaly, scores):.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity")
        ax.legend(loc="lower right")
    return path


def pr_plot(is_anomaly: np.ndarray, scores: np.ndarray, path: Path, title: str) -> Path:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(is_anomaly, scores)
    with _figure(path, (4.5, 4.5), title) as ax:
        ax.plot(recall, precision, label=f"AP {average_precision_score(is_anomaly, scores):.3f}")
        ax.axhline(is_anomaly.mean(), color="grey", linestyle="--", label="chance")
        ax.set(xlabel="recall (sensitivity)", ylabel="precision")
        ax.legend(loc="lower left")
    return path


def score_histogram(is_anomaly: np.ndarray, scores: np.ndarray, threshold: float, path: Path, title: str) -> Path:
    bins = np.histogram_bin_edges(scores, bins=25)
    with _figure(path, (5.5, 3.8), title) as ax:
        ax.hist(scores[is_anomaly == 0], bins=bins, alpha=0.6, label="normal")
        ax.hist(scores[is_anomaly == 1], bins=bins, alpha=0.6, label="anomalous")
        ax.axvline(threshold, color="black", linestyle="--", label="threshold (from validation)")
        ax.set(xlabel="anomaly score", ylabel="images")
        ax.legend()
    return path


def reliability_diagram(probabilities: np.ndarray, targets: np.ndarray, path: Path, title: str, bins: int = 10,
                        counted: str = "images") -> Path:
    """Accuracy against confidence per confidence bin; the diagonal is perfect calibration."""
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
    with _figure(path, (4.5, 4.5), title) as ax:
        bars = ax.bar(centres, accuracy, width=1 / bins, edgecolor="black", alpha=0.7,
                      label=f"accuracy ({counted} in the bin)")
        ax.bar_label(bars, [str(n) for n in counts], label_type="center", fontsize=7)  # how far to trust each bar
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left")
    return path


def kept_epoch(history: list[dict[str, Any]]) -> int | None:
    """The epoch whose weights a run keeps: the first with the best validation ``monitor``."""
    scored = [h for h in history if isinstance(h.get("monitor"), (int, float)) and h["monitor"] == h["monitor"]]
    return max(scored, key=lambda h: (h["monitor"], -h["epoch"]))["epoch"] if scored else None


def learning_curves(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Training loss and validation figures per epoch, with the kept epoch marked on both."""
    epochs = [h["epoch"] for h in history]
    kept = kept_epoch(history)
    with _figure(path, (9, 3.6), title, columns=2) as (left, right):
        left.plot(epochs, [h["train_loss"] for h in history], marker="o")
        left.set(xlabel="epoch", ylabel="training loss")
        for key in ("val_auc", "val_balanced_accuracy", "val_auroc"):
            if key in history[0]:
                right.plot(epochs, [h[key] for h in history], marker="o", label=key.replace("_", " "))
        if kept is not None:
            for ax in (left, right):
                ax.axvline(kept, color="black", linestyle=":", label=f"kept (epoch {kept}, best on validation)")
        right.set(xlabel="epoch", ylim=(0, 1.05))
        right.legend(loc="best")
    return path


def dataset_plot(stats: dict[str, Any], path: Path, title: str) -> Path:
    """Items per class and split, per modality, per region."""
    classes = list(stats["by_class_and_split"])
    splits = list(stats["by_class_and_split"][classes[0]]) if classes else []  # train, val, test
    x = np.arange(len(classes))
    with _figure(path, (13, 3.8), title, columns=3) as (by_class, by_modality, by_region):
        for k, split in enumerate(splits):
            by_class.bar(x + (k - 1) * 0.27, [stats["by_class_and_split"][c][split] for c in classes], 0.27, label=split)
        by_class.set_xticks(x, classes, rotation=30, ha="right")
        by_class.set_title("items per class and split")
        tallest = max((n for c in classes for n in stats["by_class_and_split"][c].values()), default=0)
        by_class.set_ylim(0, max(1, tallest) * 1.25)  # headroom: the legend above the bars, never over one
        by_class.legend(loc="upper center", ncol=len(splits) or 1, fontsize="small", frameon=False)
        for ax, key in ((by_modality, "by_modality"), (by_region, "by_region")):
            ax.bar(list(stats[key]), list(stats[key].values()), color="tab:gray")
            ax.set_title(key.replace("_", " "))
            ax.tick_params(axis="x", rotation=30)
    return path
