"""Colour data trains colour models: RGB kept from the file to the exported bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.organize.organizer import natural_key, organize
from app.state import Kind, read_state
from app.training import train

# Two classes that differ in hue only: the mean of their channels (what a grey reading of a
# MedMNIST colour file sees) is the same, so only a colour model can tell them apart.
HUES = {0: (200, 60, 130), 1: (60, 200, 130)}


def _hue_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = (np.arange(n) % 2).reshape(n, 1)
    images = np.repeat((100 + rng.random((n, 28, 28, 1)) * 60).astype(np.uint8), 3, axis=-1)
    for k in range(n):
        y, x = rng.integers(4, 16, 2)
        images[k, y : y + 9, x : x + 9] = HUES[int(labels[k, 0])]
    return images, labels


def _colour_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 64), ("val", 24), ("test", 24)):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _hue_images(n, rng)
    np.savez(path, **arrays)
    return path


OPTIONS = {"backbone": "resnet10t", "image_size": 32, "epochs": 4, "batch_size": 16, "pretrained": False,
           "augment": "none", "patience": 10}


def test_a_colour_file_trains_a_colour_model_that_sees_what_grey_cannot(ws, tmp_path: Path) -> None:
    organize(ws, _colour_npz(tmp_path / "huemnist.npz"), "hue")
    tconfig = read_state(ws.organized_path("hue") / "training_config.json", Kind.TRAINING_CONFIG)
    assert tconfig["channels"] == 3
    train(ws, "hue", "supervised", run="colour", **OPTIONS)
    train(ws, "hue", "supervised", run="grey", channels=1, **OPTIONS)  # the old reading: luminance
    colour, grey = ws.run_metadata("colour"), ws.run_metadata("grey")
    assert colour["config"]["channels"] == 3 and grey["config"]["channels"] == 1
    assert colour["best_metric"] >= 0.95, colour["history"]
    assert grey["best_metric"] <= 0.8, "a grey model cannot tell hues of equal brightness apart"


def test_a_colour_model_exports_and_predicts_on_colour_files(ws, tmp_path: Path) -> None:
    from app.bundle import export_bundle
    from app.predict import predict

    organize(ws, _colour_npz(tmp_path / "huemnist.npz"), "hue")
    train(ws, "hue", "supervised", run="colour", **OPTIONS)
    export_bundle(ws, "colour")
    card = json.loads((ws.export_dir("colour") / "metadata.json").read_text())
    assert card["input"]["shape"] == ["batch", 3, 32, 32]
    assert card["input"]["preprocessing"]["channels"] == 3
    assert "RGB" in card["input"]["preprocessing"]["steps"][0]
    folder = tmp_path / "photos"
    folder.mkdir()
    images, labels = _hue_images(8, np.random.default_rng(5))
    for k, image in enumerate(images):
        Image.fromarray(image).save(folder / f"photo{k}.png")
    results = predict(ws, folder, run="colour", allow_ood=True, show_names=True).predictions
    assert len(results) == 8 and all(r.engine == "onnxruntime" for r in results)
    truth = {f"photo{k}.png": ("class_0", "class_1")[int(labels[k, 0])] for k in range(8)}
    right = sum(r.predicted_class == truth[r.name] for r in results)
    assert right >= 7, [(r.name, r.predicted_class) for r in results]


def test_colour_is_told_from_the_pixels_not_the_file_mode(ws, tmp_path: Path) -> None:
    """RGB JPEGs of grey radiographs stay grey; real colour photographs are colour."""
    rng = np.random.default_rng(1)
    for name, colour in (("greyish", False), ("photos", True)):
        for label in ("a", "b"):
            folder = tmp_path / name / label
            folder.mkdir(parents=True)
            for k in range(6):
                grey = (rng.random((40, 40)) * 255).astype(np.uint8)
                rgb = np.stack([grey, grey, grey], -1)
                if colour:
                    rgb[..., 0] = 255 - grey  # hue varies with the pattern
                Image.fromarray(rgb).save(folder / f"{label}{k}.jpg", quality=85)
        organize(ws, tmp_path / name, name)
        tconfig = read_state(ws.organized_path(name) / "training_config.json", Kind.TRAINING_CONFIG)
        assert tconfig["channels"] == (3 if colour else 1), name


def test_classes_with_numbers_are_ordered_by_value() -> None:
    names = ["class_10", "class_2", "class_1", "grade 12", "grade 3"]
    assert sorted(names, key=natural_key) == ["class_1", "class_2", "class_10", "grade 3", "grade 12"]


@pytest.mark.parametrize("channels", [2, 4])
def test_only_grey_or_colour_models_are_built(ws, tmp_path: Path, channels: int) -> None:
    from core.errors import TrainingError

    organize(ws, _colour_npz(tmp_path / "huemnist.npz"), "hue")
    with pytest.raises(TrainingError, match="channels must be 1 .grey. or 3 .colour."):
        train(ws, "hue", "supervised", run=f"c{channels}", channels=channels, **OPTIONS)
