"""VAE scores, thresholds and residual maps; the hybrid's detect_anomaly."""

import math

import numpy as np
import pytest
import torch

from app.checkpoints import rebuild_phase
from app.data import phase_images, split_rows
from app.evaluate import evaluate_run
from app.export import export_run
from app.training import load_run_phase, train
from models.hybrid import HybridConfig, HybridPhase, NormalTail, combine
from models.vae import (PATCH_NEIGHBOURS, VIEWS, ConvVAE, MultiViewScore, ReconstructionScore, VAEConfig, VAEPhase,
                        _gaussian_window, patch_distance, ssim_map)

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


class _FixedParts(ReconstructionScore):
    """A scorer whose raw score and latent code are read off the image's first pixels."""

    def raw(self, images):
        return images[:, 0, 0, 0], images[:, 0, 0, 1:3]


def test_a_score_is_compared_with_the_normals_of_its_own_kind_leaving_itself_out() -> None:
    # Two kinds of normals: A (codes near 0) reconstruct poorly (1.0), B (codes near 10) well (0.1).
    rng = np.random.default_rng(0)
    normals = torch.zeros(40, 1, 16, 16)
    normals[:20, 0, 0, 0] = torch.from_numpy(rng.uniform(0.9, 1.1, 20)).float()
    normals[20:, 0, 0, 0] = torch.from_numpy(rng.uniform(0.09, 0.11, 20)).float()
    normals[:20, 0, 0, 1:3] = torch.from_numpy(rng.normal(0, 0.5, (20, 2))).float()
    normals[20:, 0, 0, 1:3] = torch.from_numpy(rng.normal(10, 0.5, (20, 2))).float()
    anomaly = torch.zeros(1, 1, 16, 16)
    anomaly[0, 0, 0, :3] = torch.tensor([0.3, 10.0, 10.0])  # a B image three times as bad as B normals
    scorer = _FixedParts(ConvVAE(16, 2, 4), "mse", neighbours=5)
    scorer.fit_reference(normals)
    assert float(scorer.raw(anomaly)[0]) < float(scorer.raw(normals[:20])[0].min())  # raw: below every A normal
    assert float(scorer(anomaly)) > 2.5 > float(scorer(normals).max())  # compared with B: above every normal
    # Each reference image is scored against the others (leave one out), not against itself.
    first = normals[:1]
    distance = ((normals[1:, 0, 0, 1:3] - first[0, 0, 0, 1:3]) ** 2).sum(1)
    others = normals[1:, 0, 0, 0][distance.argsort()[:5]]
    assert float(scorer(first)) == pytest.approx(float(first[0, 0, 0, 0] / others.mean()), rel=1e-5)


def test_a_focused_score_averages_the_worst_pixels() -> None:
    torch.manual_seed(0)
    vae = ConvVAE(32, 4, 8).eval()
    images = torch.rand(3, 1, 32, 32)
    whole, worst = ReconstructionScore(vae, "mse"), ReconstructionScore(vae, "mse", area=0.1)
    with torch.no_grad():
        error = whole.maps(images).flatten(1)
        expected = error.topk(103, dim=1).values.mean(1)  # ceil(0.1 * 1024) pixels
        assert torch.allclose(worst(images), expected, rtol=1e-5) and (worst(images) > whole(images)).all()
    with pytest.raises(ValueError, match="area"):
        ReconstructionScore(vae, "mse", area=0.0)


def test_a_noise_level_per_image_weighs_each_image_against_its_own_error() -> None:
    """Halving one image's error gains as much as halving another's with a sigma per image,
    however unequal their errors; with one sigma for the batch the worse image decides."""
    from models.vae import reconstruction_nll

    errors = torch.tensor([0.01, 0.1]).repeat_interleave(64).view(2, 64)  # the second image: 10x the error

    def gain(decoder: str, k: int) -> float:
        better = errors.clone()
        better[k] /= 2
        return float(reconstruction_nll(errors**2, decoder) - reconstruction_nll(better**2, decoder))

    assert gain("per-image", 0) == pytest.approx(gain("per-image", 1), rel=1e-5)
    assert gain("per-image", 0) == pytest.approx(64 * np.log(2) / 2, rel=1e-5)  # D/2 log 2, averaged over 2 images
    assert gain("calibrated", 1) > 20 * gain("calibrated", 0)
    assert float(reconstruction_nll(errors**2, "per-image")) == pytest.approx(
        float(np.mean([64 * (0.5 * np.log(e**2) + 0.5) for e in (0.01, 0.1)])), rel=1e-5)


