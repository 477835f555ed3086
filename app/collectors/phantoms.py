"""Synthetic anatomy with planted anomalies, for the built-in demo dataset.

Pure numpy: each function takes a seeded ``rng`` and returns an array. Shapes are
crude but keep what a detector must learn: a normal anatomy that varies from
patient to patient, and a finding of a known type that varies in place and size.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

SIZE = 128


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return yy.astype(np.float32), xx.astype(np.float32)


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = _grid(shape)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _blob(shape: tuple[int, int], cy: float, cx: float, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A soft, irregular blob in [0, 1]."""
    yy, xx = _grid(shape)
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1.0 + 0.25 * np.sin(3 * angle + rng.uniform(0, 6.3)) + 0.1 * np.sin(5 * angle)
    dist = np.hypot(yy - cy, xx - cx) / (radius * wobble)
    return np.clip(1.5 - dist, 0.0, 1.0) ** 1.5


def chest_xray(rng: np.random.Generator, consolidation: bool) -> np.ndarray:
    """A frontal chest radiograph in [0, 1]; ``consolidation`` plants an opacity."""
    s = (SIZE, SIZE)
    jitter = rng.uniform(-4, 4, size=4)
    img = np.full(s, 0.06, np.float32)
    img[_ellipse(s, 70 + jitter[0], 64 + jitter[1], 60, 54)] = 0.45
    lungs = _ellipse(s, 62 + jitter[0], 40 + jitter[2], 36, 17) | _ellipse(
        s, 62 + jitter[0], 88 + jitter[3], 36, 17
    )
    img[lungs] = 0.15
    yy, xx = _grid(s)
    for k in range(7):  # ribs: thin arcs across each lung
        rib = np.abs(yy - (34 + 9 * k) - 0.004 * (xx - 64) ** 2) < 1.3
        img[rib & lungs] += 0.17
    img[_ellipse(s, 84 + jitter[0], 70, 18, 20)] = 0.55  # heart
    img[np.abs(xx - 64) < 5] += 0.15  # spine
    if consolidation:
        side = 40 + jitter[2] if rng.random() < 0.5 else 88 + jitter[3]
        cy = rng.uniform(55, 85)
        patch = _blob(s, cy, side + rng.uniform(-5, 5), rng.uniform(8, 14), rng) * lungs
        img += 0.35 * gaussian_filter(patch, 1.5)
    img += 0.04 * gaussian_filter(rng.normal(size=s), 1.0) + 0.015 * rng.normal(size=s)
    return np.clip(gaussian_filter(img, 0.7), 0, 1)


def bone_xray(rng: np.random.Generator, fracture: bool) -> np.ndarray:
    """A long-bone radiograph in [0, 1]; ``fracture`` plants a displaced break."""
    s = (SIZE, SIZE)
    yy, xx = _grid(s)
    tilt = rng.uniform(-0.15, 0.15)
    centre = 64 + rng.uniform(-8, 8) + tilt * (yy - 64)
    width = rng.uniform(11, 15)
    img = np.full(s, 0.08, np.float32)
    img[np.abs(xx - centre) < width + 16] = 0.32  # soft tissue
    shaft = np.abs(xx - centre) < width
    img[shaft] = 0.62
    img[shaft & (np.abs(xx - centre) > width - 3.5)] = 0.9  # cortex
    if fracture:
        y0 = rng.uniform(40, 88)
        slope = rng.uniform(-0.6, 0.6)
        line = np.abs(yy - (y0 + slope * (xx - centre))) < rng.uniform(1.2, 2.2)
        img[line & shaft] = 0.25
        below = (yy > y0 + slope * (xx - centre)) & (np.abs(xx - centre) < width + 16)
        img[below] = np.roll(img, int(rng.choice([-3, -2, 2, 3])), axis=1)[below]
    img += 0.03 * gaussian_filter(rng.normal(size=s), 1.0) + 0.015 * rng.normal(size=s)
    return np.clip(gaussian_filter(img, 0.6), 0, 1)


def head_volume(
    rng: np.random.Generator, slices: int, finding: str | None, *, ct: bool
) -> np.ndarray:
    """An axial head volume (slices, 128, 128).

    CT volumes are in Hounsfield units; MR volumes in arbitrary T1-like units.
    ``finding`` is None, "hemorrhage" (hyperdense CT blob) or "tumor" (enhancing
    MR mass with surrounding edema); it spans the central slices.
    """
    s = (SIZE, SIZE)
    ry, rx = rng.uniform(50, 56), rng.uniform(40, 46)
    cy, cx = 64 + rng.uniform(-3, 3), 64 + rng.uniform(-3, 3)
    air, scalp, skull, brain, csf = (-1000, 40, 1100, 35, 5) if ct else (0, 550, 80, 620, 180)
    where = None
    if finding:
        angle = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.2, 0.55)
        where = (cy + dist * ry * np.sin(angle), cx + dist * rx * np.cos(angle), rng.uniform(7, 12))
    volume = np.empty((slices, *s), np.float32)
    for z in range(slices):
        shrink = 1.0 - 0.5 * (abs(z - slices / 2) / slices) ** 2
        img = np.full(s, air, np.float32)
        img[_ellipse(s, cy, cx, ry * shrink + 4, rx * shrink + 4)] = scalp
        img[_ellipse(s, cy, cx, ry * shrink, rx * shrink)] = skull
        inner = _ellipse(s, cy, cx, ry * shrink - 5, rx * shrink - 5)
        img[inner] = brain
        for side in (-1, 1):  # lateral ventricles
            img[_ellipse(s, cy - 4, cx + side * 7, 11 * shrink, 4)] = csf
        if where is not None and abs(z - slices / 2) <= slices / 4:
            fade = 1.0 - abs(z - slices / 2) / (slices / 4 + 1)
            blob = _blob(s, where[0], where[1], where[2] * (0.6 + 0.4 * fade), rng) * inner
            if finding == "hemorrhage":
                img += (75 - brain) * blob
            else:
                edema = _blob(s, where[0], where[1], where[2] * 1.8, rng) * inner
                img += (-250) * np.clip(edema - blob, 0, 1) + (950 - brain) * blob
        noise = (6.0 if ct else 25.0) * rng.normal(size=s)
        volume[z] = gaussian_filter(img, 0.8) + noise
    return volume
