"""Classes that mirror each other (left and right): found from the training split, and then
no flips in training and no mirror view (app/laterality.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.laterality import flips_record, flips_sentence, mirror_pairs
from app.organize.organizer import organize
from core.errors import TrainingError
from tests.conftest import shared

OPTIONS = {"pretrained": False, "batch_size": 8}


def _sides(n: int, rng: np.random.Generator, size: int = 28, left: int = 3, right: int = 19) -> tuple[np.ndarray, np.ndarray]:
    """Noise images, each with a bright square at the left (class 0) or at the right (class 1):
    the two classes are each other's mirror, and nothing else tells them apart."""
    labels = np.arange(n) % 2
    images = (rng.random((n, size, size)) * 80).astype(np.uint8)
    for k, label in enumerate(labels):
        column = right if label else left
        images[k, 10:16, column : column + 6] = 250
    return images, labels


def _lateral_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        images, labels = _sides(n, rng)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(n, 1)
    np.savez(path, **arrays)
    return path


def _float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.astype(np.float32) / 255)[:, None]


def test_classes_that_mirror_each_other_are_found_and_others_are_not() -> None:
    rng = np.random.default_rng(1)
    images, labels = _sides(60, rng)
    found = mirror_pairs(_float(images), torch.from_numpy(labels), ["left", "right"])
    assert [p["classes"] for p in found] == [["left", "right"]] and found[0]["ratio"] < 0.2
    # A third class in the middle mirrors itself: it pairs with neither side.
    middle = (rng.random((30, 28, 28)) * 80).astype(np.uint8)
    middle[:, 10:16, 11:17] = 250
    three = mirror_pairs(_float(np.concatenate([images, middle])), np.concatenate([labels, np.full(30, 2)]),
                         ["left", "right", "middle"])
    assert [p["classes"] for p in three] == [["left", "right"]]
    # A finding on one side against none at all: flipping does not turn one class into the other.
    plain = (rng.random((60, 28, 28)) * 80).astype(np.uint8)
    one_sided = plain.copy()
    one_sided[labels == 1, 10:16, 3:9] = 250
    assert mirror_pairs(_float(one_sided), labels, ["normal", "left finding"]) == []
    # Two classes of the same noise: their means differ by noise only, which decides nothing.
    assert mirror_pairs(_float(plain), labels, ["a", "b"]) == []
    # Too few images of a class to say anything (and unlabeled rows, -1, are left out).
    few = np.where(np.arange(60) < 56, -1, labels)
    assert mirror_pairs(_float(images), few, ["left", "right"]) == []


def test_volumes_are_compared_on_their_image_channel() -> None:
    """A cube's second channel (its position code, models/cube3d.py) is not image: left out."""
    rng = np.random.default_rng(2)
    labels = np.arange(40) % 2
    volumes = rng.random((40, 2, 12, 12, 12)).astype(np.float32) * 0.3
    for k, label in enumerate(labels):
        volumes[k, 0, 4:8, 4:8, (8 if label else 1) : (11 if label else 4)] = 1.0
    volumes[:, 1] = labels[:, None, None, None] * 0.5  # a position code that differs by class
    found = mirror_pairs(torch.from_numpy(volumes), labels, ["left", "right"])
    assert [p["classes"] for p in found] == [["left", "right"]]


def test_the_setting_decides_and_the_sentence_names_the_classes() -> None:
    rng = np.random.default_rng(3)
    images, labels = _sides(40, rng)
    x = _float(images)
    auto = flips_record("auto", x, labels, ["kidney-left", "kidney-right"])
    assert auto["used"] is False and auto["mirror_pairs"][0]["classes"] == ["kidney-left", "kidney-right"]
    assert "kidney-left / kidney-right" in flips_sentence(auto)
    assert flips_record("on", x, labels, ["a", "b"]) == {"setting": "on", "used": True, "mirror_pairs": []}
    assert flips_sentence(flips_record("off", x, labels, ["a", "b"])) == "Trained without left-right flips (set for this run)."
    assert flips_sentence(flips_record("auto", x, np.zeros(40, int), ["a", "b"])) == "", "one class: nothing mirrors"
    with pytest.raises(ValueError, match="auto, on, off"):
        flips_record("sometimes", x, labels, ["a", "b"])


def test_augmentation_without_flips_draws_the_same_and_never_mirrors() -> None:
    from app.training import _augment

    images = torch.rand(16, 1, 32, 32)
    flipped = _augment(images, torch.Generator().manual_seed(0), "standard")
    kept = _augment(images, torch.Generator().manual_seed(0), "standard", flips=False)
    shift = [dy for dy in range(-2, 3) for dx in range(-2, 3)
             if torch.equal(kept, torch.roll(images, shifts=(dy, dx), dims=(-2, -1)))]
    assert shift, "without flips the standard augmentation is its shift alone, the same for every image"
    assert not torch.equal(flipped, kept), "with flips (same draws) some images are mirrored"


def test_real_medmnist_sets_keep_their_flips() -> None:
    """BreastMNIST, PneumoniaMNIST and AdrenalMNIST3D: no two classes mirror each other, so
    the augmentation that measured best on them is unchanged."""
    for name in ("breastmnist", "pneumoniamnist", "adrenalmnist3d"):
        with np.load(shared(f"medmnist/{name}.npz")) as data:
            images, labels = data["train_images"], data["train_labels"].reshape(-1)
        x = torch.from_numpy(images.astype(np.float32) / 255)[:, None]
        assert mirror_pairs(x, labels, ["0", "1"]) == [], name


