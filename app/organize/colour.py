"""Is a dataset colour? Dermoscopy, fundus photographs, slide microscopy and endoscopy carry
their findings in hue; chest radiographs saved as RGB JPEGs do not. A dataset is colour
(three input channels) when most of a spread sample of its 2D images really differ between
their red, green and blue channels; otherwise models read it grey, as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from app.organize.rows import row_place
from app.workspace import Workspace

log = logging.getLogger(__name__)

SAMPLE = 24  # 2D items looked at, spread over the dataset
HUE = 8.0  # mean |R-G| + |G-B| (of 255) above which an image is colour: JPEG noise of grey images stays near 1
THUMB = 64  # images are judged on a thumbnail this wide


def colourfulness(rgb: np.ndarray) -> float:
    """Mean |R-G| + |G-B| of an (y, x, 3) image in 0-255."""
    rgb = rgb.astype(np.float32)
    return float(np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean())


def _npz_is_colour(path: Path) -> bool:
    from app.cube_store import Store

    with Store(path) as data:
        shape = data.shape("train_images")
    return len(shape) == 4 and shape[-1] == 3


def _file_colourfulness(path: Path, kind: str) -> float:
    if kind == "image2d":
        from PIL import Image

        with Image.open(path) as img:
            if img.mode not in ("RGB", "RGBA", "P", "YCbCr", "CMYK", "LAB", "HSV"):
                return 0.0
            img.draft("RGB", (THUMB, THUMB))  # JPEG: decode small
            return colourfulness(np.asarray(img.convert("RGB").resize((THUMB, THUMB))))
    if kind == "dicom_series":
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if int(header.get("SamplesPerPixel", 1) or 1) < 3:
            return 0.0
        from app.imaging import read_dicom_2d

        return colourfulness(read_dicom_2d(path, colour=True) * 255.0)
    return 0.0  # volumes: grey


def dataset_channels(ws: Workspace, rows: list[dict[str, Any]]) -> int:
    """3 when most of a sample of the 2D images are colour, else 1."""
    files = [r for r in rows if r.get("kind") == "npz"]
    if files:
        places = {row_place(ws, r) for r in files}
        try:
            coloured = sum(_npz_is_colour(ws.resolve(p)) for p in places)
        except (OSError, KeyError, ValueError):
            return 1
        return 3 if coloured * 2 > len(places) else 1
    flat = [r for r in rows if r.get("kind") in ("image2d", "dicom_series")]
    if not flat:
        return 1
    picked = flat[:: max(1, len(flat) // SAMPLE)][:SAMPLE]
    votes = []
    for row in picked:
        try:
            votes.append(_file_colourfulness(ws.resolve(row_place(ws, row)), row["kind"]) > HUE)
        except Exception as err:  # an unreadable file says nothing about colour; training reports it
            log.debug("colour check skipped one item: %s", type(err).__name__)
    return 3 if votes and sum(votes) * 2 > len(votes) else 1
