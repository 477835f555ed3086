"""Large sets under a time limit: epochs draw samples so that a schedule still fits; the
validation watch is a fixed sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.organize.organizer import organize
from app.recipes import screen_samples
from app.training import MIN_FIT, epoch_sample, train


def _npz(path: Path, train: int = 320, val: int = 40) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", train), ("val", val), ("test", 16)):
        labels = (np.arange(n) % 2).reshape(n, 1)
        images = (rng.random((n, 28, 28)) * 80).astype(np.uint8)
        images[labels[:, 0] == 1, 10:18, 10:18] = 250
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
    np.savez(path, **arrays)
    return path


def test_an_epoch_that_fits_the_limit_often_enough_takes_every_image() -> None:
    assert epoch_sample(1000, seconds_per_epoch=5.0, time_limit_s=60.0, batch_size=32) is None
    # 100 s an epoch, 60 s in all: each of MIN_FIT epochs gets 6 s, 60 images of 1000.
    assert epoch_sample(1000, seconds_per_epoch=100.0, time_limit_s=60.0, batch_size=8) == 1000 * 60 // (MIN_FIT * 100)
    assert epoch_sample(1000, seconds_per_epoch=1e6, time_limit_s=60.0, batch_size=8) == 32, "never under 4 batches"


def test_screening_samples_only_when_two_whole_epochs_do_not_fit() -> None:
    # 90 s of screening each.
    found = screen_samples({"quick": 10.0, "slow": 450.0}, 90.0, train_images=90_000, batch_size=64)
    assert found["quick"] is None
    assert found["slow"] == int(90_000 * 90 / (2 * 450))


def test_a_time_limited_run_on_a_large_set_draws_fresh_samples_and_resumes_with_them(ws, tmp_path: Path,
                                                                                    monkeypatch) -> None:
    import app.timing

    organize(ws, _npz(tmp_path / "bigmnist.npz"), "big")
    # The probe says an epoch of all 320 images takes 750 s: under a 60 s limit each epoch draws a
    # sample. (The limit is roomy so that a loaded machine never runs out of time before the stop
    # asked for below: the run would end "complete" instead of "stopped".)
    monkeypatch.setattr(app.timing, "probe_seconds_per_epoch", lambda *a, **k: 750.0)
    settings = dict(backbone="resnet10t", image_size=32, epochs=1, batch_size=8, pretrained=False, augment="none",
                    time_limit_s=60.0, max_epochs=12, patience=100)
    asked = []
    stopped = train(ws, "big", "supervised", run="r", should_stop=lambda: asked.append(1) or len(asked) >= 2,
                    **settings)
    drawn = max(4 * 8, 320 * 60 // (MIN_FIT * 750))
    meta = ws.run_metadata(stopped.run)
    assert stopped.status == "stopped" and meta["epoch_images"] == drawn
    # The plan of one whole epoch became as many images in epochs of the sample.
    assert meta["config"]["epochs"] == 320 // drawn
    monkeypatch.setattr(app.timing, "probe_seconds_per_epoch", lambda *a, **k: 1.0)  # a resumed run keeps its own
    result = train(ws, "big", "supervised", run="r", **settings)
    meta = ws.run_metadata(result.run)
    assert meta["epoch_images"] == drawn and meta["status"] == "complete" and len(meta["history"]) >= 3
    assert [r["epoch"] for r in meta["history"]] == list(range(1, len(meta["history"]) + 1))


def test_validation_watches_a_fixed_sample_of_a_large_split(ws, tmp_path: Path, monkeypatch) -> None:
    import app.training

    monkeypatch.setattr(app.training, "VAL_WATCH", 24)
    organize(ws, _npz(tmp_path / "bigvalmnist.npz", train=40, val=60), "bigval")
    seen = []
    check = app.training.check_splits
    monkeypatch.setattr(app.training, "check_splits",
                        lambda phase, dataset, train_y, val_y: (seen.append(len(val_y)), check(phase, dataset, train_y, val_y)))
    train(ws, "bigval", "supervised", run="v", backbone="resnet10t", image_size=32, epochs=1, batch_size=8,
          pretrained=False, augment="none")
    assert seen == [24]


def test_a_search_reads_each_split_table_once_while_it_is_unchanged(demo_ws, tmp_path: Path, monkeypatch) -> None:
    import app.data as data
    from tests.conftest import copy_of_demo

    demo_ws = copy_of_demo(demo_ws, tmp_path / "ws")  # its table is written to below

    reads = []
    real = data.read_rows
    monkeypatch.setattr(data, "read_rows", lambda path: reads.append(path.name) or real(path))
    with data.loads_kept():
        first = data.split_rows(demo_ws, "demo", "train")
        first[0]["label"] = "changed by a caller"
        again = data.split_rows(demo_ws, "demo", "train")
        assert reads == ["train.csv"] and again[0]["label"] != "changed by a caller"
        table = demo_ws.organized_path("demo") / "splits" / "train.csv"
        table.write_text(table.read_text() + "\n")  # organized again meanwhile: read afresh
        data.split_rows(demo_ws, "demo", "train")
        assert reads == ["train.csv", "train.csv"]
    data.split_rows(demo_ws, "demo", "train")  # outside a search: always read
    assert len(reads) == 3
