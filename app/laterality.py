"""Left and right that tell classes apart: where the training split says so, no flips.

A left-right flip is the usual augmentation of medical images, and the search's mirror
view (app/recipes.py) averages each image with its mirror. Both assume that a mirrored
image keeps its label. Where classes are each other's mirror (left and right kidney,
femur or lung in MedMNIST's organ sets; "left effusion" and "right effusion"), a flip
turns one class into the other, and a model trained on flipped images cannot tell them
apart any more.

The check reads the training split only. For each pair of classes it compares their mean
images: the first mirrored against the second, and the two as they are. Classes that
mirror each other come close when one is flipped (ratio near 0). Classes that differ in
something symmetric, or in something on one side only, stay as far apart or move further
(BreastMNIST 0.99, PneumoniaMNIST 1.17, AdrenalMNIST3D 3.3). A mean of few images is
noisy: both squared distances have the noise's expected share taken off (the summed
per-pixel variance over the count, for each class), and a pair whose means differ by no
more than that noise decides nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PAIR_RATIO = 0.5  # mirrored distance / plain distance below this: the two classes mirror each other
MIN_SIGNAL = 2.0  # the classes' squared distance must be this many times the noise's to say anything
MIN_PER_CLASS = 5  # fewer images give no usable variance
MAX_PER_CLASS = 1000  # a random sample of larger classes (seeded): the means settle long before
CHUNK = 256
FLIPS = ("auto", "on", "off")


def mirror_pairs(images: Any, labels: Any, classes: Sequence[str], seed: int = 0) -> list[dict[str, Any]]:
    """The pairs of classes whose training images mirror each other, most alike first.

    ``images``: (N, C, ...) a tensor or anything indexed by a list of rows that gives one
    (app/data.py StoredVolumes); the last axis is the one a flip mirrors. Volumes look at
    their first channel (a second one holds a cube's position code). ``labels``: each
    image's class index (negative: unlabeled). Each pair: {"classes": [a, b], "ratio"}.
    """
    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).reshape(-1)
    if labels.dtype.kind not in "iu" or len(labels) != len(images):
        return []  # soft or missing targets: nothing to compare
    rng = np.random.default_rng(seed)
    volumes = len(images.shape) == 5
    means, noise = {}, {}
    for k in range(len(classes)):
        rows = np.flatnonzero(labels == k)
        if len(rows) < MIN_PER_CLASS:
            continue
        if len(rows) > MAX_PER_CLASS:
            rows = np.sort(rng.choice(rows, MAX_PER_CLASS, replace=False))
        total = squares = None
        for start in range(0, len(rows), CHUNK):
            batch = images[rows[start : start + CHUNK].tolist()]
            batch = np.asarray(batch.cpu() if hasattr(batch, "cpu") else batch, dtype=np.float64)
            batch = batch[:, :1] if volumes else batch
            total = batch.sum(0) if total is None else total + batch.sum(0)
            squares = (batch**2).sum(0) if squares is None else squares + (batch**2).sum(0)
        n = len(rows)
        means[k] = total / n
        variance = (squares - n * means[k] ** 2) / (n - 1)
        noise[k] = float(np.clip(variance, 0, None).sum()) / n
    pairs = []
    kept = sorted(means)
    for i, a in enumerate(kept):
        for b in kept[i + 1 :]:
            expected = noise[a] + noise[b]
            plain = float(((means[a] - means[b]) ** 2).sum()) - expected
            mirrored = float(((np.flip(means[a], -1) - means[b]) ** 2).sum()) - expected
            if plain <= MIN_SIGNAL * expected:
                continue
            ratio = float(np.sqrt(max(mirrored, 0.0) / plain))
            if ratio < PAIR_RATIO:
                pairs.append({"classes": [classes[a], classes[b]], "ratio": round(ratio, 3)})
    return sorted(pairs, key=lambda p: p["ratio"])


def flips_record(setting: str, images: Any, labels: Any, classes: Sequence[str]) -> dict[str, Any]:
    """Whether training flips images left-right, and why: {"setting", "used", "mirror_pairs"}.

    ``setting``: "on" and "off" are the user's; "auto" flips unless ``mirror_pairs`` finds
    classes that mirror each other."""
    if setting not in FLIPS:
        raise ValueError(f"flips must be one of {', '.join(FLIPS)}, not {setting!r}")
    pairs = mirror_pairs(images, labels, classes) if setting == "auto" and len(classes) > 1 else []
    return {"setting": setting, "used": setting == "on" or (setting == "auto" and not pairs), "mirror_pairs": pairs}


def flips_sentence(record: dict[str, Any] | None) -> str:
    """One sentence on a run's flips, for its report, card and page ("" when it flipped as usual)."""
    if not record or record.get("used", True):
        return ""
    pairs = record.get("mirror_pairs") or []
    if pairs:
        named = "; ".join(f"{p['classes'][0]} / {p['classes'][1]}" for p in pairs)
        return (f"Trained without left-right flips: left and right tell its classes apart (mirrored, the training "
                f"images of one class look like another's: {named}). A mirrored image is not the same case here.")
    return "Trained without left-right flips (set for this run)."
