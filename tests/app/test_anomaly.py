"""VAE scores, thresholds and residual maps; the hybrid's detect_anomaly."""

import numpy as np
import pytest
import torch

from app.data import phase_images, split_rows
from app.evaluate import evaluate_run
from app.export import export_run
from app.training import load_run_phase, train
from models.hybrid import NormalTail, combine
from models.vae import ConvVAE, ReconstructionScore, ssim_map, _gaussian_window

TINY = {"image_size": 32, "batch_size": 16}


def test_our_ssim_is_monais() -> None:
    from monai.metrics.regression import compute_ssim_and_cs

    a = torch.rand(3, 1, 32, 32)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    theirs, _ = compute_ssim_and_cs(b, a, 2, [7, 7], [1.5, 1.5])
    assert torch.allclose(ssim_map(b, a, _gaussian_window()), theirs, atol=1e-5)


@pytest.mark.parametrize("kind", ["mse", "l1", "ssim", "kl"])
def test_every_score_ranks_a_corrupted_image_above_itself_and_maps_match_the_image(kind) -> None:
    torch.manual_seed(0)
    scorer = ReconstructionScore(ConvVAE(32, 4, 8).eval(), kind)
    images = torch.rand(2, 1, 32, 32)
    scores = scorer(images)
    assert scores.shape == (2,) and torch.isfinite(scores).all() and (scores >= -1e-6).all()
    assert scorer.maps(images).shape == images.shape
    with pytest.raises(ValueError, match="unknown VAE score 'psnr'"):
        ReconstructionScore(ConvVAE(32, 4, 8), "psnr")


@pytest.fixture(scope="module")
def vae_runs(demo_ws):
    made = {}
    for score, rule in (("ssim", "roc"), ("mse", "percentile")):
        made[score] = train(demo_ws, "demo", "vae", run=f"a-vae-{score}", epochs=2, latent_dim=8, score=score,
                            threshold_rule=rule, **TINY)
    return made


def test_the_vae_threshold_is_fitted_on_validation_and_kept(demo_ws, vae_runs) -> None:
    phase = load_run_phase(demo_ws, "a-vae-mse")
    rows = [r for r in split_rows(demo_ws, "demo", "val") if r["labeled"]]
    scores = phase.predict(torch.from_numpy(phase_images(demo_ws, phase, rows))).numpy()
    normals = scores[[r["label"] == "normal" for r in rows]]
    assert phase.threshold == pytest.approx(float(np.percentile(normals, 95)), rel=1e-5)
    calibration = demo_ws.run_metadata("a-vae-ssim")["calibration"]
    assert calibration["score"] == "ssim" and calibration["threshold_rule"] == "roc"
    assert load_run_phase(demo_ws, "a-vae-ssim").threshold == pytest.approx(calibration["threshold"])


def test_vae_evaluation_shows_residual_maps_and_the_fitted_threshold(demo_ws, vae_runs) -> None:
    result = evaluate_run(demo_ws, "a-vae-ssim", "test")
    assert result.metrics["threshold"] == pytest.approx(load_run_phase(demo_ws, "a-vae-ssim").threshold)
    residuals = demo_ws.run_dir("a-vae-ssim") / "residuals_test.png"
    assert residuals in result.plots and residuals.stat().st_size > 10_000
    assert "residuals_test.png" in result.report.read_text()


def test_an_ssim_vae_exports_to_onnx(demo_ws, vae_runs) -> None:
    assert export_run(demo_ws, "a-vae-ssim").max_abs_diff <= 1e-4


def test_detect_anomaly_says_what_fired(demo_ws, vae_runs) -> None:
    sup = train(demo_ws, "demo", "supervised", run="a-sup", epochs=2, pretrained=False, **TINY)
    train(demo_ws, "demo", "hybrid", run="a-hyb", supervised_run=sup.run, vae_run="a-vae-ssim")
    hybrid = load_run_phase(demo_ws, "a-hyb")
    row = next(r for r in split_rows(demo_ws, "demo", "test") if r["labeled"])
    image = phase_images(demo_ws, hybrid, [row])[0, 0]  # (H, W)
    finding = hybrid.detect_anomaly(image)
    assert finding.anomaly_score == pytest.approx(max(finding.known_part, finding.unknown_part))
    assert finding.predicted_class in hybrid.classes and 0 <= finding.confidence <= 1
    assert finding.threshold == pytest.approx(hybrid.threshold)
    # The same score as the exported graph computes.
    assert finding.anomaly_score == pytest.approx(float(hybrid.predict(torch.from_numpy(image)[None, None])[0]), abs=1e-6)
    flagged, passed = hybrid.detect_anomaly(image, threshold=0.0), hybrid.detect_anomaly(image, threshold=1.01)
    assert flagged.is_anomaly and flagged.fired in ("known", "unknown")
    assert not passed.is_anomaly and passed.fired == "none"


def test_the_normal_tail_is_calibrated_monotone_and_keeps_order_beyond_the_reference() -> None:
    rng = np.random.default_rng(0)
    tail = NormalTail(0)
    tail.fit(torch.from_numpy(rng.normal(size=400).astype(np.float32)))
    fresh = torch.from_numpy(rng.normal(size=4000).astype(np.float32))
    p = tail(fresh)
    for alpha in (0.01, 0.05, 0.2):  # a fresh normal lands below alpha about alpha of the time
        assert abs(float((p <= alpha).float().mean()) - alpha) < alpha * 0.5 + 0.005
    grid = torch.linspace(-5, 12, 500)
    probabilities = tail(grid)
    assert (probabilities[1:] <= probabilities[:-1]).all() and (probabilities > 0).all()
    assert probabilities[-1] < probabilities[-50] < 1 / 401  # past every reference score, still ordered
    one = NormalTail(0)
    one.fit(torch.tensor([0.3]))
    assert torch.isfinite(one(torch.tensor([0.0, 0.3, 5.0]))).all()


def test_the_hybrid_catches_what_the_classifier_vouches_for_and_keeps_its_known_order() -> None:
    """Synthetic parts: the classifier sees known anomalies and calls unknown ones very normal;
    the VAE sees the unknown ones strongly and the known ones weakly."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    n = 600
    known_logodds = {"normal": rng.normal(0, 1, n), "known": rng.normal(2.0, 1, n), "unknown": rng.normal(-1.5, 1, n)}
    vae = {"normal": rng.normal(0, 1, n), "known": rng.normal(0.5, 1, n), "unknown": rng.normal(3.0, 1, n)}
    known_tail, unknown_tail = NormalTail(0), NormalTail(0)
    known_tail.fit(torch.from_numpy(rng.normal(0, 1, 300)).float())
    unknown_tail.fit(torch.from_numpy(rng.normal(0, 1, 300)).float())

    def hybrid(kind: str) -> np.ndarray:
        return combine(known_tail(torch.from_numpy(known_logodds[kind]).float()).numpy(),
                       unknown_tail(torch.from_numpy(vae[kind]).float()).numpy(), 0.8)

    def auroc(scores: dict, kind: str) -> float:
        return roc_auc_score([0] * n + [1] * n, np.concatenate([scores["normal"], scores[kind]]))

    combined = {kind: hybrid(kind) for kind in vae}
    assert auroc(known_logodds, "unknown") < 0.2  # the classifier alone is worse than chance
    assert auroc(combined, "unknown") > 0.9
    assert auroc(combined, "known") > auroc(known_logodds, "known") - 0.03
