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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DatasetError
from app.label_maps import LabelMap, label_map
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
    label: int = 1  # 1: a finding here; 0: a normal place at a known position (a negative with a position)


def points_from_csv(path: Path, volume: Volume, series_key: str) -> list[Point]:
    """Points of one series from a CSV with columns series (or SeriesInstanceUID; for files,
    the file name without extension), then x, y, z in mm (world, patient coordinates) or
    i, j, k (voxel indices of the file as stored); optional ``location`` (see POSITIONS) and
    ``label`` (1, the default: a finding; 0: a normal place at that location)."""
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
            label = (row.get("label") or "1").strip()
            if label not in ("0", "1"):
                raise DatasetError(f"{path.name}: label must be 1 (a finding) or 0 (normal), not {label!r}.")
            found.append(Point(zyx, row.get("location", "") or "", int(label)))
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


def quantized(cube: np.ndarray) -> np.ndarray:
    """A normalized cube ([0, 1]) as stored: uint8."""
    return (np.clip(cube, 0, 1) * 255).astype(np.uint8)


def volume_cubes(volume: Volume, points: list[Point], negatives: int,
                 rng: np.random.Generator) -> list[tuple[np.ndarray, int, np.ndarray]]:
    """(cube, label, one-hot position) for every point, then ``negatives`` sampled cubes
    a cube away from every finding."""
    findings = [p for p in points if p.label == 1]
    out = [(quantized(extract_cube(volume.array, p.zyx, fill=0.0)), p.label, one_hot(p.position)) for p in points]
    for centre in negative_centres(volume.array, findings, negatives, rng):
        out.append((quantized(extract_cube(volume.array, centre, fill=0.0)), 0, one_hot("")))
    return out


def patient_splits(patients: list[str], seed: int = 0,
                   fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[str, str]:
    """Each patient's split (train / val / test), seeded, by patient."""
    patients = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(patients))
    n_train = max(1, round(fractions[0] * len(patients)))
    n_val = round(fractions[1] * len(patients))
    return {patients[k]: "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
            for rank, k in enumerate(order)}


@dataclass
class CubeSet:
    """Cubes gathered in memory (small sets; build_cube_dataset streams to the file instead)."""

    cubes: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)

    def add_volume(self, volume: Volume, points: list[Point], series: str, patient: str, negatives: int,
                   rng: np.random.Generator) -> None:
        for cube, label, position in volume_cubes(volume, points, negatives, rng):
            self.cubes.append(cube)
            self.labels.append(label)
            self.positions.append(position)
            self.series.append(series)
            self.patients.append(patient)


def _metadata(path: Path, modality: str, counts: dict[str, int], positives: int, patients: int, seed: int,
              store: str) -> None:
    meta = {
        "modality": modality, "cube_size": SIZE, "positions": list(POSITIONS), "classes": ["normal", "finding"],
        "counts": counts, "positives": positives, "negatives": sum(counts.values()) - positives,
        "patients": patients, "split": "by patient, seeded", "seed": seed, "store": store, "file": path.name,
    }
    (path.parent / "metadata.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def save_medmnist(cubes: CubeSet, path: Path, modality: str, region: str = "unknown", seed: int = 0,
                  fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> Path:
    """Write ``cubes`` in MedMNIST layout split by patient (``.npz``, or ``.h5`` for a chunked
    store read on demand), and ``metadata.json`` beside it."""
    from app.cube_store import StoreWriter, is_h5

    if not cubes.cubes:
        raise DatasetError("No cube to save: no volume gave a positive or a negative cube.")
    split_of = patient_splits(cubes.patients, seed, fractions)
    writer = StoreWriter(path, (SIZE,) * 3, len(POSITIONS))
    try:
        for k, cube in enumerate(cubes.cubes):
            writer.add(split_of[cubes.patients[k]], cube, cubes.labels[k], cubes.positions[k], cubes.series[k],
                       cubes.patients[k])
        writer.close(["normal", "finding"], modality, region)
    except BaseException:
        writer.abort()
        raise
    _metadata(path, modality, writer.counts, int(sum(cubes.labels)), len(set(cubes.patients)), seed,
              "hdf5" if is_h5(path) else "npz")
    return path


def extract_from_volume(volume: Volume, points: list[Point], negatives: int, seed: int = 0,
                        progress: Progress | None = None) -> tuple[list[np.ndarray], list[int]]:
    """Cubes (float, not yet quantized) and labels of one volume: its points, then negatives."""
    rng = np.random.default_rng(seed)
    findings = [p for p in points if p.label == 1]
    centres = [(p.zyx, p.label) for p in points] + [(c, 0) for c in negative_centres(volume.array, findings, negatives, rng)]
    cubes = []
    for k, (centre, _) in enumerate(centres):
        cubes.append(extract_cube(volume.array, centre, fill=0.0))
        report(progress, "Cubes", k + 1, len(centres))
    return cubes, [label for _, label in centres]


# -- a cube dataset from a folder of volumes --------------------------------------------------
def find_volumes(root: Path) -> list[tuple[Path, str | None]]:
    """(path, DICOM series id or None) of every volume under ``root``: NIfTI/MHA/NRRD files
    (masks excluded) and every DICOM series of every folder."""
    from app.imaging import simpleitk

    sitk = simpleitk()

    from app.dicom_marks import is_image_series
    from app.organize.scan import VOLUMES, is_mask
    from app.volumes import dicom_series_ids

    found: list[tuple[Path, str | None]] = []
    for folder in sorted({root, *(p for p in root.rglob("*") if p.is_dir())}):
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue  # hidden folders, as the organizer skips them
        for series in dicom_series_ids(folder):
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series)
            if files and is_image_series(Path(files[0])):  # a SEG or RTSTRUCT is a series of its own
                found.append((folder, series))
        for file in sorted(folder.iterdir()):
            if file.name.startswith("."):
                continue  # "._x.nii.gz": macOS's resource forks, shipped in the Decathlon's archives
            if file.is_file() and file.name.lower().endswith(VOLUMES) and not is_mask(file):
                found.append((file, None))
    return found


