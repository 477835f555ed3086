"""CLAHE, strong augmentation and test-time augmentation."""

import numpy as np
import pytest
import torch

from app.data import clahe, split_rows
from core.errors import TrainingError
from app.evaluate import evaluate_run
from app.training import _augment, train


def test_clahe_raises_local_contrast_and_stays_in_range() -> None:
    rng = np.random.default_rng(0)
    # A faint structure on a dim background: what CLAHE is for.
    image = 0.3 + 0.02 * rng.random((64, 64)).astype(np.float32)
    image[20:40, 20:40] += 0.03
    out = clahe(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    inside, outside = out[20:40, 20:40].mean(), out[:15, :15].mean()
    assert inside - outside > 5 * 0.03, "the faint square stands out after equalization"


def test_strong_augmentation_is_per_image_seeded_and_in_range() -> None:
    images = torch.rand(8, 1, 32, 32)
    a = _augment(images, torch.Generator().manual_seed(3), "strong")
    b = _augment(images, torch.Generator().manual_seed(3), "strong")
    c = _augment(images, torch.Generator().manual_seed(4), "strong")
    assert a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    # Per image, not one change for the batch: the same image twice comes out two ways.
    twins = _augment(images[:1].repeat(2, 1, 1, 1), torch.Generator().manual_seed(5), "strong")
    assert not torch.allclose(twins[0], twins[1])
    assert torch.equal(_augment(images, torch.Generator(), "none"), images)


def test_strong_augmentation_of_volumes_turns_them_in_3d_and_keeps_the_position_code() -> None:
    from app.training import _rotation

    turns = _rotation(torch.deg2rad(torch.tensor([[10.0, -7.0, 4.0], [0.0, 0.0, 0.0]])))
    assert torch.allclose(turns @ turns.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(turns[1], torch.eye(3)) and torch.allclose(torch.linalg.det(turns), torch.ones(2))
    cube = torch.zeros(4, 1, 16, 16, 16)
    cube[:, :, 4:12, 6:10, 5:11] = 1.0  # a block, so that a turn shows in every plane
    position = torch.full_like(cube, 5 / 13)  # models/cube3d.py: the second channel holds the position code
    out = _augment(torch.cat([cube, position], dim=1), torch.Generator().manual_seed(0), "strong")
    assert out.shape == (4, 2, 16, 16, 16) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert torch.allclose(out[:, 1], position[:, 0], atol=1e-6), "the position code survives"
    moved = [float((out[k, 0] - cube[k, 0]).abs().mean()) for k in range(4)]
    assert min(moved) > 0.01 and len({round(m, 4) for m in moved}) == 4  # each cube changed its own way
    # Depth moves too: a turn about an in-plane axis tilts the block across slices.
    assert not torch.allclose(out[:, 0].sum(dim=(2, 3)), cube[:, 0].sum(dim=(2, 3)), atol=0.5)


def test_an_unknown_augmentation_is_refused_before_any_work(demo_ws) -> None:
    with pytest.raises(TrainingError, match="Unknown augmentation 'wild'"):
        train(demo_ws, "demo", "supervised", run="t-aug-bad", epochs=1, pretrained=False, augment="wild")


def test_clahe_and_strong_augmentation_train_and_evaluate_with_tta(demo_ws) -> None:
    run = train(demo_ws, "demo", "supervised", run="t-clahe", epochs=1, pretrained=False, image_size=32,
                batch_size=16, clahe=True, augment="strong")
    assert demo_ws.run_metadata(run.run)["config"]["clahe"] is True
    plain = evaluate_run(demo_ws, run.run, "test").metrics
    mirrored = evaluate_run(demo_ws, run.run, "test", tta=True).metrics
    assert plain["tta"] is False and mirrored["tta"] is True
    assert plain["n"] == mirrored["n"] == len([r for r in split_rows(demo_ws, "demo", "test") if r["labeled"]])
    # The anomaly operating point comes from a validation threshold, reported on test.
    assert 0.0 <= plain["threshold_at_val_threshold"] <= 1.0
    assert 0.0 <= plain["sensitivity_at_val_threshold"] <= 1.0


def test_grad_cam_finds_its_layer_on_any_timm_backbone(demo_ws) -> None:
    from app.training import load_run_phase

    train(demo_ws, "demo", "supervised", run="t-r18", epochs=1, pretrained=False, image_size=32, batch_size=16,
          backbone="resnet18")
    phase = load_run_phase(demo_ws, "t-r18")
    assert phase.gradcam_target() == phase.gradcam_target(224) == "layer4"  # EfficientNet's conv_head is not there
    # At 64 px layer4's map is 2 x 2 (broad stripes): the deepest stage with at least 7 x 7 cells instead
    assert phase.gradcam_target(64) == "layer2" and phase.gradcam_target(32) == "layer1"
    result = evaluate_run(demo_ws, "t-r18", "test")
    assert demo_ws.run_dir("t-r18") / "evaluation" / "gradcam_test.png" in result.plots
