"""Dataset rows -> tensors. Images are decoded once and kept in memory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DatasetError
from app.imaging import load_2d, resize, resize_many
from app.organize.npz import npz_images, npz_position_codes
from app.organize.organizer import read_rows
from app.organize.rows import row_place
from app.progress import Progress, report
from app.workspace import Workspace


def split_rows(ws: Workspace, dataset: str, split: str) -> list[dict[str, Any]]:
    """A split's rows. Inside ``loads_kept`` a table read once is given again (each row a
    copy) while the file is unchanged: a search reads each split several times per trial,
    about 0.4 s a read at ChestMNIST's 78,468 training rows."""
    path = ws.organized_path(dataset) / "splits" / f"{split}.csv"
    if _kept is None:
        return read_rows(path)
    stat = path.stat()
    key = ("rows", str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _kept:
        _kept[key] = read_rows(path)
    return [dict(row) for row in _kept[key]]


def clahe(image: np.ndarray) -> np.ndarray:
    """Contrast-limited adaptive histogram equalization (scikit-image), in [0, 1]; a colour
    (y, x, 3) image is equalized in its brightness (scikit-image's HSV value), hues kept."""
    from skimage.exposure import equalize_adapthist

    return equalize_adapthist(np.clip(image, 0.0, 1.0), clip_limit=0.01).astype(np.float32)


def channels_first(image: np.ndarray, channels: int) -> np.ndarray:
    """A (y, x) or (y, x, 3) image as (channels, y, x): grey ones repeated for a colour model."""
    if image.ndim == 2:
        return np.broadcast_to(image, (channels, *image.shape))
    return np.moveaxis(image, -1, 0)


_kept: dict[tuple, Any] | None = None  # loads (and split tables) kept for reuse inside ``loads_kept``


@contextlib.contextmanager
def loads_kept() -> Iterator[None]:
    """Within this block, ``load_images`` keeps what it decoded and gives a copy when the same
    rows are asked for again at the same size (the recipe search trains several models on one
    split: a large set is decoded once per input size, not once per model), and ``split_rows``
    keeps the tables it read. Cleared at the end."""
    global _kept
    outer = _kept
    _kept = {} if outer is None else outer
    try:
        yield
    finally:
        if outer is None:
            _kept = None


def load_images(ws: Workspace, rows: list[dict[str, Any]], size: int, progress: Progress | None = None,
                task: str = "Loading images", *, use_clahe: bool = False, channels: int = 1) -> np.ndarray:
    """Decode and resize every row's image: float32 array (N, channels, size, size) in [0, 1].

    ``channels`` 1 reads every image grey (colour ones as their luminance); 3 reads colour
    images as RGB and repeats grey ones. With ``use_clahe`` each image is equalized (CLAHE)
    at its own resolution, before resizing.
    """
    if _kept is None:
        return _decode(ws, rows, size, progress, task, use_clahe, channels)
    key = (tuple(r.get("item") or f"{r['path']}#{r.get('series_id', '')}" for r in rows), size, use_clahe, channels)
    if key not in _kept:
        _kept[key] = _decode(ws, rows, size, progress, task, use_clahe, channels)
    else:
        report(progress, task, len(rows), len(rows))
    return _kept[key].copy()


def _decode(ws: Workspace, rows: list[dict[str, Any]], size: int, progress: Progress | None, task: str,
            use_clahe: bool, channels: int) -> np.ndarray:
    prepare = clahe if use_clahe else (lambda image: image)
    colour = channels == 3
    out = np.empty((len(rows), channels, size, size), np.float32)
    from_npz: dict[str, list[int]] = {}
    for k, row in enumerate(rows):
        if row["kind"] == "npz":  # read together below, one file opening per file
            from_npz.setdefault(row_place(ws, row), []).append(k)
            continue
        image = resize(prepare(load_2d(ws.resolve(row_place(ws, row)), row["kind"], colour)), size)
        out[k] = channels_first(image, channels)
        report(progress, task, k + 1, len(rows))
    for stored, indices in from_npz.items():
        images = npz_images(ws.resolve(stored), [rows[k] for k in indices], colour=colour)
        if images.ndim != 3 + (images.shape[-1] == 3 and colour):
            raise DatasetError(f"{Path(stored).name} holds 3D volumes: train it with a 3D phase, not a 2D one.")
        if use_clahe:  # equalized each at its own resolution, before resizing
            images = np.stack([clahe(image) for image in images])
        resized = resize_many(images, size)
        if len(indices) == len(rows) and resized.shape[1] == channels:  # every row from this file: no copy
            out = resized  # (indices are then 0, 1, ... in order)
        else:
            out[indices] = resized  # rows from several files; grey images repeated for a colour model
        report(progress, task, len(rows), len(rows))
    return out


def resize_volume(volume: np.ndarray, size: int) -> np.ndarray:
    """A (z, y, x) volume resized (trilinear) to size^3."""
    import torch

    if volume.shape == (size, size, size):
        return volume.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(tensor, size=(size,) * 3, mode="trilinear", align_corners=False)[0, 0].numpy()


def load_volumes(ws: Workspace, rows: list[dict[str, Any]], size: int, progress: Progress | None = None,
                 task: str = "Loading volumes") -> np.ndarray:
    """Every row's volume, oriented, resampled, normalized and resized: (N, 1, size, size, size).

    Raises:
        DatasetError: a row is a 2D image, or its volume cannot be read.
    """
    from app.volumes import load_volume, series_containing

    out = np.empty((len(rows), 1, size, size, size), np.float32)
    from_npz: dict[str, list[int]] = {}
    for k, row in enumerate(rows):
        if row["kind"] == "npz":
            from_npz.setdefault(row_place(ws, row), []).append(k)
            continue
        path = ws.resolve(row_place(ws, row))
        if row["kind"] == "dicom_series":
            folder, series = series_containing(path)
            volume = load_volume(folder, row["modality"], series_id=series, crop=True)
        elif row["kind"] == "volume":
            volume = load_volume(path, row["modality"], crop=True)
        else:
            raise DatasetError(f"Item {row['item']} is a 2D image: a 3D phase needs volumes, DICOM series or 3D .npz files.")
        out[k, 0] = resize_volume(volume.array, size)
        report(progress, task, k + 1, len(rows))
    for stored, indices in from_npz.items():
        images = npz_images(ws.resolve(stored), [rows[k] for k in indices])
        if images.ndim != 4:
            raise DatasetError(f"{Path(stored).name} holds 2D images: train it with a 2D phase, not a 3D one.")
        for k, image in zip(indices, images):
            out[k, 0] = resize_volume(image, size)
        report(progress, task, len(rows), len(rows))
    return out


N_POSITIONS = 13  # app/cubes.py POSITIONS


def position_codes(ws: Workspace, rows: list[dict[str, Any]]) -> np.ndarray:
    """Each row's anatomical position index (1-13; 0: none, and for rows outside cube files)."""
    codes = np.zeros(len(rows), np.int64)
    by_file: dict[str, list[int]] = {}
    for k, row in enumerate(rows):
        if row["kind"] == "npz":
            by_file.setdefault(row_place(ws, row), []).append(k)
    for stored, indices in by_file.items():
        codes[indices] = npz_position_codes(ws.resolve(stored), [rows[k] for k in indices])
    return codes


def with_positions(volumes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(N, 1, s, s, s) cubes + a constant channel of position index / 13 -> (N, 2, s, s, s)."""
    channel = np.broadcast_to((codes / N_POSITIONS).astype(np.float32)[:, None, None, None, None], volumes.shape)
    return np.concatenate([volumes, channel], axis=1)


def phase_images(ws: Workspace, phase: Any, rows: list[dict[str, Any]], progress: Progress | None = None,
                 task: str = "Loading images") -> np.ndarray:
    """``rows`` prepared the way ``phase`` was trained: its image size, CLAHE or not; 2D or 3D
    (with the position channel when the phase uses positions)."""
    config = phase.config
    if phase.spec.input_dims == 3:
        volumes = load_volumes(ws, rows, config.image_size, progress, task)
        return with_positions(volumes, position_codes(ws, rows)) if getattr(config, "positions", False) else volumes
    return load_images(ws, rows, config.image_size, progress, task, use_clahe=getattr(config, "clahe", False),
                       channels=getattr(config, "channels", 1))


class StoredVolumes:
    """The 3D images of rows kept in HDF5 cube stores, read a batch at a time.

    Stands in for the (N, 1, size, size, size) tensor of a split too large for memory:
    ``len``, ``shape`` and indexing (an int, a slice, or an index tensor) give float32
    tensors in [0, 1], resized as ``load_volumes`` resizes; only the asked-for cubes are
    read (app/cube_store.py).
    """

    def __init__(self, ws: Workspace, rows: list[dict[str, Any]], size: int, positions: bool = False) -> None:
        self.size, self.rows = size, rows
        self.paths = [ws.resolve(row_place(ws, r)) for r in rows]
        self.codes = position_codes(ws, rows) if positions else None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), 1 if self.codes is None else 2, self.size, self.size, self.size)

    def __getitem__(self, index: Any) -> Any:
        import torch

        if isinstance(index, int):
            return self[[index]][0]
        picks = list(range(len(self))[index]) if isinstance(index, slice) else np.asarray(index).reshape(-1).tolist()
        out = np.empty((len(picks), 1, self.size, self.size, self.size), np.float32)
        by_file: dict[Path, list[int]] = {}
        for k, pick in enumerate(picks):
            by_file.setdefault(self.paths[pick], []).append(k)
        for path, slots in by_file.items():
            images = npz_images(path, [self.rows[picks[k]] for k in slots])
            if images.ndim != 4:
                raise DatasetError(f"{path} holds 2D images: train it with a 2D phase, not a 3D one.")
            for k, image in zip(slots, images):
                out[k, 0] = resize_volume(image, self.size)
        if self.codes is not None:
            out = with_positions(out, self.codes[picks])
        return torch.from_numpy(out)


def phase_inputs(ws: Workspace, phase: Any, rows: list[dict[str, Any]], progress: Progress | None = None,
                 task: str = "Loading images") -> Any:
    """Like ``phase_images``, as a tensor; rows of HDF5 cube stores stay on disk (StoredVolumes)."""
    import torch

    from app.cube_store import is_h5

    if phase.spec.input_dims == 3 and rows and all(r["kind"] == "npz" and is_h5(row_place(ws, r)) for r in rows):
        return StoredVolumes(ws, rows, phase.config.image_size, getattr(phase.config, "positions", False))
    return torch.from_numpy(phase_images(ws, phase, rows, progress, task))


def load_file(path: Path, size: int, use_clahe: bool = False, channels: int = 1) -> np.ndarray:
    """One file as a model input (1, channels, size, size), for prediction."""
    from app.organize.scan import file_format

    kind = {"dicom": "dicom_series", "volume": "volume"}.get(file_format(path) or "", "image2d")
    image = load_2d(path, kind, colour=channels == 3)
    return np.ascontiguousarray(channels_first(resize(clahe(image) if use_clahe else image, size), channels))[None]
