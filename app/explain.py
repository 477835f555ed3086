"""Heat maps over test images: Grad-CAM for classifiers, residuals for the VAE.

MONAI's GradCAM does the work; the target layer is the one the phase declares
(PhaseSpec.gradcam_layer), so no phase is special-cased here. Residual maps show
where the VAE's reconstruction differs from the image (its anomaly map); a hybrid
run shows its VAE part's.
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


def _folder(ws: Workspace, run: str, folder: Path | None) -> Path:
    if folder is None:
        folder = ws.run_dir(run) / "evaluation"
        folder.mkdir(exist_ok=True)
    return folder


def gradcam_overlays(ws: Workspace, run: str, split: str = "test", per_class: int = 3,
                     progress: Progress | None = None, folder: Path | None = None) -> Explanation:
    """Save ``gradcam_<split>.png`` in ``folder`` (the run's ``evaluation/`` by default): each
    image, its heat map, its true and predicted class.

    Raises:
        WorkbenchError: the phase declares no Grad-CAM layer (an anomaly scorer).
        DatasetError: the split holds no labeled image.
    """
    import torch
    from monai.visualize import GradCAM

    meta = ws.run_metadata(run)
    phase = load_run_phase(ws, run)
    layer = phase.gradcam_target() if hasattr(phase, "gradcam_target") else None
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
    path = _folder(ws, run, folder) / f"gradcam_{split}.png"
    _grid(images[:, 0].numpy(), np.stack(maps), np.stack(probabilities), chosen, phase.classes, path, run)
    return Explanation(run, path, len(chosen))


def _grid(images: np.ndarray, maps: np.ndarray, probabilities: np.ndarray, rows: list, classes: list[str],
          path: Path, title: str) -> None:
    titles, colours = [], []
    for k in range(len(images)):
        guess = int(probabilities[k].argmax())
        titles.append(f"true {rows[k]['label']}\npred {classes[guess]} {probabilities[k][guess]:.2f}")
        colours.append("green" if classes[guess] == rows[k]["label"] else "red")
    heat_grid(images, maps, titles, path, f"Grad-CAM: {title}", colours)


def heat_grid(images: np.ndarray, maps: np.ndarray, titles: list[str], path: Path, title: str,
              colours: list[str] | None = None) -> Path:
    """Images with their heat maps (in [0, 1]) laid over, six to a line."""
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
        ax.set_title(titles[k], fontsize=8, color=(colours or ["black"] * len(images))[k])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _vae_scorer(phase: object) -> object | None:
    """The reconstruction scorer of a VAE phase, or of a hybrid's VAE part."""
    if hasattr(phase, "scorer"):
        return phase.scorer()
    return getattr(getattr(phase, "model", None), "vae_scorer", None)


def residual_overlays(ws: Workspace, run: str, split: str = "test", per_group: int = 4,
                      progress: Progress | None = None, folder: Path | None = None) -> Explanation:
    """Save ``residuals_<split>.png`` in ``folder`` (the run's ``evaluation/`` by default): normal and anomalous images, their reconstruction and
    where the two differ (the VAE's anomaly map), with each image's score.

    Raises:
        WorkbenchError: the run has no VAE (nothing reconstructs).
        DatasetError: the split holds no labeled image.
    """
    import torch

    meta = ws.run_metadata(run)
    phase = load_run_phase(ws, run)
    scorer = _vae_scorer(phase)
    if scorer is None:
        raise WorkbenchError(f"Run {run!r} ({phase.spec.name}) has no VAE: there is no reconstruction to show.")
    rows = [r for r in split_rows(ws, meta["dataset"], split) if r["labeled"]]
    chosen = [r for r in rows if r["label"] == "normal"][:per_group] + \
             [r for r in rows if r["label"] != "normal"][:per_group]
    if not chosen:
        raise DatasetError(f"The {split} split holds no labeled image to show.")
    images = torch.from_numpy(phase_images(ws, phase, chosen))
    report(progress, "Residual maps", 0, 1)
    with torch.no_grad():
        maps = scorer.maps(images)[:, 0].numpy()
        recon = scorer.vae.decode(scorer.vae.encode(images)[0])[:, 0].numpy()
        scores = scorer(images).numpy()
        local = scorer.patch_maps(images)[:, 0].numpy() if getattr(scorer, "patch", 0) else None
    report(progress, "Residual maps", 1, 1)
    path = _folder(ws, run, folder) / f"residuals_{split}.png"
    _residual_grid(images[:, 0].numpy(), recon, maps, scores, chosen, path, run, local)
    return Explanation(run, path, len(chosen))


def _residual_grid(images: np.ndarray, recon: np.ndarray, maps: np.ndarray, scores: np.ndarray, rows: list,
                   path: Path, title: str, local: np.ndarray | None = None) -> None:
    """Image, reconstruction and residual per column; with ``local`` (the patch view's
    distance maps) a fourth line shows where the image's patches are unlike any normal one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heats = [("residual", maps)] + ([("patch distance", local)] if local is not None else [])
    lines = 2 + len(heats)
    fig, axes = plt.subplots(lines, len(images), figsize=(1.9 * len(images), 2.07 * lines), squeeze=False)
    for k in range(len(images)):
        for line, picture in enumerate((images[k], recon[k])):
            axes[line, k].imshow(picture, cmap="gray", vmin=0, vmax=1)
        axes[0, k].set_title(f"{rows[k]['label']}\nscore {scores[k]:.4g}", fontsize=8)
    for offset, (_, heat) in enumerate(heats):
        top = float(np.percentile(heat, 99.5)) or 1.0  # one colour scale per line: maps compare
        for k in range(len(images)):
            axes[2 + offset, k].imshow(images[k], cmap="gray", vmin=0, vmax=1)
            axes[2 + offset, k].imshow(heat[k], cmap="inferno", alpha=0.55, vmin=0, vmax=top)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for line, name in enumerate(("image", "reconstruction", *(name for name, _ in heats))):
        axes[line, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(f"VAE residuals: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