def test_the_calibrated_decoder_is_the_gaussian_likelihood_at_the_batch_noise_level() -> None:
    torch.manual_seed(0)
    phase = VAEPhase(VAEConfig(image_size=16, latent_dim=4, base_channels=4, kl_warmup_epochs=1), ["normal"])
    phase.model.eval()  # the mean code: the same reconstruction as below
    images = torch.rand(6, 1, 16, 16)
    loss = phase.step((images, torch.zeros(6)))["loss"]
    recon, mu, logvar = phase.model(images)
    mse = float(((recon - images) ** 2).mean())
    kl = float((-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean())
    assert float(loss) == pytest.approx(256 * 0.5 * np.log(mse) + 256 / 2 + kl, rel=1e-4)
    with pytest.raises(ValueError, match="unknown VAE decoder"):
        VAEPhase(VAEConfig(decoder="bernoulli"), ["normal"])
    with pytest.raises(ValueError, match="scored area"):
        VAEPhase(VAEConfig(area=2.0), ["normal"])
    with pytest.raises(ValueError, match="neighbours"):
        VAEPhase(VAEConfig(neighbours=-1), ["normal"])


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
    residuals = demo_ws.run_dir("a-vae-ssim") / "evaluation" / "residuals_test.png"
    assert residuals in result.plots and residuals.stat().st_size > 10_000
    assert "residuals_test.png" in result.report.read_text()


def test_test_time_augmentation_of_an_anomaly_scorer_is_refused_with_what_to_do(demo_ws, vae_runs) -> None:
    # Its threshold was fitted on scores of unmirrored images: mirrored ones would not match it.
    from core.errors import TrainingError

    with pytest.raises(TrainingError, match="for classifier runs.*without --tta"):
        evaluate_run(demo_ws, "a-vae-mse", "test", tta=True)


def test_an_ssim_vae_exports_to_onnx(demo_ws, vae_runs) -> None:
    assert export_run(demo_ws, "a-vae-ssim").max_abs_diff <= 1e-4


def test_how_the_vae_scores_is_chosen_on_validation_and_travels_with_the_run(demo_ws, vae_runs) -> None:
    calibration = demo_ws.run_metadata("a-vae-ssim")["calibration"]
    trials = calibration["val_auroc_by_choice"]
    chosen = "all views" if "views" in calibration else f"area {calibration['area']:g}, neighbours {calibration['neighbours']}"
    assert len(trials) == 5 and "all views" in trials and max(trials.values()) == trials[chosen]
    # Early stopping watched the scores as they are computed after training (all but the
    # patch view, which finish() adds once): the best epoch's figure is the best weights'.
    from core.metrics import anomaly_auroc

    history = demo_ws.run_metadata("a-vae-ssim")["history"]
    best = load_run_phase(demo_ws, "a-vae-ssim")
    val_rows = [r for r in split_rows(demo_ws, "demo", "val") if r["labeled"]]
    labels = np.array([r["label"] != "normal" for r in val_rows]).astype(int)
    watched = best.validation_scores(torch.from_numpy(phase_images(demo_ws, best, val_rows)), labels)
    assert max(h["val_auroc"] for h in history) == pytest.approx(anomaly_auroc(labels, watched), abs=1e-4)
    # Set by hand: no choice; the reference (validation normals) is kept in the checkpoint
    # and in the exported graph, and the hybrid scores with it when asked to score as the run does.
    train(demo_ws, "demo", "vae", run="a-vae-ref", epochs=1, latent_dim=8, area=0.1, neighbours=5, **TINY)
    phase = load_run_phase(demo_ws, "a-vae-ref")
    val = [r for r in split_rows(demo_ws, "demo", "val") if r["labeled"]]
    assert (phase.area, phase.neighbours, phase.views) == (0.1, 5, False)
    assert len(phase.reference["scores"]) == sum(r["label"] == "normal" for r in val)
    assert list(demo_ws.run_metadata("a-vae-ref")["calibration"]["val_auroc_by_choice"]) == ["area 0.1, neighbours 5"]
    assert export_run(demo_ws, "a-vae-ref").max_abs_diff <= 1e-4
    sup = train(demo_ws, "demo", "supervised", run="a-sup-ref", epochs=1, pretrained=False, **TINY)
    train(demo_ws, "demo", "hybrid", run="a-hyb-ref", supervised_run=sup.run, vae_run="a-vae-ref", vae_scoring="run")
    hybrid = load_run_phase(demo_ws, "a-hyb-ref")
    images = torch.from_numpy(phase_images(demo_ws, phase, val))
    with torch.no_grad():
        assert torch.allclose(hybrid.model.vae_scorer(images), phase.predict(images))
    # By default the hybrid's VAE part looks through every view, whatever the run chose:
    # its job is the anomalies nobody labeled. It survives a reload and the ONNX export.
    train(demo_ws, "demo", "hybrid", run="a-hyb-views", supervised_run=sup.run, vae_run="a-vae-ref")
    views = load_run_phase(demo_ws, "a-hyb-views")
    assert isinstance(views.model.vae_scorer, MultiViewScore)
    normals = sum(r["label"] == "normal" for r in val)
    assert views.model.vae_scorer.patch == PATCH_NEIGHBOURS and len(views.model.vae_scorer.patch_codes) == normals
    with torch.no_grad():
        assert torch.allclose(views.model.vae_scorer(images), phase.scorer(views=True)(images))
    assert export_run(demo_ws, "a-hyb-views").max_abs_diff <= 1e-3
    # A VAE run from before multi-view scores keeps no pooled errors: the hybrid says so and
    # scores as the run chose.
    older = load_run_phase(demo_ws, "a-vae-ref")
    for key in ("patch_codes", "patch_features"):  # a run from before the patch view: all views but that one
        del older.reference[key]
    assert older.scorer(views=True).patch == 0
    del older.reference["area_scores"]
    with pytest.raises(ValueError, match="train the VAE again"):
        older.scorer(views=True)
    fallback = HybridPhase(HybridConfig(), views.classes)
    fallback.attach(load_run_phase(demo_ws, sup.run), older)
    assert fallback.config.vae_scoring == "run" and not isinstance(fallback.model.vae_scorer, MultiViewScore)
    # A hybrid saved then has no vae_scoring in its configuration: it reloads saying "run", as it scores.
    payload = torch.load(demo_ws.run_dir("a-hyb-ref") / "best.pt", map_location="cpu", weights_only=True)
    del payload["config"]["vae_scoring"]
    assert rebuild_phase(payload).config.vae_scoring == "run"
    assert load_run_phase(demo_ws, "a-hyb-views").config.vae_scoring == "views"


def test_a_multi_view_score_takes_the_most_unusual_view_among_normals() -> None:
    torch.manual_seed(0)
    vae = ConvVAE(16, 2, 4).eval()
    normals = torch.rand(30, 1, 16, 16) * 0.2 + 0.4
    multi = MultiViewScore(vae, "mse", ((1.0, 0), (0.1, 0), (1.0, 5)))
    multi.fit_reference(normals)
    spot = normals[:1].clone()
    spot[..., 4:7, 4:7] = 1.0  # a small bright lesion: the worst tenth sees it before the whole image
    with torch.no_grad():
        views = multi.view_scores(spot)[0]
        p = torch.stack([tail(views[k : k + 1]) for k, tail in enumerate(multi.tails)])
        assert float(multi(spot)) == pytest.approx(-math.log(max(float(p.min()), 1e-30)), rel=1e-5)
        assert float(multi(spot)) > float(multi(normals).max())
        # Each view alone is a ReconstructionScore with the same reference.
        single = ReconstructionScore(vae, "mse", area=0.1)
        assert float(views[1]) == pytest.approx(float(single(spot)), rel=1e-5)
    with pytest.raises(ValueError, match="two reference normals"):
        MultiViewScore(vae, "mse").fit_reference(normals[:1])
    with pytest.raises(ValueError, match="views"):
        MultiViewScore(vae, "mse", ((0.0, 0),))


def bones(count: int, generator: torch.Generator, broken: bool = False) -> torch.Tensor:
    """Bright vertical bars at random places on a dark field; ``broken``: a thin dark line across each."""
    out = torch.full((count, 1, 32, 32), 0.1)
    for i in range(count):
        c = int(torch.randint(9, 23, (1,), generator=generator))
        out[i, :, :, c - 4 : c + 4] = 0.8
        if broken:
            y = int(torch.randint(8, 24, (1,), generator=generator))
            out[i, :, y : y + 2, c - 4 : c + 4] = 0.2
    return (out + 0.02 * torch.randn(out.shape, generator=generator)).clamp(0, 1)


def test_the_patch_view_sees_a_thin_break_that_no_reconstruction_view_sees() -> None:
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    vae = ConvVAE(32, 4, 8).eval()  # untrained: its reconstructions are no help, its first block still sees edges
    multi = MultiViewScore(vae, "mse", VIEWS, patch=PATCH_NEIGHBOURS)
    multi.fit_reference(bones(40, generator))
    images = torch.cat([bones(20, generator), bones(20, generator, broken=True)])
    labels = [0] * 20 + [1] * 20
    with torch.no_grad():
        views, scores = multi.view_scores(images), multi(images)
    assert views.shape == (40, len(VIEWS) + 1)
    assert all(roc_auc_score(labels, views[:, k]) < 0.6 for k in range(len(VIEWS)))
    assert roc_auc_score(labels, views[:, -1]) > 0.9 and roc_auc_score(labels, scores) > 0.75
    # Its heat map (shown under the residuals) peaks where the image scores: at the break.
    with torch.no_grad():
        maps = multi.patch_maps(images)
    assert maps.shape == images.shape
    rows = maps[20:, 0].amax(dim=2).argmax(dim=1)  # the row of each broken bar's hottest point
    breaks = (images[20:, 0] < 0.45).float().sum(dim=2).argmax(dim=1)  # the row of its dark line
    assert ((rows - breaks).abs() <= 3).float().mean() >= 0.8
    with pytest.raises(ValueError, match="local features of at least two"):
        MultiViewScore(vae, "mse", VIEWS, patch=3).use_reference(torch.zeros(5, 4), torch.zeros(3, 5), (1.0, 0.1, 0.03))


def test_the_patch_distance_skips_the_image_itself_in_the_bank() -> None:
    torch.manual_seed(0)
    features, codes = torch.rand(4, 9, 3), torch.rand(4, 2)
    alone = patch_distance(features, codes, features, codes, 3)
    assert (alone > 0).all()  # each image is compared with the three others, not with itself
    twice = patch_distance(features, codes + 0.01, features, codes, 1)  # its own copy is the nearest code
    assert torch.allclose(twice, torch.zeros(4), atol=1e-3)


def test_detect_anomaly_says_what_fired(demo_ws, vae_runs) -> None:
    sup = train(demo_ws, "demo", "supervised", run="a-sup", epochs=2, pretrained=False, **TINY)
    train(demo_ws, "demo", "hybrid", run="a-hyb", supervised_run=sup.run, vae_run="a-vae-ssim")
    hybrid = load_run_phase(demo_ws, "a-hyb")
    row = next(r for r in split_rows(demo_ws, "demo", "test") if r["labeled"])
    image = phase_images(demo_ws, hybrid, [row])[0, 0]  # (H, W)
    finding = hybrid.detect_anomaly(image)
    _, p_known, p_unknown = hybrid.model.parts(torch.from_numpy(image)[None, None])
    assert (finding.known_part, finding.unknown_part) == pytest.approx((1 - float(p_known), 1 - float(p_unknown)))
    assert finding.predicted_class in hybrid.classes and 0 <= finding.confidence <= 1
    # The confidence is the supervised run's own (calibrated) probability, after a reload too.
    alone = load_run_phase(demo_ws, sup.run).predict(torch.from_numpy(image)[None, None])[0]
    assert finding.confidence == pytest.approx(float(alone.max()), abs=1e-5)
    assert finding.predicted_class == hybrid.classes[int(alone.argmax())]
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


def test_the_hybrid_adds_up_evidence_that_each_part_holds_a_little_of() -> None:
    rng = np.random.default_rng(2)
    n = 2000
    tail = NormalTail(0)
    tail.fit(torch.from_numpy(rng.normal(0, 1, 2000)).float())

    def p(values: np.ndarray) -> np.ndarray:
        return tail(torch.from_numpy(values).float()).numpy().astype(float)

    from sklearn.metrics import roc_auc_score

    labels = [0] * n + [1] * n
    clf = np.concatenate([rng.normal(0, 1, n), rng.normal(1, 1, n)])  # a subtle finding both parts half see
    vae = np.concatenate([rng.normal(0, 1, n), rng.normal(1, 1, n)])
    alone = max(roc_auc_score(labels, clf), roc_auc_score(labels, vae))
    assert roc_auc_score(labels, combine(p(clf), p(vae), 0.5)) > alone + 0.03
    # Calibrated among normals: at most about a fraction a score above 1 - a (never more).
    normal = combine(rng.uniform(size=100_000), rng.uniform(size=100_000), 0.8)
    for a in (0.01, 0.05, 0.2):
        assert a / 2.5 < float((normal >= 1 - a).mean()) <= a


def test_the_hybrid_score_is_the_same_in_numpy_and_torch_at_every_weight() -> None:
    rng = np.random.default_rng(3)
    pk, pu = rng.uniform(1e-9, 1, 50), rng.uniform(1e-9, 1, 50)
    for w in (0.1, 0.5, 0.5004, 0.8):
        expected = combine(pk, pu, w)
        got = combine(torch.from_numpy(pk).float(), torch.from_numpy(pu).float(), torch.tensor(w))
        assert np.isfinite(expected).all() and np.allclose(got.numpy(), expected, atol=1e-5)


def test_all_views_asked_for_with_one_normal_in_validation_score_the_whole_image() -> None:
    torch.manual_seed(0)
    phase = VAEPhase(VAEConfig(image_size=16, latent_dim=2, base_channels=4, views=True), ["normal", "tumor"])
    images = torch.rand(5, 1, 16, 16)
    fitted = phase.finish(images, torch.tensor([0, 1, 1, 1, 1]))
    assert list(fitted["val_auroc_by_choice"]) == ["area 1, neighbours 0"] and not phase.views
    fitted = phase.finish(images, torch.tensor([0, 0, 1, 1, 1]))
    assert list(fitted["val_auroc_by_choice"]) == ["all views"] and phase.views
    assert isinstance(phase.scorer(), MultiViewScore)
