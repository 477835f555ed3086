"""What a plain 2D image looks like, from its pixels: the last modality clue.

PNG and JPEG files carry no modality tag. When neither the folders nor a label
table name it, a few pixel statistics on a thumbnail still tell the common kinds
apart:

- ``radiograph``: the anatomy fills the frame (little pure black at the border);
- ``ultrasound``: a fan-shaped sector on black, the probe at the top centre;
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
THUMBNAIL = 128
BLACK = 10 / 255  # darker than this counts as background


def image_look(path: Path) -> str | None:
    """One image's look, or None when it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMBNAIL, THUMBNAIL))  # JPEG: decode at reduced size
            image = image.convert("RGB")
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
    dark = rgb.mean(axis=2) < BLACK
    h, w = dark.shape
    band_h, band_w = max(1, h // 8), max(1, w // 8)
    if dark.mean() < 0.2:
        return "radiograph"  # the anatomy fills the frame
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
    return "radiograph"


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
