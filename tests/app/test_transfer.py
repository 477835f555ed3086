"""The transfer phase: two stages, temperature scaling, Grad-CAM, export."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from app.checkpoints import load_checkpoint
from app.evaluate import evaluate_run
from app.export import export_run
from app.training import load_run_phase, train
from models.supervised import TEMPERATURES


@pytest.fixture(scope="module")
def transfer_run(demo_ws):
    return train(demo_ws, "demo", "transfer", run="t-transfer", epochs=3, frozen_epochs=1, image_size=32,
                 batch_size=16, pretrained=False)


def test_the_body_stays_frozen_in_stage_one(demo_ws) -> None:
    from models import create_phase

    phase = create_phase("transfer", ["normal", "tumor"], pretrained=False, frozen_epochs=2)
    phase.start_epoch(0)
    assert not any(p.requires_grad for p in phase.model.layer4.parameters())
    assert all(p.requires_grad for p in phase.model.get_classifier().parameters())
    assert not any(p.requires_grad for p in phase.model.layer2.parameters())
    phase.start_epoch(2)
    assert all(p.requires_grad for p in phase.model.layer4.parameters())
    lrs = [g["lr"] for g in phase.param_groups()]
    assert lrs[1] < lrs[0], "the last block fine-tunes at a lower rate"


def test_training_calibrates_on_validation(demo_ws, transfer_run) -> None:
    meta = demo_ws.run_metadata("t-transfer")
    calibration = meta["calibration"]
    assert 0.05 <= calibration["temperature"] <= 20
    assert calibration["val_nll_after"] <= calibration["val_nll_before"], "what scaling minimizes never rises"
    assert {"val_ece_before", "val_ece_after", "val_mce_before", "val_mce_after"} <= set(calibration)
    # Trained with class weights on uneven classes: the bias is the log of the training split's
    # shares (the loop passes them to finish; see test_training for balance settings).
    from app.data import split_rows

    labels = [r["label"] for r in split_rows(demo_ws, "demo", "train") if r["labeled"]]
    classes = meta["classes"]
    shares = np.array([labels.count(c) for c in classes]) / sum(labels.count(c) for c in classes)
    assert calibration["bias"] == pytest.approx((np.log(shares) - np.log(shares).mean()).tolist(), abs=1e-5)
    assert all(f"{c} {s:.1%}" in calibration["bias_from"] for c, s in zip(classes, shares))
    assert load_checkpoint(transfer_run.path / "best.pt")["extra"]["temperature"] == calibration["temperature"]
    assert load_run_phase(demo_ws, "t-transfer").temperature == calibration["temperature"]


def test_evaluation_explains_with_gradcam_and_export_keeps_the_temperature(demo_ws, transfer_run) -> None:
    result = evaluate_run(demo_ws, "t-transfer", "test")
    gradcam = demo_ws.run_dir("t-transfer") / "evaluation" / "gradcam_test.png"
    assert gradcam in result.plots and gradcam.stat().st_size > 5000
    assert "calibration" in result.metrics
    report = result.report.read_text()
    temperature = result.metrics["calibration"]["temperature"]
    assert "## Calibration (the temperature fitted on the validation split)" in report and f"| temperature | {temperature:.3f} |" in report
    assert "| val_ece_after |" in report and "| bias |" in report
    assert export_run(demo_ws, "t-transfer").max_abs_diff <= 1e-4


def test_gradcam_maps_follow_the_declared_layer(demo_ws) -> None:
    from core.errors import WorkbenchError
    from app.explain import gradcam_overlays

    sup = train(demo_ws, "demo", "supervised", run="g-sup", epochs=1, image_size=32, batch_size=16, pretrained=False)
    assert gradcam_overlays(demo_ws, sup.run, per_class=1).images == 5
    vae = train(demo_ws, "demo", "vae", run="g-vae", epochs=1, image_size=32)
    with pytest.raises(WorkbenchError, match="no Grad-CAM"):
        gradcam_overlays(demo_ws, vae.run)


def test_temperature_scaling_cools_an_overconfident_model() -> None:
    from models import create_phase

    phase = create_phase("transfer", ["normal", "tumor"], pretrained=False)

    class Overconfident(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            # Right 70% of the time, always with logits 8 apart: far too sure.
            right = images.flatten(1)[:, 0] < 0.7
            return torch.stack([torch.where(right, 4.0, -4.0), torch.where(right, -4.0, 4.0)], 1)

    phase.model = Overconfident()
    images = torch.linspace(0, 1, 200).reshape(200, 1, 1, 1)
    result = phase.finish(images, torch.zeros(200, dtype=torch.long))
    assert result["temperature"] > 2 and result["val_nll_after"] < result["val_nll_before"]
    assert result["val_ece_after"] < result["val_ece_before"]


def test_every_classifier_puts_back_the_class_proportions_that_class_weights_took_out() -> None:
    """A model trained with balanced class weights is too ready to call the rare class: the
    bias, the log of the training split's class shares, puts the proportions back (argmax
    accuracy up), the ranking stays; only the temperature is fitted on validation."""
    from sklearn.metrics import roc_auc_score

    from models import create_phase
    from models.supervised import prior_bias

    phase = create_phase("supervised", ["normal", "tumor"], pretrained=False)
    generator = torch.Generator().manual_seed(0)
    targets = (torch.rand(400, generator=generator) < 0.2).long()  # one tumour in five
    trained = [800, 200]  # the training split's images per class: the same proportions

    class Balanced(torch.nn.Module):  # log-likelihood ratios: what balanced weights teach
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            margin = images.flatten(1)[:, 0]
            return torch.stack([-margin / 2, margin / 2], 1)

    phase.model = Balanced()
    images = (targets.float() * 2 - 1 + torch.randn(400, generator=generator) * 1.2).reshape(400, 1, 1, 1)
    before = phase.predict(images)
    result = phase.finish(images, targets, train_counts=trained)
    after = phase.predict(images)
    assert result["bias"] == pytest.approx([math.log(2), -math.log(2)]), "log 0.8 - log 0.2, centred"
    assert "normal 80.0%, tumor 20.0%" in result["bias_from"]
    accuracy = lambda p: float((p.argmax(1) == targets).float().mean())  # noqa: E731
    assert accuracy(after) > accuracy(before) + 0.05
    assert roc_auc_score(targets, after[:, 1]) == pytest.approx(roc_auc_score(targets, before[:, 1]))
    assert result["val_nll_after"] < result["val_nll_before"]
    assert phase.extra() == {"temperature": result["temperature"], "bias": result["bias"]}
    exported = phase.export_module()(images)
    assert torch.allclose(exported, after, atol=1e-6), "the exported graph applies the same calibration"
    # The bias comes from the training split, not from validation: a validation split whose
    # proportions differ within chance (a handful of one class) moves the temperature only.
    some = torch.cat([torch.nonzero(targets == 1)[:3, 0], torch.nonzero(targets == 0)[:27, 0]])
    few = phase.finish(images[some], targets[some], train_counts=trained)
    assert few["bias"] == pytest.approx(result["bias"]) and few["temperature"] != result["temperature"]
    # A training split sampled apart from the rest (PneumoniaMNIST's subset): validation holds the
    # classes in other proportions beyond chance, so its shares are the prior for new images.
    more = torch.cat([torch.nonzero(targets == 1)[:60, 0], torch.nonzero(targets == 0)[:100, 0]])
    shifted = phase.finish(images[more], targets[more], train_counts=trained)
    assert shifted["bias"] == pytest.approx([math.log(100 / 60) / 2, -math.log(100 / 60) / 2], abs=1e-5)
    assert "the validation split's class shares (normal 62.5%, tumor 37.5%)" in shifted["bias_from"]
    assert "training split's (normal 80.0%, tumor 20.0%) beyond chance" in shifted["bias_from"]
    assert prior_bias([90, 10, 0]).tolist() == pytest.approx((torch.log(torch.tensor([90, 10, 1]) / 101)
                                                            - torch.log(torch.tensor([90, 10, 1]) / 101).mean()).tolist())
    # Trained on the data's own proportions (no class weights, no resampling): nothing to put back.
    plain = phase.finish(images, targets)
    assert plain["bias"] is None and "bias_from" not in plain and plain["temperature"] != 1.0
    assert phase.finish(images[:0], targets[:0])["skipped"] and phase.temperature == 1.0
    # Wild logits (a barely trained model: hundreds, often wrong) would need a temperature
    # past any sane one: the model is left as it is.
    wild = phase.finish(images * 1000, targets, train_counts=trained)
    assert "cannot calibrate" in wild["skipped"] and (phase.temperature, phase.bias) == (1.0, None)
    # Every validation image right by a margin: the log-loss has no minimum (it falls as the
    # temperature goes to 0). The temperature is set so the mean top probability is the
    # accuracy 400 of 400 right lets one expect, (400 + 1) / (400 + 2), not run off.
    margins = (targets.float() * 2 - 1).reshape(400, 1, 1, 1) * 3
    separated = phase.finish(margins, targets)
    assert "skipped" not in separated and "400 of 400" in separated["matched"] and phase.bias is None
    top = phase.predict(margins).max(1).values.mean()
    assert float(top) == pytest.approx(401 / 402, abs=1e-4) and phase.temperature == pytest.approx(0.5, rel=0.01)
    # The same with the training proportions' bias: matched with the bias applied.
    phase.finish(margins, targets, train_counts=trained)
    assert float(phase.predict(margins).max(1).values.mean()) == pytest.approx(401 / 402, abs=1e-4)
    assert phase.bias == pytest.approx(result["bias"])
    # One normal image the model calls a tumour by a hair, which the held bias puts right: every
    # image is right once calibrated, but the model alone errs, so the log-loss has a minimum
    # (the hair grows as the temperature falls), and the temperature is fitted there.
    hair = (targets.float() * 2 - 1).reshape(400, 1, 1, 1) * 3
    hair[torch.nonzero(targets == 0)[0, 0]] = 0.2
    fitted = phase.finish(hair, targets, train_counts=trained)
    assert not {"skipped", "matched"} & set(fitted) and TEMPERATURES[0] < phase.temperature < 1.0
    assert bool((phase.predict(hair).argmax(1) == targets).all()), "the bias puts it right"
    # One image wrong: the log-loss has a minimum again (the wrong image's loss grows as the
    # temperature falls), and that temperature is fitted.
    margins[targets.argmax()] = -1.0
    one_wrong = phase.finish(margins, targets, train_counts=trained)
    assert not {"skipped", "matched"} & set(one_wrong)
    assert TEMPERATURES[0] < phase.temperature < 1.0 and one_wrong["val_nll_after"] < one_wrong["val_nll_before"]
    # Asked for the temperature alone (the training split's proportions are not the clinic's):
    # no bias, and no decision changes.
    phase.config = dataclasses.replace(phase.config, calibration="temperature")
    alone = phase.finish(images, targets, train_counts=trained)
    assert alone["bias"] is None and alone["temperature"] != 1.0
    assert torch.equal(phase.predict(images).argmax(1), before.argmax(1))
    phase.config = dataclasses.replace(phase.config, calibration="none")
    assert phase.finish(images, targets, train_counts=trained)["skipped"] and (phase.temperature, phase.bias) == (1.0, None)
    assert torch.allclose(phase.predict(images), before)
    with pytest.raises(ValueError, match="calibration"):
        create_phase("supervised", ["normal", "tumor"], pretrained=False, calibration="platt")
