"""Volumes (SimpleITK), cubes and the cube3d phase, on the real volumes in ../shared/data."""

import csv

import numpy as np
import pytest

from core.errors import TrainingError
from app.cubes import SIZE, extract_cube, negative_centres, one_hot, points_from_mask, Point
from app.volumes import load_volume, read_image
from tests.conftest import shared


def _extent(image) -> list[float]:
    return sorted(n * s for n, s in zip(image.GetSize(), image.GetSpacing()))


@pytest.mark.parametrize("relative, shape", [
    ("dicom/mr_brain_t1w_series", (256, 256, 192)),  # 96 sagittal slices at 2 mm -> 192 x voxels at 1 mm
    ("nifti/eun_uchar_8.nii.gz", (151, 190, 256)),
    ("nifti/KmeansTest_T1UCharRaw.nii.gz", (256, 186, 256)),  # 62 slices at 3 mm on the y axis
])
def test_real_volumes_are_oriented_and_resampled_to_1_mm(relative, shape) -> None:
    path = shared(relative)
    original = read_image(path)
    volume = load_volume(path, "MR")
    assert volume.array.shape == shape and volume.array.dtype == np.float32
    assert volume.spacing == (1.0, 1.0, 1.0)
    assert np.allclose(volume.direction, np.eye(3).ravel()), "LPS: identity direction"
    extent = sorted(n * s for n, s in zip(volume.geometry.size, volume.geometry.spacing))
    assert np.allclose(extent, _extent(original), atol=1.0), "same physical extent"
    assert 0.0 <= volume.array.min() and volume.array.max() <= 1.0 and volume.array.std() > 0.05


def test_world_points_land_on_the_same_anatomy_after_orientation_and_resampling() -> None:
    import SimpleITK as sitk

    path = shared("dicom/mr_brain_t1w_series")
    original = read_image(path)
    volume = load_volume(path, "MR")
    raw = sitk.GetArrayFromImage(original).astype(np.float32)
    # The brightest voxel of the acquisition, found again through world coordinates.
    z, y, x = np.unravel_index(int(raw.argmax()), raw.shape)
    world = original.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
    centre = np.round(volume.world_to_voxel(world)).astype(int)
    near = volume.array[tuple(slice(max(c - 1, 0), c + 2) for c in centre)]
    assert near.max() >= 0.99, "the normalized maximum sits at the converted point"


def test_cubes_are_48_cubed_everywhere_and_centred() -> None:
    array = np.random.default_rng(0).random((60, 70, 80)).astype(np.float32)
    inner = extract_cube(array, (30, 35, 40))
    assert inner.shape == (SIZE,) * 3 and np.array_equal(inner, array[6:54, 11:59, 16:64])
    corner = extract_cube(array, (0, 0, 0))
    assert corner.shape == (SIZE,) * 3
    assert np.array_equal(corner[24:, 24:, 24:], array[:24, :24, :24]), "the volume's corner at the cube centre"
    assert (corner[:24] == array.min()).all(), "padding with the background value"
    assert extract_cube(array, (500, 0, 0)).shape == (SIZE,) * 3


def test_file_voxel_indices_and_world_points_agree() -> None:
    path = shared("nifti/KmeansTest_T1UCharRaw.nii.gz")
    volume = load_volume(path, "MR")
    world = read_image(path).TransformIndexToPhysicalPoint((64, 64, 31))
    assert np.allclose(volume.file_voxel_to_voxel((64, 64, 31)), volume.world_to_voxel(world))


def test_cubes_from_a_real_volume_near_its_border() -> None:
    volume = load_volume(shared("nifti/eun_uchar_8.nii.gz"), "MR")
    for centre in [(2, 3, 4), (150, 189, 255), (75, 95, 128)]:
        assert extract_cube(volume.array, centre).shape == (SIZE,) * 3


def test_mask_components_and_negatives_away_from_them() -> None:
    mask = np.zeros((80, 80, 80), np.uint8)
    mask[10:14, 10:14, 10:14] = 1
    mask[60:62, 50:54, 40:42] = 1
    points = points_from_mask(mask)
    assert sorted(tuple(round(c, 1) for c in p.zyx) for p in points) == [(11.5, 11.5, 11.5), (60.5, 51.5, 40.5)]
    body = np.full((120, 120, 120), 0.5, np.float32)
    negatives = negative_centres(body, [Point((60.0, 60.0, 60.0))], 5, np.random.default_rng(0))
    assert len(negatives) == 5
    assert all(np.max(np.abs(np.array(c) - 60)) >= SIZE for c in negatives)
    assert one_hot("Basilar Tip").sum() == 1 and one_hot("").sum() == 0


