"""Heat maps over test images: Grad-CAM for classifiers, residuals for the VAE.

MONAI's GradCAM does the work; the target layer is the one the phase declares
(PhaseSpec.gradcam_layer), so no phase is special-cased here. Residual maps show
where the VAE's reconstruction differs from the image (its anomaly map); a hybrid
run shows its VAE part's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.data import phase_images, split_rows
from core.errors import DatasetError, WorkbenchError
from core.findings import row_findings
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
    layer = phase.gradcam_target()
    if not layer:
        raise WorkbenchError(f"Run {run!r} ({phase.spec.name}) has no Grad-CAM: it scores anomalies, not classes.")
    rows = phase.select_rows([r for r in split_rows(ws, meta["dataset"], split) if r["labeled"]])
    several = getattr(phase, "multilabel", False)
    chosen = _finding_rows(rows, phase.classes, per_class) if several else \
        [r for c in phase.classes for r in [r for r in rows if r["label"] == c][:per_class]]
    if not chosen:
        raise DatasetError(f"The {split} split holds no labeled image to explain.")
    images = torch.from_numpy(phase_images(ws, phase, chosen))
    phase.model.eval()
    layer = phase.gradcam_target(images.shape[-1])  # at a small input size, a finer stage than the last
    cam = GradCAM(nn_module=phase.model, target_layers=layer)
    maps, probabilities = [], []
    for k in range(len(images)):
        maps.append(cam(x=images[k : k + 1]).detach()[0, 0].numpy())
        probabilities.append(phase.predict(images[k : k + 1])[0].numpy())
        report(progress, "Grad-CAM", k + 1, len(images))
    path = _folder(ws, run, folder) / f"gradcam_{split}.png"
    explained = getattr(phase.model, "explained", "")  # an averaged run: the maps are its first member's
    shown = (f"{run} (an average; the winner's layer {layer.removeprefix(explained)})"
             if explained and layer.startswith(explained) else f"{run} (layer {layer})")
    _grid(for_display(images.numpy()), np.stack(maps), np.stack(probabilities), chosen, phase.classes, path, shown,
          several)
    return Explanation(run, path, len(chosen))


def _finding_rows(rows: list[dict[str, Any]], findings: list[str], per_finding: int) -> list[dict[str, Any]]:
    """For a multi-label run: the first ``per_finding`` images showing each finding, then as
    many showing none; an image shown once."""
    chosen: list[dict[str, Any]] = []
    for finding in [*findings, None]:
        showing = [r for r in rows if (finding in row_findings(r) if finding else not row_findings(r))]
        chosen += [r for r in showing if r not in chosen][:per_finding]
    return chosen


def _grid(images: np.ndarray, maps: np.ndarray, probabilities: np.ndarray, rows: list, classes: list[str],
          path: Path, title: str, several: bool = False) -> None:
    """``several``: findings, each with its own probability; the map is the most likely one's."""
    titles, colours = [], []
    for k in range(len(images)):
        guess = int(probabilities[k].argmax())
        if several:
            shown, sure = row_findings(rows[k]), probabilities[k][guess] >= 0.5
            titles.append(f"true {', '.join(shown) or 'no finding'}\nmost likely {classes[guess]} "
                          f"{probabilities[k][guess]:.2f}")
            colours.append("green" if (classes[guess] in shown if sure else not shown) else "red")
            continue
        titles.append(f"true {rows[k]['label']}\npred {classes[guess]} {probabilities[k][guess]:.2f}")
        colours.append("green" if classes[guess] == rows[k]["label"] else "red")
    heat_grid(images, maps, titles, path, f"Grad-CAM: {title}", colours,
              scale=f"where the {'most likely finding' if several else 'predicted class'} was read (Grad-CAM, 0-1)")


HEAT_FLOOR = 0.2  # heat below this is left out of an overlay, so the anatomy under it stays visible


def for_display(images: np.ndarray) -> np.ndarray:
    """Model inputs (N, C, y, x) as pictures: grey (N, y, x), or colour (N, y, x, 3)."""
    return images[:, 0] if images.shape[1] != 3 else np.moveaxis(images, 1, -1)


