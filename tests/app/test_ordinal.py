"""Ordered classes (grades) are recognized and can be trained with an ordinal-aware loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.organize.ordinal import ordered_classes
from app.organize.organizer import organize
from app.state import Kind, read_state
from app.training import train
from models.supervised import squared_emd


@pytest.mark.parametrize("classes, files, expected", [
    (["class_0", "class_1", "class_2", "class_3", "class_4"], ["retinamnist.npz"], True),  # DR grades
    (["class_0", "class_1", "class_2"], ["dermamnist.npz"], False),  # codes, not grades
    (["grade_0", "grade_1", "grade_2", "grade_3"], [], True),
    (["KL0", "KL1", "KL2", "KL3", "KL4"], [], True),
    (["normal", "stage I", "stage II", "stage III"], [], True),
    (["mild", "moderate", "severe"], [], True),
    (["grade_1", "stage_2", "level_3"], [], False),  # three different words
    (["mild", "severe"], [], False),  # two classes: nothing to order
    (["normal", "pneumonia", "tuberculosis"], [], False),
])
def test_grades_are_recognized_and_codes_are_not(classes, files, expected) -> None:
    assert ordered_classes(classes, files) is expected


def test_the_ordinal_loss_costs_more_the_farther_the_grade() -> None:
    target = torch.tensor([0])
    one_off, three_off = torch.tensor([[0.0, 4.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, 4.0]])
    assert squared_emd(three_off, target) > 2 * squared_emd(one_off, target)
    # Cross-entropy alone cannot tell the two apart: the true grade gets the same probability.
    ce = torch.nn.functional.cross_entropy
    assert torch.isclose(ce(one_off, target), ce(three_off, target))
    # Soft targets (mixup) give the same value as their one-hot class.
    assert torch.isclose(squared_emd(one_off, torch.tensor([[1.0, 0, 0, 0]])), squared_emd(one_off, target))


def test_a_graded_file_is_marked_ordinal_and_trains_with_the_loss(ws, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60), ("val", 20), ("test", 10)):
        labels = (np.arange(n) % 3).reshape(n, 1)
        images = (rng.random((n, 28, 28)) * 60 + labels[:, :, None] * 60).astype(np.uint8)  # brighter, higher grade
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(tmp_path / "retinamnist.npz", **arrays)
    organize(ws, tmp_path / "retinamnist.npz", "retina")
    assert read_state(ws.organized_path("retina") / "training_config.json", Kind.TRAINING_CONFIG)["ordinal"] is True
    train(ws, "retina", "supervised", run="graded", backbone="resnet10t", image_size=32, epochs=2, batch_size=16,
          pretrained=False, ordinal=1.0)
    meta = ws.run_metadata("graded")
    assert meta["config"]["ordinal"] == 1.0 and meta["status"] == "complete"
    from core.errors import TrainingError

    with pytest.raises(TrainingError, match="ordinal loss weight must be 0"):
        train(ws, "retina", "supervised", run="bad", epochs=1, pretrained=False, ordinal=-1.0)
