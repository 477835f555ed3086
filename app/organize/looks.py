"""What a plain 2D image looks like, from its pixels: the last modality clue.

PNG and JPEG files carry no modality tag. When neither the folders nor a label
table name it, a few pixel statistics on a thumbnail still tell the common kinds
apart:

- ``radiograph``: the anatomy fills the frame (little pure black at the border);
- ``ultrasound``: a fan-shaped sector on black, the probe at the top centre; or, when
  the image fills its frame (a linear probe, a crop), speckle: grain at the scale of a
  pixel or two that a radiograph, smooth at 256 pixels, does not have, drawn out
  sideways (a probe resolves depth more finely than width), which MR noise is not;
- ``cross_section``: one object surrounded by black on every side (a CT or MR slice);
- ``photo``: a colour photograph (skin, fundus, endoscopy), not a radiological image.

Images of one folder come from one source, so a folder is judged on a few evenly
spaced images and the majority wins; the cost stays a handful of decodes per folder.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

SAMPLES_PER_FOLDER = 8
THUMBNAIL = 256
BLACK = 10 / 255  # darker than this counts as background
# Speckle: the median fine detail (the image less its Gaussian blur, sigma 1 pixel) over the
# anatomy, relative to its median brightness, with the long side at 256 pixels (never enlarged:
# interpolation smooths speckle away), and how much more that detail correlates between
# neighbours across than between neighbours down (a probe resolves depth more finely than
# width). Measured on real images of ../shared: radiographs (chest PNG/JPEG/DICOM, CR hip,
# mammogram), whole at 200-1024 pixels and as native 200-300 pixel crops, grain 0.002-0.018,
# sideways -0.25 to +0.30; ultrasound (BUSI breast, MONAI neck and femur, echo, TEE) grain
# 0.023-0.14, sideways 0.40-0.91 (a thyroid frame: 0.13, missed); MR crops grain 0.036-0.12,
# sideways -0.53 to +0.12. Both bars must be passed. Images under SPECKLE_MIN_SIDE pixels are
# not judged (a radiograph reduced to 128 measures up to 0.015).
SPECKLE = 0.02
SIDEWAYS = 0.35
SPECKLE_MIN_SIDE = 200


def image_look(path: Path) -> str | None:
    """One image's look, or None when it cannot be decoded."""
    from PIL import Image

    from app.imaging import upright

    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMBNAIL, THUMBNAIL))  # JPEG: decode at reduced size
            image = upright(image).convert("RGB")  # the probe at the top, as a viewer shows it
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            rgb = np.asarray(image, dtype=np.float32) / 255.0
    except Exception:  # unreadable images were reported by the scan already
        return None
    return look_of_pixels(rgb)


def look_of_pixels(rgb: np.ndarray) -> str:
    """The look of an (H, W, 3) float image in [0, 1]."""
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    saturation = (high - low) / np.maximum(high, 1e-6)
    if np.mean((saturation > 0.25) & (high > 0.15)) > 0.3:
        return "photo"
    gray = rgb.mean(axis=2)
    dark = gray < BLACK
    h, w = dark.shape
    band_h, band_w = max(1, h // 8), max(1, w // 8)
    if dark.mean() < 0.2:
        return grain_look(gray) or "radiograph"  # the anatomy fills the frame
    top = dark[:band_h]
    upper = dark[: h // 2]
    sides = min(upper[:, :band_w].mean(), upper[:, -band_w:].mean())
    corners = np.concatenate([top[:, :band_w].ravel(), top[:, -band_w:].ravel()]).mean()
    top_centre = top[:, w // 2 - band_w // 2 : w // 2 + band_w // 2 + 1].mean()
    widening = dark[h // 4].mean() - dark[(3 * h) // 4].mean()
    if corners > 0.9 and sides > 0.8 and top_centre < 0.3 and widening > 0.1:
        return "ultrasound"  # a fan on black, its apex (the probe) at the top centre
    border = np.concatenate([top.ravel(), dark[-band_h:].ravel(),
                             dark[:, :band_w].ravel(), dark[:, -band_w:].ravel()]).mean()
    if top.mean() > 0.8 or border > 0.6:
        return "cross_section"  # air all round one body: a CT or MR slice
    return grain_look(gray) or "radiograph"


def speckle(gray: np.ndarray) -> tuple[float, float] | None:
    """The speckle measure of a grey image in [0, 1] (see SPECKLE) and how much more its grain
    correlates sideways than downwards (SIDEWAYS), or None when the image is too small to
    tell or holds too little anatomy."""
    from PIL import Image
    from scipy import ndimage

    if max(gray.shape) < SPECKLE_MIN_SIDE:
        return None
    if max(gray.shape) > THUMBNAIL:
        scale = THUMBNAIL / max(gray.shape)
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = np.asarray(Image.fromarray(gray.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    signed = gray - ndimage.gaussian_filter(gray, 1.0)  # the fine detail
    anatomy = ndimage.gaussian_filter(gray, 4.0) > 0.12
    if anatomy.mean() < 0.05:
        return None
    grain = float(np.median(np.abs(signed)[anatomy]) / max(float(np.median(gray[anatomy])), 1e-6))

    def neighbours(axis: int) -> float:
        a, b = (signed[:, :-1], signed[:, 1:]) if axis == 1 else (signed[:-1], signed[1:])
        both = (anatomy[:, :-1] & anatomy[:, 1:]) if axis == 1 else (anatomy[:-1] & anatomy[1:])
        if both.sum() < 16 or a[both].std() == 0 or b[both].std() == 0:
            return 0.0
        return float(np.corrcoef(a[both], b[both])[0, 1])

    return grain, neighbours(1) - neighbours(0)


def grain_look(gray: np.ndarray) -> str | None:
    """``ultrasound`` for speckle drawn out sideways; ``cross_section`` for grain twice as
    coarse as any radiograph's but as tall as wide (an MR crop that fills its frame: its
    noise; no modality is better than a wrong X-ray); None: smooth, or too small to tell."""
    measure = speckle(gray)
    if measure is None or measure[0] <= SPECKLE:
        return None
    if measure[1] > SIDEWAYS:
        return "ultrasound"
    return "cross_section" if measure[0] > 2 * SPECKLE else None


def folder_looks(paths: list[Path]) -> dict[str, str]:
    """Folder -> the majority look of up to SAMPLES_PER_FOLDER of its images."""
    by_folder: dict[str, list[Path]] = {}
    for path in paths:
        by_folder.setdefault(str(path.parent), []).append(path)
    looks = {}
    for folder, files in by_folder.items():
        files.sort()
        step = max(1, len(files) // SAMPLES_PER_FOLDER)
        votes = Counter(look for look in map(image_look, files[::step][:SAMPLES_PER_FOLDER]) if look)
        if votes:
            looks[folder] = votes.most_common(1)[0][0]
    return looks