def _mask_for(volume_path: Path, root: Path) -> LabelMap | None:
    """The lesion mask named after the volume (``x_seg.nii.gz`` beside ``x.nii.gz``: every value
    above 0 a lesion), else a public layout's label map and its lesion values (app/label_maps.py)."""
    from app.organize.scan import MASK_SUFFIXES, VOLUMES

    name = volume_path.name
    suffix = next((s for s in sorted(VOLUMES, key=len, reverse=True) if name.lower().endswith(s)), "")
    stem = name[: len(name) - len(suffix)]
    for tag in MASK_SUFFIXES:
        candidate = volume_path.with_name(f"{stem}{tag}{suffix}")
        if candidate.exists():
            return LabelMap(candidate)
    return label_map(volume_path, root)


def _lesions(mask: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    """The lesion voxels of a label map: its ``values``, or every value above 0 when none are given."""
    return np.isin(mask, values) if values else mask > 0


def _mask_array(mask_path: Path, volume: Volume) -> np.ndarray:
    """The mask on the volume's grid (oriented and resampled alike, nearest neighbour)."""
    from app.imaging import simpleitk

    sitk = simpleitk()

    from app.volumes import ORIENTATION, read_image

    grid = volume.geometry
    mask = sitk.DICOMOrient(read_image(mask_path), ORIENTATION)
    mask = sitk.Resample(mask, list(grid.size), sitk.Transform(), sitk.sitkNearestNeighbor, grid.origin,
                         grid.spacing, grid.direction, 0, mask.GetPixelID())
    return sitk.GetArrayFromImage(mask)


def _identity(path: Path, series: str | None, stems: Counter[str]) -> tuple[str, str, str]:
    """(key as annotations name it, the volume's own identity, patient) of one volume: a DICOM
    header, else the file's name. A file name that several volumes share (KiTS's
    ``case_00000/imaging.nii.gz``) is told apart and owned by its folder; so is a sequence of
    a case folder named after it (BraTS's ``BraTS2021_00000/BraTS2021_00000_flair.nii.gz``:
    the case's FLAIR and T2 are one patient's, never in two splits). ``stems``: how many
    volumes have each file stem."""
    import pydicom

    if series:
        first = pydicom.dcmread(next(p for p in sorted(path.iterdir()) if p.is_file()), stop_before_pixels=True,
                                specific_tags=["PatientID"])
        return series, series, str(first.get("PatientID", "") or series)
    key, case = path.name.split(".")[0], path.parent.name
    if stems[key] > 1:
        return key, f"{case}/{key}", case
    if any(c.isdigit() for c in case) and key.startswith((case + "_", case + "-")):
        return key, key, case
    return key, key, key


def build_cube_dataset(ws: Any, source: Path, name: str, modality: str, *, annotations: Path | None = None,
                       negatives: int = 4, region: str = "unknown", seed: int = 0, store: str = "npz",
                       progress: Progress | None = None) -> Any:
    """Cubes from every volume under ``source`` -> an organized dataset ``name`` (MedMNIST layout).

    Positives come from ``annotations`` (CSV: series or file stem, x y z in mm or i j k
    voxels, optional location and label), else from a ``*_mask`` beside each volume file or
    a public layout's label map (its lesion values only: app/label_maps.py), and for DICOM
    series from the SEG and RTSTRUCT objects in the tree that outline their lesions
    (app.dicom_marks). Series
    and patients are pseudonymized with the workspace key; no identifier is written.
    Patients are split before any cube is cut, and cubes go to the file as they are
    cut: with ``store="h5"`` (a chunked HDF5 store, read a batch at a time in training)
    memory stays bounded however many volumes there are.

    Raises:
        DatasetError: no volume under ``source``, no cube could be made, or none around a
            finding (all-normal cubes teach nothing; the error says why, e.g. organ maps).
    """
    from app.cube_store import StoreWriter
    from app.organize.organizer import organize
    from app.pseudonyms import pseudonymize
    from app.volumes import load_volume

    if store not in ("npz", "h5"):
        raise DatasetError(f"Unknown cube store {store!r}: choose npz or h5.")
    source = Path(source).expanduser().resolve()
    volumes = find_volumes(source)
    if not volumes:
        raise DatasetError(f"No volume under {source}: give NIfTI/MHA/NRRD files or DICOM series folders.")
    secret, rng = ws.secret(), np.random.default_rng(seed)
    marks: dict[str, list[tuple[float, float, float]]] = {}
    if not annotations and any(series for _, series in volumes):
        from app.dicom_marks import lesion_points

        marks, problems = lesion_points(source)
        if problems:
            raise DatasetError("Some segmentations could not be read, so their lesions would be missed: "
                               + "; ".join(problems[:3]) + ". Fix or remove them, or give a points CSV.")
    identities = []
    stems = Counter(path.name.split(".")[0] for path, series in volumes if not series)
    for path, series in volumes:
        key, own, patient = _identity(path, series, stems)
        identities.append((key, pseudonymize(secret, own, "S"), pseudonymize(secret, patient)))
    split_of = patient_splits([patient for _, _, patient in identities], seed)
    path = ws.data_dir / "cubes" / name / f"{name}.{store}"
    writer, positives = StoreWriter(path, (SIZE,) * 3, len(POSITIONS)), 0
    organ_maps: dict[str, int] = {}  # why a volume's label map gave no lesion -> volumes
    try:
        for k, ((folder, series), (key, series_id, patient_id)) in enumerate(zip(volumes, identities)):
            volume = load_volume(folder, modality, series_id=series)
            if annotations:
                points = points_from_csv(annotations, volume, key)
            elif series:
                points = [Point(volume.world_to_voxel(world)) for world in marks.get(series, [])]
            else:
                mask = _mask_for(folder, source)
                if mask and mask.path:
                    points = points_from_mask(_lesions(_mask_array(mask.path, volume), mask.values))
                else:
                    points = []
                    if mask and mask.why:
                        organ_maps[mask.why] = organ_maps.get(mask.why, 0) + 1
            for cube, label, position in volume_cubes(volume, points, negatives, rng):
                writer.add(split_of[patient_id], cube, label, position, series_id, patient_id)
                positives += label
            report(progress, "Extracting cubes", k + 1, len(volumes))
        if not sum(writer.counts.values()):
            raise DatasetError("No cube to save: no volume gave a positive or a negative cube.")
        if not positives:
            why = "; ".join(f"{reason} ({count} volume(s))" for reason, count in organ_maps.items())
            raise DatasetError(
                "No finding to centre a positive cube on, so the cubes would all be normal and teach nothing"
                + (f": {why}" if why else "") + ". Give the findings: a points CSV (--points), a lesion mask "
                "named after its volume (x_seg.nii.gz beside x.nii.gz), DICOM SEG or RTSTRUCT objects of the "
                "series, or a Decathlon task whose dataset.json names a lesion label.")
        writer.close(["normal", "finding"], modality, region)
    except BaseException:
        writer.abort()
        raise
    _metadata(path, modality, writer.counts, positives, len(set(split_of)), seed, "hdf5" if store == "h5" else "npz")
    return organize(ws, path, name)