def test_a_cube_dataset_from_volumes_and_a_point_csv_trains_the_3d_phase(ws, tmp_path) -> None:
    from app.cubes import build_cube_dataset
    from app.evaluate import evaluate_run
    from app.training import train

    folder = tmp_path / "volumes"
    folder.mkdir()
    source = shared("nifti/KmeansTest_T1UCharRaw.nii.gz")
    names = [f"subject{k}" for k in range(6)]
    for name in names:
        (folder / f"{name}.nii.gz").symlink_to(source)
    table = tmp_path / "points.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["series", "i", "j", "k", "location"])
        for name in names:
            writer.writerow([name, 64, 64, 31, "Basilar Tip"])
    result = build_cube_dataset(ws, folder, "cubes", "MR", annotations=table, negatives=2, region="brain")
    assert result.items == 6 * 3 and set(result.classes) == {"normal", "other_anomaly"}
    meta = ws.dataset_metadata("cubes")
    assert meta["counts"]["by_modality"] == {"MR": 18}
    with np.load(ws.data_dir / "cubes" / "cubes" / "cubes.npz") as data:
        assert data["train_images"].shape[1:] == (SIZE,) * 3
        positions = np.concatenate([data[f"{s}_positions"] for s in ("train", "val", "test")])
        labels = np.concatenate([data[f"{s}_labels"][:, 0] for s in ("train", "val", "test")])
        assert (positions[labels == 1].sum(1) == 1).all() and positions[labels == 0].sum() == 0
        assert not any("subject" in str(v) for s in ("train", "val", "test") for v in data[f"{s}_patients"])
    with pytest.raises(TrainingError, match="give the answer away"):  # only findings carry a position
        train(ws, "cubes", "cube3d", run="leak", epochs=1, image_size=16, width=8, batch_size=4, positions=True)
    run = train(ws, "cubes", "cube3d", run="c3d", epochs=1, image_size=16, width=8, batch_size=4)
    assert run.epochs_done == 1
    assert evaluate_run(ws, "c3d", "test").metrics["n"] > 0
    from app.bundle import export_bundle, load_bundle

    bundle = export_bundle(ws, "c3d")
    assert bundle.max_abs_diff <= 1e-4
    assert load_bundle(bundle.path, keys_from=ws.data_dir).card["input"]["shape"] == ["batch", 1, 16, 16, 16]


def _volume_folder(tmp_path, names):
    folder = tmp_path / "volumes"
    folder.mkdir()
    source = shared("nifti/KmeansTest_T1UCharRaw.nii.gz")
    for name in names:
        (folder / f"{name}.nii.gz").symlink_to(source)
    return folder


def test_an_hdf5_cube_store_is_written_cube_by_cube_and_read_a_batch_at_a_time(ws, tmp_path) -> None:
    import torch

    from app.cube_store import Store
    from app.cubes import build_cube_dataset
    from app.data import StoredVolumes, load_volumes, phase_inputs, split_rows
    from app.training import load_run_phase, train

    names = [f"case{k}" for k in range(6)]
    folder = _volume_folder(tmp_path, names)
    table = tmp_path / "points.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["series", "i", "j", "k", "location", "label"])
        for name in names:
            writer.writerow([name, 64, 64, 31, "Basilar Tip", 1])
            writer.writerow([name, 150, 100, 31, "Left Middle Cerebral Artery", 0])  # a normal place, with its position
    result = build_cube_dataset(ws, folder, "store", "MR", annotations=table, negatives=1, store="h5")
    assert result.items == 6 * 3
    path = ws.data_dir / "cubes" / "store" / "store.h5"
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    with Store(path) as data:
        labels = np.concatenate([data.array(f"{s}_labels")[:, 0] for s in ("train", "val", "test")])
        positions = np.concatenate([data.array(f"{s}_positions") for s in ("train", "val", "test")])
        assert labels.sum() == 6 and positions.sum() == 12  # findings and positioned normal places
        assert data.shape("train_images")[1:] == (SIZE,) * 3
    run = train(ws, "store", "cube3d", run="h5", epochs=1, image_size=16, width=8, batch_size=4)
    assert run.epochs_done == 1
    phase = load_run_phase(ws, "h5")
    rows = [r for r in split_rows(ws, "store", "train") if r["labeled"]]
    lazy = phase_inputs(ws, phase, rows)
    assert isinstance(lazy, StoredVolumes) and lazy.shape == (len(rows), 1, 16, 16, 16)
    pick = torch.tensor([3, 0, 3])
    assert torch.equal(lazy[pick], torch.from_numpy(load_volumes(ws, [rows[3], rows[0], rows[3]], 16)))
    assert torch.equal(lazy[1:3], torch.from_numpy(load_volumes(ws, rows[1:3], 16)))

    # Positions as an extra input: normal places carry positions too, so the position alone tells nothing.
    train(ws, "store", "cube3d", run="h5-pos", epochs=1, image_size=16, width=8, batch_size=4, positions=True)
    positioned = load_run_phase(ws, "h5-pos")
    batch = phase_inputs(ws, positioned, rows)[0:4]
    assert batch.shape == (4, 2, 16, 16, 16) and set(torch.round(batch[:, 1] * 13).flatten().tolist()) <= {0.0, 12.0, 5.0}
    from app.bundle import export_bundle, load_bundle

    bundle = export_bundle(ws, "h5-pos")
    assert bundle.max_abs_diff <= 1e-4
    assert load_bundle(bundle.path, keys_from=ws.data_dir).card["input"]["shape"][:2] == ["batch", 2]


def test_a_failed_cube_extraction_leaves_no_file(ws, tmp_path) -> None:
    from app.cubes import build_cube_dataset
    from core.errors import DatasetError

    folder = _volume_folder(tmp_path, ["a", "b"])
    table = tmp_path / "points.csv"
    table.write_text("series,i,j,k,label\na,64,64,31,1\nb,64,64,31,yes\n")
    for store in ("h5", "npz"):
        with pytest.raises(DatasetError, match="label must be 1"):
            build_cube_dataset(ws, folder, f"broken-{store}", "MR", annotations=table, negatives=1, store=store)
        assert not list((ws.data_dir / "cubes" / f"broken-{store}").iterdir())
