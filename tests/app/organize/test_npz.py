"""MedMNIST .npz files organize with their official splits and train like any dataset."""

from pathlib import Path

import numpy as np
import pytest

from core.errors import DatasetError
from app.organize.organizer import organize, read_rows
from tests.conftest import shared


def _tiny_npz(path: Path, shape=(28, 28)) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 10), ("test", 12)):
        labels = (np.arange(n) % 2).reshape(n, 1)
        images = (rng.random((n, *shape)) * 80).astype(np.uint8)
        images[labels[:, 0] == 1, 10:18, 10:18] = 250  # a bright lesion: learnable
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(path, **arrays)
    return path


def test_official_splits_are_kept(ws) -> None:
    data = shared("medmnist/pneumoniamnist_subset.npz")
    result = organize(ws, data, "pneumonia")
    assert result.split_counts == {"train": 3882, "val": 524, "test": 624}
    assert set(result.classes) == {"normal", "infection"}
    rows = read_rows(ws.organized_path("pneumonia") / "splits" / "test.csv")
    assert {r["source_label"] for r in rows} == {"normal", "pneumonia"}
    assert rows[0]["modality"] == "XR" and rows[0]["region"] == "chest"


def test_an_npz_trains_and_evaluates(ws, tmp_path) -> None:
    from app.evaluate import evaluate_run
    from app.training import train

    organize(ws, _tiny_npz(tmp_path / "toymnist.npz"), "toy")
    result = train(ws, "toy", "supervised", run="toy", epochs=2, image_size=32, batch_size=8, pretrained=False)
    assert result.epochs_done == 2
    metrics = evaluate_run(ws, "toy", "test").metrics
    assert metrics["n"] == 12 and set(metrics["per_class"]) == {"class_0", "class_1"}


def test_a_time_limit_ends_training_early(ws, tmp_path) -> None:
    from app.training import train

    organize(ws, _tiny_npz(tmp_path / "toymnist.npz"), "toy")
    seen: list[tuple] = []
    result = train(ws, "toy", "supervised", run="short", epochs=50, image_size=32, pretrained=False,
                   time_limit_s=0.01, progress=lambda task, done, total, **info: seen.append((task, done, total, info)))
    assert result.epochs_done == 1 and ws.run_metadata("short")["status"] == "complete"
    task, done, total, info = [s for s in seen if s[0] == "Epochs"][-1]
    assert done == total == 1 and info["ended"] == "out of time", "the bar ends, saying why, not '1/50 not finished'"


def test_3d_files_and_wrong_files_are_clear_errors(ws, tmp_path) -> None:
    from app.training import train

    organize(ws, _tiny_npz(tmp_path / "volmnist3d.npz", shape=(8, 8, 8)), "vol")
    with pytest.raises(DatasetError, match="3D"):
        train(ws, "vol", "supervised", run="v", epochs=1, image_size=32, pretrained=False)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DatasetError, match="not a MedMNIST-format file"):
        organize(ws, tmp_path / "other.npz", "other")


def test_an_archive_inside_a_folder_is_named_in_the_scan_report_with_what_to_do(ws, tmp_path) -> None:
    from PIL import Image

    from app.organize.scan import ARCHIVE

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(folder / "a.png")
    _tiny_npz(folder / "toymnist.npz")
    (folder / "chest-xray-pneumonia.zip").write_bytes(b"PK\x03\x04" + bytes(60))
    (folder / "labels.xlsx").write_bytes(b"PK\x03\x04" + bytes(60))
    result = organize(ws, folder, "mixed", workers=1)
    assert result.items == 1 and result.skip_reasons == {
        ARCHIVE: 1, "a packed archive; unpack it, then organize the folder": 1,
        "a spreadsheet; save it as CSV to use it as a label table": 1}
    assert "organize that file itself" in ARCHIVE