def heat_grid(images: np.ndarray, maps: np.ndarray, titles: list[str], path: Path, title: str,
              colours: list[str] | None = None, scale: str = "relative importance (0-1)") -> Path:
    """Images with their heat maps (in [0, 1]) laid over, six to a line, and one colour bar.

    Only heat above HEAT_FLOOR is drawn, more opaque where it is higher: the scan stays
    readable everywhere the map says little.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    columns = min(6, len(images))
    lines = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(2.4 * columns + 1.2, 2.6 * lines + 0.8), squeeze=False,
                             layout="constrained")  # room for a title of several lines above the images
    for ax in axes.flat:
        ax.axis("off")
    for k, ax in enumerate(axes.flat[: len(images)]):
        heat = np.clip(maps[k], 0, 1)
        ax.imshow(images[k], cmap="gray", vmin=0, vmax=1)
        ax.imshow(np.ma.masked_less(heat, HEAT_FLOOR), cmap="inferno", vmin=0, vmax=1,
                  alpha=np.clip(0.25 + 0.5 * heat, 0, 0.75))
        ax.set_title(titles[k], fontsize=8, color=(colours or ["black"] * len(images))[k])
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), "inferno"), ax=axes.ravel().tolist(), shrink=0.8,
                       orientation="horizontal", fraction=0.06 / lines, pad=0.04)
    bar.set_label(_wrapped(f"{scale}; below {HEAT_FLOOR} not drawn", 9 * columns + 20), fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(_wrapped(title, 6 * columns + 10), fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _wrapped(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, max(width, 30), break_on_hyphens=False)) or text


def vae_scorer(phase: object) -> object | None:
    """The reconstruction scorer of a VAE phase, or of a hybrid's VAE part."""
    return phase.scorer()


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
    scorer = vae_scorer(phase)
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
        local = scorer.patch_maps(images)[:, 0].numpy() if getattr(scorer, "patch", 0) else None
        # The run's own score and threshold: a hybrid's, not its VAE part's (another scale).
        scores = np.asarray(phase.predict(images), dtype=float).reshape(len(images))
    threshold = phase.threshold
    report(progress, "Residual maps", 1, 1)
    path = _folder(ws, run, folder) / f"residuals_{split}.png"
    cut = f"anomaly threshold {threshold:.3g}" if threshold is not None else "no threshold fitted"
    title = (f"Hybrid {run}: residuals of its VAE part; scores are the hybrid's ({cut})"
             if phase.spec.name == "hybrid" else f"VAE residuals: {run} ({cut})")
    _residual_grid(images[:, 0].numpy(), recon, maps, scores, chosen, path, title, local, threshold)
    return Explanation(run, path, len(chosen))


def _residual_grid(images: np.ndarray, recon: np.ndarray, maps: np.ndarray, scores: np.ndarray, rows: list,
                   path: Path, title: str, local: np.ndarray | None = None, threshold: float | None = None) -> None:
    """Image, reconstruction and residual per column; with ``local`` (the patch view's
    distance maps) a fourth line shows where the image's patches are unlike any normal one.
    Each column says its score and, with ``threshold``, whether the run flags it (green: rightly,
    red: wrongly); each heat line has its colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heats = [("residual", maps, "residual (|image - reconstruction|)")]
    if local is not None:
        heats.append(("patch distance", local, "patch distance to normal patches"))
    lines = 2 + len(heats)
    fig, axes = plt.subplots(lines, len(images), figsize=(1.9 * len(images) + 1.2, 2.07 * lines + 0.6),
                             squeeze=False, layout="constrained")
    for k in range(len(images)):
        for line, picture in enumerate((images[k], recon[k])):
            axes[line, k].imshow(picture, cmap="gray", vmin=0, vmax=1)
        label, colour = f"{rows[k]['label']}\nscore {scores[k]:.3g}", "black"
        if threshold is not None:
            flagged, anomalous = scores[k] >= threshold, rows[k]["label"] != "normal"
            label += "\nflagged" if flagged else "\nnot flagged"
            colour = "green" if flagged == anomalous else "red"
        axes[0, k].set_title(label, fontsize=8, color=colour)
    for offset, (_, heat, scale) in enumerate(heats):
        top = float(np.percentile(heat, 99.5)) or 1.0  # one colour scale per line: maps compare
        for k in range(len(images)):
            axes[2 + offset, k].imshow(images[k], cmap="gray", vmin=0, vmax=1)
            shown = axes[2 + offset, k].imshow(np.ma.masked_less(heat[k], HEAT_FLOOR * top), cmap="inferno",
                                               alpha=0.6, vmin=0, vmax=top)
        bar = fig.colorbar(shown, ax=axes[2 + offset, :].tolist(), shrink=0.85, pad=0.01)
        bar.set_label(scale, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for line, name in enumerate(("image", "reconstruction", *(name for name, _, _ in heats))):
        axes[line, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(_wrapped(title, 12 * len(images)), fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
