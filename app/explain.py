"""Grad-CAM overlays: where the classifier looked, for a few test images per class.

MONAI's GradCAM does the work; the target layer is the one the phase declares
(PhaseSpec.gradcam_layer), so no phase is special-cased here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.data import phase_images, split_rows
from app.errors import DatasetError, WorkbenchError
from app.progress import Progress, report
from app.training import load_run_phase
from app.workspace import Workspace


@dataclass(frozen=True)
class Explanation:
    run: str
    path: Path
    images: int


def gradcam_overlays(ws: Workspace, run: str, split: str = "test", per_class: int = 3,
                     progress: Progress | None = None) -> Explanation:
    """Save ``gradcam_<split>.png``: each image, its heat map, its true and predicted class.

    Raises:
        WorkbenchError: the phase declares no Grad-CAM layer (an anomaly scorer).
        DatasetError: the split holds no labeled image.
    """
    import torch
    from monai.visualize import GradCAM

    meta = ws.run_metadata(run)
    phase = load_run_phase(ws, run)
    layer = phase.spec.gradcam_layer
    if not layer:
        raise WorkbenchError(f"Run {run!r} ({phase.spec.name}) has no Grad-CAM: it scores anomalies, not classes.")
    rows = phase.select_rows([r for r in split_rows(ws, meta["dataset"], split) if r["labeled"]])
    chosen = [r for c in phase.classes for r in [r for r in rows if r["label"] == c][:per_class]]
    if not chosen:
        raise DatasetError(f"The {split} split holds no labeled image to explain.")
    images = torch.from_numpy(phase_images(ws, phase, chosen))
    phase.model.eval()
    cam = GradCAM(nn_module=phase.model, target_layers=layer)
    maps, probabilities = [], []
    for k in range(len(images)):
        maps.append(cam(x=images[k : k + 1]).detach()[0, 0].numpy())
        probabilities.append(phase.predict(images[k : k + 1])[0].numpy())
        report(progress, "Grad-CAM", k + 1, len(images))
    path = ws.run_dir(run) / f"gradcam_{split}.png"
    _grid(images[:, 0].numpy(), np.stack(maps), np.stack(probabilities), chosen, phase.classes, path, run)
    return Explanation(run, path, len(chosen))


def _grid(images: np.ndarray, maps: np.ndarray, probabilities: np.ndarray, rows: list, classes: list[str],
          path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(6, len(images))
    lines = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(2.3 * columns, 2.5 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, ax in enumerate(axes.flat[: len(images)]):
        ax.imshow(images[k], cmap="gray", vmin=0, vmax=1)
        ax.imshow(maps[k], cmap="jet", alpha=0.35, vmin=0, vmax=1)
        guess = int(probabilities[k].argmax())
        colour = "green" if classes[guess] == rows[k]["label"] else "red"
        ax.set_title(f"true {rows[k]['label']}\npred {classes[guess]} {probabilities[k][guess]:.2f}",
                     fontsize=8, color=colour)
    fig.suptitle(f"Grad-CAM: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
