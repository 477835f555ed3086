"""The out-of-distribution gate: is a new image like the ones a model was trained on?

Two checks, fitted when a run is trained and kept beside it (``ood_gate.json`` in the
run folder and in its bundle, covered by the card's hashes and signature):

1. The modality/region combinations the model saw in training. An item whose
   combination it never saw, or whose region is unknown, is outside.
2. An appearance check: each prepared input image (exactly what the model sees) is
   described by 95 numbers (an 8 x 8 thumbnail, the intensity and edge-strength
   histograms, moments, the fraction of black and white pixels, fine-detail energy),
   and its Mahalanobis distance to the training images' descriptors is measured, with
   the covariance estimated by Ledoit-Wolf shrinkage (scikit-learn). The threshold is
   the 99th percentile of the validation images' distances, so about 1% of images like
   the training data are flagged.

The descriptor does not depend on the model, so every phase (classifier, VAE, hybrid)
and every engine (PyTorch, ONNX Runtime) is gated the same way. It answers "was
anything like this in training?", not "is the model right?": see app.verdict for that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GATE_FILE = "ood_gate.json"
VERSION = 1
QUANTILE = 0.99  # of validation distances: the threshold (about 1% of in-distribution images flagged)
OUTSIDE = "outside what this model was trained on"


def describe(images: np.ndarray) -> np.ndarray:
    """Descriptors (N, 95) of prepared images (N, 1, S, S) in [0, 1]; colour ones (N, 3, S, S):
    (N, 99), those of their channels' mean and four of their hue (mean and spread of R-G
    and G-B), so that a grey image shown to a colour model stands out."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    x = images.mean(axis=1)
    n, size = x.shape[0], x.shape[-1]
    cell = max(1, size // 8)
    cropped = x[:, : cell * 8, : cell * 8]
    thumb = cropped.reshape(n, 8, cell, 8, cell).mean(axis=(2, 4)).reshape(n, 64)
    hist = np.stack([np.histogram(img, bins=16, range=(0.0, 1.0))[0] for img in x]) / float(size * size)
    gy, gx = np.gradient(x, axis=(1, 2))
    edges = np.sqrt(gx * gx + gy * gy)
    edge_hist = np.stack([np.histogram(e, bins=8, range=(0.0, 0.5))[0] for e in edges]) / float(size * size)
    flat = x.reshape(n, -1)
    mean, std = flat.mean(1), flat.std(1)
    centred = (flat - mean[:, None]) / np.maximum(std[:, None], 1e-6)
    skew, kurt = (centred ** 3).mean(1), (centred ** 4).mean(1)
    dark, bright = (flat < 0.02).mean(1), (flat > 0.98).mean(1)
    lap = x[:, 1:-1, 1:-1] * 4 - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    detail = np.log1p(np.abs(lap).reshape(n, -1).mean(1) * 100)
    parts = [thumb, hist, edge_hist, np.stack([mean, std, skew, np.log1p(kurt), dark, bright, detail], 1)]
    if images.shape[1] == 3:
        rg = (images[:, 0] - images[:, 1]).reshape(n, -1)
        gb = (images[:, 1] - images[:, 2]).reshape(n, -1)
        parts.append(np.stack([rg.mean(1), gb.mean(1), rg.std(1), gb.std(1)], 1))
    return np.concatenate(parts, 1).astype(np.float64)


@dataclass(frozen=True)
class Gate:
    centre: np.ndarray  # (D,)
    scale: np.ndarray  # (D,) per-feature standard deviation used to standardize
    precision: np.ndarray  # (D, D) inverse shrunk covariance of standardized descriptors
    threshold: float
    seen: list[tuple[str, str]]  # (modality, region) pairs in the training split
    image_size: int
    val_flagged: float  # fraction of validation images over the threshold (about 1 - QUANTILE)

    def distances(self, images: np.ndarray) -> np.ndarray:
        z = (describe(images) - self.centre) / self.scale
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", z, self.precision, z), 0.0))

    def covers(self, modality: str, region: str) -> bool:
        return (modality, region) in {tuple(pair) for pair in self.seen}

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "descriptor": "app.ood.describe v1 (95 numbers)", "quantile": QUANTILE,
                "centre": self.centre.tolist(), "scale": self.scale.tolist(), "precision": self.precision.tolist(),
                "threshold": self.threshold, "seen": [list(p) for p in self.seen], "image_size": self.image_size,
                "val_flagged": self.val_flagged}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Gate":
        if data.get("version") != VERSION:
            raise ValueError(f"gate version {data.get('version')!r}, this app reads {VERSION}")
        centre = np.asarray(data["centre"], dtype=np.float64)
        precision = np.asarray(data["precision"], dtype=np.float64)
        if precision.shape != (len(centre), len(centre)):
            raise ValueError("precision matrix of the wrong shape")
        return cls(centre, np.asarray(data["scale"], dtype=np.float64), precision, float(data["threshold"]),
                   [tuple(p) for p in data["seen"]], int(data["image_size"]), float(data.get("val_flagged", 0.0)))


def fit_gate(train_images: np.ndarray, val_images: np.ndarray, seen: list[tuple[str, str]]) -> Gate:
    """Fit the appearance check on training images and its threshold on validation images."""
    from sklearn.covariance import LedoitWolf

    features = describe(train_images)
    centre = features.mean(0)
    scale = np.maximum(features.std(0), 1e-3)
    z = (features - centre) / scale
    precision = LedoitWolf().fit(z).precision_
    gate = Gate(centre, scale, precision, float("inf"), sorted(set(seen)), int(train_images.shape[-1]), 0.0)
    val = gate.distances(val_images) if len(val_images) else gate.distances(train_images)
    threshold = float(np.quantile(val, QUANTILE))
    return Gate(centre, scale, precision, threshold, gate.seen, gate.image_size, float((val > threshold).mean()))


def save_gate(gate: Gate, folder: Path) -> Path:
    import json
    import os

    from app.atomic import temp_sibling

    path = folder / GATE_FILE
    tmp = temp_sibling(path)
    tmp.write_text(json.dumps(gate.to_json()), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_gate(folder: Path) -> Gate | None:
    """The gate kept in ``folder`` (a run or a bundle), or None when there is none.

    Raises:
        ValueError: a gate file that cannot be read (damaged, or another version).
    """
    import json

    path = folder / GATE_FILE
    if not path.exists():
        return None
    return Gate.from_json(json.loads(path.read_text(encoding="utf-8")))