def _lung_crops() -> tuple[np.ndarray, np.ndarray]:
    """Each lung of the real CT slices in ../shared, cut to its own box and made 28 x 28
    (the way MedMNIST's organ sets cut organs): class 0 the lung on the image's left (the
    patient's right), class 1 the other."""
    import pydicom
    from scipy import ndimage
    from skimage.transform import resize

    images, labels = [], []
    for path in sorted(shared("dicom/ct_chest_covid_slices").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        body = ndimage.binary_fill_holes(ndimage.binary_opening(hu > -500, iterations=3))
        parts, n = ndimage.label(body)
        body = parts == 1 + int(np.argmax(ndimage.sum(body, parts, range(1, n + 1))))
        lungs, n = ndimage.label((hu < -400) & ndimage.binary_erosion(body, iterations=5))
        largest = np.argsort(ndimage.sum(lungs > 0, lungs, range(1, n + 1)))[::-1][:2] + 1
        if len(largest) < 2:
            continue
        boxes = sorted((ndimage.find_objects((lungs == k).astype(int))[0] for k in largest), key=lambda b: b[1].start)
        window = np.clip((hu + 1000) / 1400, 0, 1)
        for label, box in enumerate(boxes):
            images.append(resize(window[box], (28, 28), anti_aliasing=True).astype(np.float32))
            labels.append(label)
    return np.array(images), np.array(labels)


def test_real_left_and_right_lungs_are_found_to_mirror_each_other() -> None:
    images, labels = _lung_crops()
    assert len(images) >= 30
    found = mirror_pairs(torch.from_numpy(images)[:, None], labels, ["lung-right", "lung-left"])
    assert [p["classes"] for p in found] == [["lung-right", "lung-left"]]
    # The same crops, each class half mirrored: now both classes hold both sides, and no pair is left.
    mixed = images.copy()
    mixed[::2] = mixed[::2, :, ::-1]
    assert mirror_pairs(torch.from_numpy(mixed)[:, None], labels, ["lung-right", "lung-left"]) == []


def test_training_leaves_flips_out_where_classes_mirror_each_other(ws, tmp_path: Path) -> None:
    from app.evaluate import evaluate_run
    from app.training import train

    organize(ws, _lateral_npz(tmp_path / "sidesmnist.npz"), "sides")
    result = train(ws, "sides", "supervised", run="auto", backbone="resnet10t", image_size=32, epochs=2,
                   augment="standard", **OPTIONS)
    flips = ws.run_metadata(result.run)["flips"]
    assert flips["setting"] == "auto" and flips["used"] is False and len(flips["mirror_pairs"]) == 1
    evaluate_run(ws, "auto", "test")
    report = (ws.run_dir("auto") / "evaluation" / "report.md").read_text()
    assert "Trained without left-right flips: left and right tell its classes apart" in report
    with pytest.raises(TrainingError, match="mirror each other"):
        evaluate_run(ws, "auto", "test", tta=True)
    forced = train(ws, "sides", "supervised", run="forced", backbone="resnet10t", image_size=32, epochs=1,
                   augment="standard", flips="on", **OPTIONS)
    assert ws.run_metadata(forced.run)["flips"] == {"setting": "on", "used": True, "mirror_pairs": []}
    plain = train(ws, "sides", "supervised", run="plain", backbone="resnet10t", image_size=32, epochs=1,
                  augment="none", **OPTIONS)
    assert "flips" not in ws.run_metadata(plain.run), "no augmentation: nothing to decide"
    with pytest.raises(TrainingError, match="Flips must be one of auto, on, off"):
        train(ws, "sides", "supervised", run="bad", epochs=1, flips="maybe", **OPTIONS)


def test_a_search_on_mirrored_classes_never_averages_with_the_mirror(ws, tmp_path: Path, monkeypatch) -> None:
    """Left and right are the classes: the search's runs train without flips, the mirror view
    is not considered even where validation would take anything, and the summary, report and
    bundle card say why."""
    import app.recipes
    from app.bundle import export_bundle
    from app.evaluate import evaluate_run
    from app.recipes import Recipe, search_and_train
    from app.training import load_run_phase
    from menus.render import recipe_summary

    monkeypatch.setattr(app.recipes, "MAX_EPOCHS", 3)  # the winner's run ends early
    monkeypatch.setattr(app.recipes, "MIRROR_TIE", float("inf"))  # validation would keep any mirror
    organize(ws, _lateral_npz(tmp_path / "sidesmnist.npz"), "sides")
    result, record = search_and_train(ws, "sides", 600.0, run="s", recipes=(Recipe("fast", "resnet10t", 32, "standard"),),
                                      epochs={"fast": 2}, ensemble=False, **OPTIONS)
    assert "mirror" not in record.get("ensemble", {}) and not getattr(load_run_phase(ws, "s").model, "mirror", False)
    for trial in record["trials"]:
        assert ws.run_metadata(trial["run"])["flips"]["used"] is False
    flips = ws.run_metadata("s")["flips"]
    assert "Trained without left-right flips" in recipe_summary(record, result, flips)
    evaluate_run(ws, "s", "test")
    exported = export_bundle(ws, "s")
    card = json.loads((exported.path / "metadata.json").read_text())
    assert card["provenance"]["flips"]["used"] is False and card["provenance"]["mirror_view"] is False
    assert "Trained without left-right flips" in (exported.path / "README.md").read_text()
