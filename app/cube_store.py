"""MedMNIST-layout files of images: ``.npz`` (read whole) or ``.h5`` (chunked, read on demand).

Both hold, per split (train, val, test), ``<split>_images`` (uint8, N x ...) and
``<split>_labels``, and for cube datasets ``<split>_positions``, ``<split>_series`` and
``<split>_patients``, plus ``label_names``, ``modality`` and ``region``. The HDF5 form
keeps one image per compressed chunk, so a dataset larger than memory is written
cube by cube and read a batch at a time (h5py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DatasetError

STORE_SUFFIXES = (".npz", ".h5", ".hdf5")
SPLITS = ("train", "val", "test")


def is_h5(path: Path | str) -> bool:
    return str(path).lower().endswith((".h5", ".hdf5"))


class Store:
    """A MedMNIST-layout file opened for reading (use as a context manager)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            if is_h5(path):
                import h5py

                self._data: Any = h5py.File(path, "r")
            else:
                self._data = np.load(path)
        except (OSError, ValueError) as err:
            raise DatasetError(f"Cannot read {self.path.name}: {err}") from err

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: Any) -> None:
        self._data.close()

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._data[key].shape)

    def array(self, key: str) -> np.ndarray:
        """A whole entry; text comes back as str."""
        value = np.asarray(self._data[key][()])
        return value.astype(str) if value.dtype.kind == "S" else value

    def images(self, split: str, indices: Any) -> np.ndarray:
        """``<split>_images`` at ``indices`` (in that order), uint8; an HDF5 file reads only those."""
        indices = np.asarray(indices, dtype=np.int64)
        data = self._data[f"{split}_images"]
        if not is_h5(self.path):
            return data[indices]
        wanted, where = np.unique(indices, return_inverse=True)
        return data[wanted][where] if len(wanted) else np.zeros((0, *data.shape[1:]), data.dtype)


class StoreWriter:
    """Writes a MedMNIST-layout file one image at a time; the file appears whole on ``close``.

    ``.h5``: every split grows on disk as images come (bounded memory). ``.npz``: the
    images are kept until ``close`` (np.savez_compressed writes them at once).
    """

    def __init__(self, path: Path, image_shape: tuple[int, ...], n_positions: int) -> None:
        self.path, self.image_shape, self.n_positions = Path(path), tuple(image_shape), n_positions
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self.counts = dict.fromkeys(SPLITS, 0)
        self._meta: dict[str, dict[str, list]] = {s: {"labels": [], "positions": [], "series": [], "patients": []}
                                                   for s in SPLITS}
        self._images: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        self._h5: Any = None
        if is_h5(self.path):
            import h5py

            self._h5 = h5py.File(self.tmp, "w")
            for split in SPLITS:
                self._h5.create_dataset(f"{split}_images", shape=(0, *self.image_shape), dtype="uint8",
                                        maxshape=(None, *self.image_shape), chunks=(1, *self.image_shape),
                                        compression="gzip", compression_opts=1)

    def add(self, split: str, image: np.ndarray, label: int, position: np.ndarray, series: str, patient: str) -> None:
        if self._h5 is not None:
            images = self._h5[f"{split}_images"]
            images.resize(self.counts[split] + 1, axis=0)
            images[self.counts[split]] = image
        else:
            self._images[split].append(image)
        meta = self._meta[split]
        meta["labels"].append(int(label))
        meta["positions"].append(np.asarray(position, np.uint8))
        meta["series"].append(series)
        meta["patients"].append(patient)
        self.counts[split] += 1

    def close(self, label_names: list[str], modality: str, region: str) -> Path:
        arrays: dict[str, Any] = {}
        for split in SPLITS:
            meta = self._meta[split]
            arrays[f"{split}_labels"] = np.array(meta["labels"], np.int64).reshape(-1, 1)
            arrays[f"{split}_positions"] = np.array(meta["positions"], np.uint8).reshape(-1, self.n_positions)
            arrays[f"{split}_series"] = np.array(meta["series"], dtype="S64")
            arrays[f"{split}_patients"] = np.array(meta["patients"], dtype="S64")
            if self._h5 is None:
                images = self._images[split]
                arrays[f"{split}_images"] = np.stack(images) if images else np.zeros((0, *self.image_shape), np.uint8)
        arrays.update(label_names=np.array(label_names, dtype="S64"), modality=np.array(modality.encode()),
                      region=np.array(region.encode()))
        if self._h5 is not None:
            for key, value in arrays.items():
                self._h5.create_dataset(key, data=value)
            self._h5.close()
        else:
            with open(self.tmp, "wb") as handle:  # a handle: savez would add .npz to the temporary name
                np.savez_compressed(handle, **arrays)
        self.tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file (an interrupted extraction leaves nothing half written)."""
        if self._h5 is not None:
            self._h5.close()
        self.tmp.unlink(missing_ok=True)
