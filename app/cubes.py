"""48-cubed cubes around small findings, for the 3D phase.

Positive cubes are centred on annotated points (a CSV of world or voxel
coordinates, or the components of a lesion mask); negative cubes are sampled inside
the body, away from every positive. Every cube is exactly SIZE^3: near a border the
volume is padded symmetrically around the centre with its background value. Each
cube carries a one-hot anatomical position (13 positions, as in the seed project:
the RSNA intracranial aneurysm locations; all zeros for negatives and unknowns).

The cubes of one run are saved in MedMNIST layout (``train_images``/``_labels`` ...,
split by patient), so ``organize`` reads them as any MedMNIST 3D file, with the
positions and (pseudonymous) series and patient ids beside them, and a ``metadata.json``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import DatasetError
from app.progress import Progress, report
from app.volumes import Volume, body_box

SIZE = 48
POSITIONS = (
    "Left Infraclinoid Internal Carotid Artery", "Right Infraclinoid Internal Carotid Artery",
    "Left Supraclinoid Internal Carotid Artery", "Right Supraclinoid Internal Carotid Artery",
    "Left Middle Cerebral Artery", "Right Middle Cerebral Artery", "Anterior Communicating Artery",
    "Left Anterior Cerebral Artery", "Right Anterior Cerebral Artery",
    "Left Posterior Communicating Artery", "Right Posterior Communicating Artery",
    "Basilar Tip", "Other Posterior Circulation",
)


def extract_cube(array: np.ndarray, centre: tuple[float, float, float], size: int = SIZE,
                 fill: float | None = None) -> np.ndarray:
    """The size^3 cube of ``array`` (z, y, x) centred on ``centre`` (voxels), padded at borders
    with ``fill`` (default: the array's minimum; normalized volumes pass 0 and skip that scan)."""
    start = [int(round(c)) - size // 2 for c in centre]
    if fill is None:
        fill = float(array.min()) if array.size else 0.0
    cube = np.full((size, size, size), fill, dtype=array.dtype)
    src, dst = [], []
    for axis, s in enumerate(start):
        lo, hi = max(s, 0), min(s + size, array.shape[axis])
        if hi <= lo:
            return cube  # the centre lies outside the volume by more than half a cube
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    cube[tuple(dst)] = array[tuple(src)]
    return cube


@dataclass
class Point:
    zyx: tuple[float, float, float]
    position: str = ""  # one of POSITIONS, or ""


def points_from_csv(path: Path, volume: Volume, series_key: str) -> list[Point]:
    """Points of one series from a CSV with columns series (or SeriesInstanceUID; for files,
    the file name without extension), then x, y, z in mm (world, patient coordinates) or
    i, j, k (voxel indices of the file as stored); optional ``location`` (see POSITIONS)."""
    found = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            if (row.get("series") or row.get("SeriesInstanceUID") or "") != series_key:
                continue
            if all(row.get(k) not in (None, "") for k in ("x", "y", "z")):
                zyx = volume.world_to_voxel((float(row["x"]), float(row["y"]), float(row["z"])))
            elif all(row.get(k) not in (None, "") for k in ("i", "j", "k")):
                zyx = volume.file_voxel_to_voxel((float(row["i"]), float(row["j"]), float(row["k"])))
            else:
                raise DatasetError(f"{path.name}: a row has neither x, y, z (mm) nor i, j, k (voxels).")
            found.append(Point(zyx, row.get("location", "")))
    return found


def points_from_mask(mask: np.ndarray) -> list[Point]:
    """The centroid of every connected component of a lesion mask (z, y, x)."""
    from scipy import ndimage

    labelled, count = ndimage.label(mask > 0)
    return [Point(tuple(float(c) for c in centre)) for centre in
            ndimage.center_of_mass(mask > 0, labelled, range(1, count + 1))]


def negative_centres(array: np.ndarray, positives: list[Point], count: int, rng: np.random.Generator,
                     size: int = SIZE) -> list[tuple[float, float, float]]:
    """``count`` centres inside the body, each at least one cube from every positive."""
    box = body_box(array)
    low = np.array([b.start for b in box])
    high = np.array([b.stop for b in box])
    taken: list[tuple[float, float, float]] = []
    for _ in range(count * 50):
        if len(taken) >= count:
            break
        centre = rng.uniform(low, np.maximum(high, low + 1))
        if array[tuple(np.clip(centre.astype(int), 0, np.array(array.shape) - 1))] <= 0.05:
            continue  # background
        if all(np.max(np.abs(centre - np.array(p.zyx))) >= size for p in positives):
            taken.append(tuple(float(c) for c in centre))
    return taken


def one_hot(position: str) -> np.ndarray:
    out = np.zeros(len(POSITIONS), np.uint8)
    if position in POSITIONS:
        out[POSITIONS.index(position)] = 1
    return out


@dataclass
class CubeSet:
    cubes: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)

    def add_volume(self, volume: Volume, points: list[Point], series: str, patient: str, negatives: int,
                   rng: np.random.Generator) -> None:
        for point in points:
            self._add(extract_cube(volume.array, point.zyx, fill=0.0), 1, one_hot(point.position), series, patient)
        for centre in negative_centres(volume.array, points, negatives, rng):
            self._add(extract_cube(volume.array, centre, fill=0.0), 0, one_hot(""), series, patient)

    def _add(self, cube: np.ndarray, label: int, position: np.ndarray, series: str, patient: str) -> None:
        self.cubes.append((np.clip(cube, 0, 1) * 255).astype(np.uint8))
        self.labels.append(label)
        self.positions.append(position)
        self.series.append(series)
        self.patients.append(patient)


def save_medmnist(cubes: CubeSet, path: Path, modality: str, region: str = "unknown", seed: int = 0,
                  fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> Path:
    """Write ``cubes`` as a MedMNIST-layout .npz split by patient, and ``metadata.json`` beside it."""
    if not cubes.cubes:
        raise DatasetError("No cube to save: no volume gave a positive or a negative cube.")
    patients = sorted(set(cubes.patients))
    order = np.random.default_rng(seed).permutation(len(patients))
    n_train = max(1, round(fractions[0] * len(patients)))
    n_val = round(fractions[1] * len(patients))
    split_of = {}
    for rank, k in enumerate(order):
        split_of[patients[k]] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    arrays: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        index = [k for k, p in enumerate(cubes.patients) if split_of[p] == split]
        arrays[f"{split}_images"] = np.stack([cubes.cubes[k] for k in index]) if index else \
            np.zeros((0, SIZE, SIZE, SIZE), np.uint8)
        arrays[f"{split}_labels"] = np.array([[cubes.labels[k]] for k in index], np.int64).reshape(-1, 1)
        arrays[f"{split}_positions"] = np.array([cubes.positions[k] for k in index], np.uint8).reshape(-1, len(POSITIONS))
        arrays[f"{split}_series"] = np.array([cubes.series[k] for k in index], dtype="U64")
        arrays[f"{split}_patients"] = np.array([cubes.patients[k] for k in index], dtype="U64")
    arrays.update(label_names=np.array(["normal", "finding"]), modality=np.array(modality), region=np.array(region))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    meta = {
        "modality": modality, "cube_size": SIZE, "positions": list(POSITIONS), "classes": ["normal", "finding"],
        "counts": {s: int(len(arrays[f"{s}_labels"])) for s in ("train", "val", "test")},
        "positives": int(sum(cubes.labels)), "negatives": int(len(cubes.labels) - sum(cubes.labels)),
        "patients": len(patients), "split": "by patient, seeded", "seed": seed,
    }
    (path.parent / "metadata.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return path


def extract_from_volume(volume: Volume, points: list[Point], negatives: int, seed: int = 0,
                        progress: Progress | None = None) -> tuple[list[np.ndarray], list[int]]:
    """Cubes (float, not yet quantized) and labels of one volume: its points, then negatives."""
    rng = np.random.default_rng(seed)
    centres = [(p.zyx, 1) for p in points] + [(c, 0) for c in negative_centres(volume.array, points, negatives, rng)]
    cubes = []
    for k, (centre, _) in enumerate(centres):
        cubes.append(extract_cube(volume.array, centre, fill=0.0))
        report(progress, "Cubes", k + 1, len(centres))
    return cubes, [label for _, label in centres]


# -- a cube dataset from a folder of volumes --------------------------------------------------
def find_volumes(root: Path) -> list[tuple[Path, str | None]]:
    """(path, DICOM series id or None) of every volume under ``root``: NIfTI/MHA/NRRD files
    (masks excluded) and every DICOM series of every folder."""
    from app.organize.scan import VOLUMES, is_mask
    from app.volumes import dicom_series_ids

    found: list[tuple[Path, str | None]] = []
    for folder in sorted({root, *(p for p in root.rglob("*") if p.is_dir())}):
        for series in dicom_series_ids(folder):
            found.append((folder, series))
        for file in sorted(folder.iterdir()):
            if file.is_file() and file.name.lower().endswith(VOLUMES) and not is_mask(file):
                found.append((file, None))
    return found


def _mask_for(volume_path: Path) -> Path | None:
    from app.organize.scan import MASK_SUFFIXES, VOLUMES

    name = volume_path.name
    suffix = next((s for s in sorted(VOLUMES, key=len, reverse=True) if name.lower().endswith(s)), "")
    stem = name[: len(name) - len(suffix)]
    for tag in MASK_SUFFIXES:
        candidate = volume_path.with_name(f"{stem}{tag}{suffix}")
        if candidate.exists():
            return candidate
    return None


def _mask_array(mask_path: Path, volume: Volume) -> np.ndarray:
    """The mask on the volume's grid (oriented and resampled alike, nearest neighbour)."""
    import SimpleITK as sitk

    from app.volumes import ORIENTATION, read_image

    grid = volume.geometry
    mask = sitk.DICOMOrient(read_image(mask_path), ORIENTATION)
    mask = sitk.Resample(mask, list(grid.size), sitk.Transform(), sitk.sitkNearestNeighbor, grid.origin,
                         grid.spacing, grid.direction, 0, mask.GetPixelID())
    return sitk.GetArrayFromImage(mask)


def build_cube_dataset(ws: Any, source: Path, name: str, modality: str, *, annotations: Path | None = None,
                       negatives: int = 4, region: str = "unknown", seed: int = 0,
                       progress: Progress | None = None) -> Any:
    """Cubes from every volume under ``source`` -> an organized dataset ``name`` (MedMNIST layout).

    Positives come from ``annotations`` (CSV: series or file stem, x y z in mm or i j k
    voxels, optional location) or from a ``*_mask`` beside each volume. Series and
    patients are pseudonymized with the workspace key; no identifier is written.

    Raises:
        DatasetError: no volume under ``source``, or no cube could be made.
    """
    import pydicom

    from app.organize.organizer import organize
    from app.organize.privacy import pseudonymize
    from app.volumes import load_volume

    source = Path(source).expanduser().resolve()
    volumes = find_volumes(source)
    if not volumes:
        raise DatasetError(f"No volume under {source}: give NIfTI/MHA/NRRD files or DICOM series folders.")
    secret, rng = ws.secret(), np.random.default_rng(seed)
    cubes = CubeSet()
    out = ws.data_dir / "cubes" / name
    for k, (path, series) in enumerate(volumes):
        volume = load_volume(path, modality, series_id=series)
        if series:
            first = pydicom.dcmread(next(p for p in sorted(path.iterdir()) if p.is_file()), stop_before_pixels=True,
                                    specific_tags=["PatientID"])
            key, patient = series, str(first.get("PatientID", "") or series)
        else:
            key = path.name.split(".")[0]
            patient = key
        if annotations:
            points = points_from_csv(annotations, volume, key)
        else:
            mask = _mask_for(path) if not series else None
            points = points_from_mask(_mask_array(mask, volume)) if mask else []
        series_id, patient_id = pseudonymize(secret, key, "S"), pseudonymize(secret, patient)
        cubes.add_volume(volume, points, series_id, patient_id, negatives, rng)
        report(progress, "Extracting cubes", k + 1, len(volumes))
    path = save_medmnist(cubes, out / f"{name}.npz", modality, region, seed)
    return organize(ws, path, name)
