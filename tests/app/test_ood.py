"""The out-of-distribution gate: fitted on training images, thresholded on validation, routing by combination."""

import numpy as np
import pytest

from app.ood import Gate, fit_gate, load_gate, save_gate
from app.predict import Item, Model, Prediction, _gate, route


def phantoms(n: int, seed: int, size: int = 32) -> np.ndarray:
    """Smooth bright discs on a dark background, each a little different: a made 'training set'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.2, 0.3)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.float32) * rng.uniform(0.6, 0.9)
        images.append(np.clip(disc + rng.normal(0, 0.03, (size, size)), 0, 1))
    return np.stack(images)[:, None].astype(np.float32)


@pytest.fixture(scope="module")
def gate() -> Gate:
    return fit_gate(phantoms(300, 0), phantoms(200, 1), [("XR", "chest")] * 3 + [("CT", "head")])


def test_about_one_percent_of_images_like_the_training_ones_are_flagged(gate) -> None:
    assert 0.0 < gate.val_flagged <= 0.02
    fresh = gate.distances(phantoms(400, 2))
    assert (fresh > gate.threshold).mean() <= 0.05


def test_images_unlike_the_training_ones_are_flagged(gate) -> None:
    rng = np.random.default_rng(3)
    noise = rng.random((50, 1, 32, 32)).astype(np.float32)
    gradient = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (50, 1, 32, 1))
    inverted = 1.0 - phantoms(50, 4)
    for images in (noise, gradient, inverted):
        assert (gate.distances(images) > gate.threshold).mean() >= 0.95


def tinted(images: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    """Grey (N, 1, S, S) images as colour ones whose discs carry ``tint`` (channel means kept near the grey)."""
    return np.clip(np.concatenate([images * t for t in tint], axis=1), 0, 1).astype(np.float32)


def test_a_colour_gate_flags_grey_images_of_the_same_shapes() -> None:
    """A dermoscopy-like model shown a grey image: brightness alone looks familiar, the hue does not."""
    pink = (1.2, 0.8, 1.0)
    gate = fit_gate(tinted(phantoms(300, 0), pink), tinted(phantoms(200, 1), pink), [("XC", "skin")])
    assert (gate.distances(tinted(phantoms(200, 2), pink)) > gate.threshold).mean() <= 0.05
    grey = np.repeat(phantoms(50, 3), 3, axis=1)  # what a colour model reads from a grey file
    assert (gate.distances(grey) > gate.threshold).mean() >= 0.95


def test_the_gate_survives_its_file(gate, tmp_path) -> None:
    save_gate(gate, tmp_path)
    again = load_gate(tmp_path)
    images = phantoms(5, 5)
    assert np.allclose(again.distances(images), gate.distances(images)) and again.seen == gate.seen
    assert load_gate(tmp_path / "none") is None


def _model(run: str, gate: Gate | None) -> Model:
    return Model(run, "supervised", ["normal", "x"], 32, False, ["XR", "CT"], ["chest", "head"], None, None, gate=gate)


def test_routing_needs_the_combination_seen_in_training_and_a_known_region(gate) -> None:
    model = _model("m", gate)
    assert route(Item("a", [], "image2d", "XR", "chest"), [model]) is model
    assert route(Item("b", [], "image2d", "CT", "head"), [model]) is model
    # Each part was seen, but not together: outside.
    assert route(Item("c", [], "image2d", "XR", "head"), [model]) is None
    assert route(Item("d", [], "image2d", "XR", "unknown"), [model]) is None
    assert route(Item("d", [], "image2d", "XR", "unknown"), [model], allow_ood=True) is model
    # A model trained before gates existed routes as it did.
    old = _model("old", None)
    assert route(Item("c", [], "image2d", "XR", "head"), [old]) is old


def test_an_answer_for_an_image_outside_is_withheld_unless_allowed() -> None:
    found = Prediction("a", "XR", "chest", run="m", predicted_class="tumor", confidence=0.98, anomaly_score=0.9,
                       is_anomaly=True, probabilities={"tumor": 0.98})
    _gate(found, 40.0, 12.0, allow_ood=False)
    assert found.outside and found.predicted_class == "" and found.confidence is None and found.is_anomaly is None
    assert "outside what this model was trained on" in found.note and "40.0 > 12.0" in found.note
    kept = Prediction("a", "XR", "chest", run="m", predicted_class="tumor", confidence=0.98)
    _gate(kept, 40.0, 12.0, allow_ood=True)
    assert kept.outside and kept.predicted_class == "tumor"
    inside = Prediction("a", "XR", "chest", run="m", predicted_class="normal", confidence=0.9)
    _gate(inside, 3.0, 12.0, allow_ood=False)
    assert not inside.outside and inside.predicted_class == "normal" and inside.ood_distance == 3.0
