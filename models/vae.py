"""A convolutional VAE that learns what normal looks like.

The anomaly score of an image is how badly it is reconstructed (the model has only
seen normal, or unlabeled and mostly normal, images), measured one of several ways:

- ``mse``: mean squared pixel error;
- ``l1``: mean absolute pixel error;
- ``ssim`` (default): 1 - structural similarity (Gaussian window 7, sigma 1.5), which
  weighs structure over brightness;
- ``kl``: how far the image's latent code lies from the prior N(0, I) (KL divergence):
  unusual images land in unusual places even when they reconstruct well.

Beside these reconstruction views, a multi-view score (MultiViewScore) has a patch view
that compares the image's local features with those of normal images (patch_distance):
what a reconstruction blurs away, a thin finding, it sees.

The decision threshold is fitted on validation after training: a percentile of the
validation normals' scores (95 by default) or the best sensitivity + specificity on
the validation ROC.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.base import Phase, setting
from models.configs import AUGMENT, CLAHE, EPOCHS, image_size_question
from models.registry import register_phase
from models.tails import NormalTail


@dataclass(frozen=True)
class VAEConfig:
    # The latent the benchmark picks on validation (benchmarks/vae_anomaly.py, PneumoniaMNIST, SSIM,
    # 32 px, 30 epochs, calibrated decoder): validation AUROC 94.36 / 94.42 / 94.39 / 93.78 %, test
    # 84.1 / 82.2 / 82.6 / 83.6 % at latent 4 / 16 / 64 / 512: a tie but for 512, 16 by a hair.
    # (With the fixed decoder the size mattered more: test 80.5 / 75.6 / 81.0 / 76.5 %, 64 picked.)
    latent_dim: int = setting(16, help="VAE latent size")
    base_channels: int = 32
    # The reconstruction term. "calibrated": a Gaussian decoder whose variance is the
    # batch's own mean squared error (sigma-VAE, Rybkin et al. 2021), so the KL term
    # weighs as much as the images' real noise allows and reconstructions stay sharp;
    # "per-image": the same with each image's own mean squared error (mixed modalities:
    # see reconstruction_nll); "fixed": the sum of squared errors (variance 1/2), which on
    # [0, 1] images lets the KL term win and blurs every reconstruction into an average shape.
    decoder: str = setting("calibrated", choices=("calibrated", "per-image", "fixed"),
                           help="VAE reconstruction term: noise level calibrated per batch (default, sharp) or per "
                                "image (mixed modalities), or fixed (sum of squares)")
    beta: float = setting(1.0, layer="training", help="VAE: weight of the KL term (warmed up over the first epochs)")
    kl_warmup_epochs: int = 5
    # The dataset's size, not a size of its own: the hybrid combines a VAE and a classifier
    # trained at one image size.
    image_size: int = 64
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    use_unlabeled: bool = True
    # SSIM measured best on PneumoniaMNIST (benchmarks/vae_anomaly.py, chosen on validation):
    # test AUROC 82.2% against 55.7% for MSE, 56.6% L1, 39.0% KL (latent 16, 32 px, 30 epochs,
    # calibrated decoder; with the fixed decoder 74.5 / 40.3 / 41.2 / 43.4%).
    score: str = setting("ssim", layer="post_hoc", choices=("mse", "l1", "ssim", "kl"), help="VAE anomaly score (default ssim)")
    # How the error map becomes one score, and against which normals it is compared
    # (ReconstructionScore): ``area`` the worst fraction of pixels averaged (1: all),
    # ``neighbours`` the nearest validation normals in latent space that the score is
    # divided by (0: none). ``views`` True scores through every view of VIEWS and the patch view at once
    # (MultiViewScore: nothing chosen on anomalies), False through one. None everywhere:
    # chosen on the validation AUROC among AREAS x NEIGHBOURS and all views when validation
    # holds anomalies, else all views. An area or neighbours set by hand means one view.
    area: float | None = setting(None, layer="post_hoc", help="VAE: score the worst fraction of pixels (1: the whole image; default: "
                                            "chosen on validation between 1 and 0.1)")
    neighbours: int | None = setting(None, layer="post_hoc", help="VAE: compare each score with this many look-alike validation normals "
                                                "(0: with none; default: chosen on validation between 0 and 5)")
    views: bool | None = setting(None, layer="post_hoc", help="VAE: score through every view at once (six reconstruction views and the "
                                            "patch view) instead of letting validation choose")
    threshold_rule: str = setting("percentile", layer="post_hoc", choices=("percentile", "roc"),
                                  help="VAE threshold: 95th percentile of validation normals (default) or best "
                                       "validation ROC point (Youden)")
    threshold_percentile: float = 95.0
    clahe: bool = False
    augment: str = "standard"  # none | standard | strong
    flips: str = "auto"  # auto | on | off: left-right flips in the augmentation (app/laterality.py)
    seed: int = 0


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


class ConvVAE(nn.Module):
    def __init__(self, image_size: int = 64, latent_dim: int = 16, base_channels: int = 32) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(f"VAE image size must be a multiple of 16 (got {image_size})")
        c = base_channels
        self.side = image_size // 16
        self.encoder = nn.Sequential(_down(1, c), _down(c, 2 * c), _down(2 * c, 4 * c), _down(4 * c, 8 * c))
        flat = 8 * c * self.side * self.side
        self.to_mu, self.to_logvar = nn.Linear(flat, latent_dim), nn.Linear(flat, latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        self.decoder = nn.Sequential(
            _up(8 * c, 4 * c), _up(4 * c, 2 * c), _up(2 * c, c),
            nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Sigmoid(),
        )
        self.channels = 8 * c

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).flatten(1)
        return self.to_mu(h), self.to_logvar(h).clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(z).view(-1, self.channels, self.side, self.side))

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Local features (N, positions, channels) for the patch view: the first encoder
        block's output (each position sees about 4 x 4 pixels) averaged over 3 x 3
        neighbourhoods, and over larger squares on big images so that at most PATCH_GRID
        positions a side remain (memory and time grow with the square of the positions)."""
        f = F.avg_pool2d(self.encoder[0](x), 3, 1, 1)
        factor = -(-f.shape[-1] // PATCH_GRID)
        if factor > 1:
            f = F.avg_pool2d(f, factor)
        return f.flatten(2).transpose(1, 2)

    def patch_shape(self) -> tuple[int, int]:
        """(positions, channels) of patch_features for this model's image size."""
        side = 8 * self.side  # the first block halves the image (16 * side pixels)
        grid = side // -(-side // PATCH_GRID)
        return grid * grid, self.encoder[0][0].out_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar


SCORES = ("mse", "l1", "ssim", "kl")
DECODERS = ("calibrated", "per-image", "fixed")
AREAS = (1.0, 0.1)  # single views validation chooses among; the first of each when it cannot
NEIGHBOURS = (0, 5)
MIN_LOG_SIGMA = -6.0  # the calibrated decoder's noise floor (sigma >= 0.0025 on [0, 1] images)
THRESHOLD_RULES = ("percentile", "roc")


def reconstruction_nll(squared: torch.Tensor, decoder: str) -> torch.Tensor:
    """The reconstruction term, averaged over the batch, from squared errors (N, pixels).

    "calibrated" and "per-image": the Gaussian negative log-likelihood at the optimal
    sigma, D/2 log(sigma^2) + D/2 per image (constants dropped), sigma^2 being the mean
    squared error of the whole batch or of each image. A shared sigma lets the images
    that reconstruct worst (e.g. noisy CT heads beside clean radiographs) set the noise
    level for all, so the sharp ones are fitted loosely; with a sigma per image each
    image's error counts against its own level (halving any image's error gains as much,
    tests/app/test_anomaly.py). "fixed": the plain sum of squared errors.
    """
    if decoder == "fixed":
        return squared.sum(1).mean()
    mse = squared.mean() if decoder == "calibrated" else squared.mean(1)
    log_sigma = (0.5 * mse.clamp_min(1e-12).log()).clamp_min(MIN_LOG_SIGMA)
    return (squared.shape[1] * log_sigma + squared.sum(1) / (2 * torch.exp(2 * log_sigma))).mean()


def _gaussian_window(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM of single-channel images in [0, 1] (Wang et al. 2004; valid region).

    Written out (not MONAI's) so that it exports to ONNX; a test checks it against MONAI.
    """
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = F.conv2d(a, window), F.conv2d(b, window)
    var_a = F.conv2d(a * a, window) - mu_a**2
    var_b = F.conv2d(b * b, window) - mu_b**2
    cov = F.conv2d(a * b, window) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


SAME_IMAGE = 1e-6  # squared latent distance below which a reference is the image itself
MAX_REFERENCE = 2048  # reference normals kept (evenly spread), bounding memory and time per image

# The patch view (SPADE, Cohen & Hoshen 2020, with the VAE's own first encoder block as the
# feature extractor, as no pretrained network is at hand offline): every position of an
# image's local features is compared with every position of the PATCH_NEIGHBOURS reference
# normals nearest in latent space, and the image scores the largest of its positions'
# nearest-patch distances. A small finding that no normal patch resembles (a fracture line
# across a bone) stands out there, while the reconstruction error, dominated by the blur of
# every edge, barely moves. Measured on the demo (fracture held out, seed 0, VAE trained on
# its normals, test AUROC against all normals / the same kind's normals): fracture 0.99 / 1.00,
# hemorrhage 1.00 / 1.00, infection 0.92 / 1.00, tumour 0.99 / 0.98, where the six
# reconstruction views reach 0.64 / 0.40, 0.90 / 0.85, 0.90 / 0.97, 0.77 / 0.92; 3 neighbours
# scored lower (infection 0.80), the second block's coarser features too (fracture 0.85). On
# PneumoniaMNIST (diffuse opacities, not local structure) it is at chance (0.42-0.51) and the
# whole-image reconstruction error remains the useful view: the multi-view score keeps both.
# Like the reconstruction views against 5 neighbours, the distance is then divided by the
# mean leave-one-out distance of the PATCH_BASELINE reference normals nearest in latent
# space, so that an image is compared with normals of its own kind (noisy CT heads have
# larger distances than clean radiographs): fracture seeds 2 and 0, fractured vs intact
# bones, the patch view alone 1.00 either way, but in the multi-view score 0.44 and 0.69
# raw against 1.00 and 1.00 divided (3 or 10 neighbours: 0.98-1.00).
PATCH_NEIGHBOURS = 10
PATCH_BASELINE = 5
PATCH_REFERENCE = 128  # reference normals whose patch features are kept (evenly spread)
PATCH_GRID = 32  # positions a side at most (patch_features)


def evenly(count: int, most: int) -> torch.Tensor:
    """Indices of at most ``most`` of ``count`` items, evenly spread."""
    return torch.linspace(0, count - 1, min(count, most)).round().long()


def patch_distance(features: torch.Tensor, codes: torch.Tensor, bank_features: torch.Tensor,
                   bank_codes: torch.Tensor, count: int) -> torch.Tensor:
    """Each image's largest nearest-patch distance (N,): see nearest_patch_distances."""
    return nearest_patch_distances(features, codes, bank_features, bank_codes, count).max(dim=1).values


def nearest_patch_distances(features: torch.Tensor, codes: torch.Tensor, bank_features: torch.Tensor,
                            bank_codes: torch.Tensor, count: int) -> torch.Tensor:
    """How far each position of each image is from its nearest normal patch (N, P): the
    image's ``features`` (N, P, C) against every position of the ``count`` bank images
    nearest to its latent code (an image found in the bank, at distance ~0, is skipped, so
    scoring the bank gives leave-one-out values). One neighbour at a time, so memory stays
    at N x P x P."""
    distance = ((codes[:, None, :] - bank_codes[None, :, :]) ** 2).sum(dim=2)
    distance = torch.where(distance <= SAME_IMAGE, torch.full_like(distance, 1e30), distance)
    nearest = distance.topk(min(count, bank_codes.shape[0] - 1), dim=1, largest=False).indices
    features = features.float()
    best = None
    for j in range(nearest.shape[1]):  # |a - b|^2 = |a|^2 + min_b (|b|^2 - 2 a.b): one fused product per neighbour
        bank = bank_features[nearest[:, j]].float()
        d = torch.baddbmm((bank**2).sum(dim=2)[:, None, :], features, bank.transpose(1, 2), alpha=-2.0).amin(dim=2)
        best = d if best is None else torch.minimum(best, d)
    assert best is not None, "a patch view needs at least two bank images"
    return (best + (features**2).sum(dim=2)).clamp_min(0.0).sqrt()


class ReconstructionScore(nn.Module):
    """Deterministic per-image anomaly score of a VAE (the mean code is decoded).

    The error map is averaged over the whole image (``area`` 1) or over its worst
    ``area`` fraction of pixels, which a small focal lesion does not drown in. With a
    reference (validation normals' latent codes and scores, see ``fit_reference``), the
    score is divided by the mean score of the ``neighbours`` references nearest in the
    VAE's latent space: normal images of one kind (a modality, a body part) reconstruct
    about equally well, so an image is compared with normals that look like it rather
    than with all normals. A reference at distance ~0 is the image itself and is skipped,
    so scoring the references gives leave-one-out values.
    """

    def __init__(self, vae: ConvVAE, kind: str = "mse", area: float = 1.0, n_reference: int = 0,
                 neighbours: int = 0) -> None:
        super().__init__()
        if kind not in SCORES:
            raise ValueError(f"unknown VAE score {kind!r}; choose one of {', '.join(SCORES)}")
        if not 0.0 < area <= 1.0:
            raise ValueError(f"the scored area must lie in (0, 1], not {area}")
        self.vae, self.kind, self.area, self.neighbours = vae, kind, float(area), int(neighbours)
        self.register_buffer("window", _gaussian_window(), persistent=False)
        latent = vae.to_mu.out_features
        self.register_buffer("reference_codes", torch.zeros(n_reference, latent))
        self.register_buffer("reference_scores", torch.zeros(n_reference))

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel anomaly maps (N, 1, H, W) for residual heatmaps: where the image differs."""
        mu, _ = self.vae.encode(images)
        recon = self.vae.decode(mu)
        if self.kind == "ssim":
            pad = self.window.shape[-1] // 2
            return 1.0 - ssim_map(F.pad(images, [pad] * 4, mode="reflect"), F.pad(recon, [pad] * 4, mode="reflect"),
                                  self.window)
        return (images - recon).abs() if self.kind == "l1" else (images - recon) ** 2

    def errors(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the flattened error map, shape (N, pixels); kl: the KL divergence, shape (N, 1); the latent codes)."""
        mu, logvar = self.vae.encode(images)
        if self.kind == "kl":
            return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1, keepdim=True), mu
        recon = self.vae.decode(mu)
        if self.kind == "ssim":
            error = 1.0 - ssim_map(images, recon, self.window)
        else:
            error = (images - recon).abs() if self.kind == "l1" else (images - recon) ** 2
        return error.flatten(1), mu

    @staticmethod
    def pool(error: torch.Tensor, area: float) -> torch.Tensor:
        """The mean of the worst ``area`` fraction of each row of ``error`` (1: all of it)."""
        if area >= 1.0:
            return error.mean(dim=1)
        worst = max(1, math.ceil(area * error.shape[1]))
        return error.topk(worst, dim=1).values.mean(dim=1)

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the score before any reference, shape (N,); the latent codes, shape (N, latent))."""
        error, mu = self.errors(images)
        return self.pool(error, self.area), mu

    def baseline(self, codes: torch.Tensor, count: int | None = None, scores: torch.Tensor | None = None) -> torch.Tensor:
        """The mean reference score of each code's ``count`` nearest references (itself skipped)."""
        count = self.neighbours if count is None else count
        scores = self.reference_scores if scores is None else scores
        distance = ((codes[:, None, :] - self.reference_codes[None, :, :]) ** 2).sum(dim=2)
        distance = torch.where(distance <= SAME_IMAGE, torch.full_like(distance, 1e30), distance)
        nearest = distance.topk(min(count, self.reference_codes.shape[0] - 1), dim=1, largest=False).indices
        return scores[nearest].mean(dim=1).clamp_min(1e-12)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores, codes = self.raw(images)
        if self.neighbours <= 0 or self.reference_scores.shape[0] < 2:
            return scores
        return scores / self.baseline(codes)

    @torch.no_grad()
    def pooled_errors(self, normals: torch.Tensor, areas: Any, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent codes (n, latent), pooled errors (len(areas), n)) of ``normals``, at most
        MAX_REFERENCE of them, evenly spread: what a reference keeps."""
        normals = normals[evenly(len(normals), MAX_REFERENCE).to(normals.device)]
        codes, pooled = [], []
        for i in range(0, len(normals), batch_size):
            error, mu = self.errors(normals[i : i + batch_size])
            codes.append(mu)
            pooled.append(torch.stack([self.pool(error, a) for a in areas]))
        return torch.cat(codes), torch.cat(pooled, dim=1)

    @torch.no_grad()
    def fit_reference(self, normals: torch.Tensor, batch_size: int = 64) -> None:
        """Keep the latent codes and raw scores of ``normals`` (validation normals) as the reference."""
        normals = normals[evenly(len(normals), MAX_REFERENCE).to(normals.device)]
        parts = [self.raw(normals[i : i + batch_size]) for i in range(0, len(normals), batch_size)]
        self.reference_scores = torch.cat([p[0] for p in parts]).float()
        self.reference_codes = torch.cat([p[1] for p in parts]).float()


# The views a multi-view score looks through: the worst 100, 10 and 3 % of the pixels, each
# against all normals and against the 5 nearest. Measured on the demo data (a VAE per seed,
# 0-2, trained on its normals; test AUROC per anomaly kind, mean of the seeds): fracture /
# hemorrhage / infection / tumour 0.59 / 0.90 / 0.85 / 0.81 for these six, where the best
# single view reaches 0.75 on all anomalies together and fails one kind or another (whole
# image alone: infection 0.50; a tenth against 5 neighbours: fracture 0.47). Nine views
# (10 neighbours too) scored no better; Fisher's sum instead of the minimum a little worse.
VIEWS = tuple((area, count) for area in (1.0, 0.1, 0.03) for count in (0, 5))
ALL_AREAS = (1.0, 0.1, 0.03)  # the areas a VAE run keeps reference scores for (VAEPhase.reference)


@torch.no_grad()
def patch_bank(vae: ConvVAE, normals: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(latent codes, local features in float16) of at most PATCH_REFERENCE of ``normals``,
    evenly spread: what the patch view compares images with."""
    normals = normals[evenly(len(normals), PATCH_REFERENCE).to(normals.device)]
    codes, features = [], []
    for i in range(0, len(normals), batch_size):
        codes.append(vae.encode(normals[i : i + batch_size])[0])
        features.append(vae.patch_features(normals[i : i + batch_size]).half())
    return torch.cat(codes).float(), torch.cat(features)


class MultiViewScore(ReconstructionScore):
    """Every view at once, none chosen: how unusual the image's most unusual view is.

    A view is one way of scoring (an ``area``, a number of ``neighbours``, see
    ReconstructionScore). Each view's score becomes its tail probability p among the
    reference normals (NormalTail, fitted on the references' leave-one-out scores), and
    the image scores -log of the smallest p (Tippett's minimum). Nothing is fitted on
    anomalies, which is what a detector of unknown anomalies needs: choosing one view by
    how well it finds the anomalies in validation tunes the VAE to the kinds shown there.
    On one kind of image a chosen view can do better (PneumoniaMNIST: 0.82 whole image,
    0.78 multi-view), so the VAE phase lets validation choose between them.

    With ``patch`` (a number of neighbours, PATCH_NEIGHBOURS in the app) the patch view is
    one more view (see patch_distance), its tail fitted on the leave-one-out scores of the
    ``n_patch`` reference normals whose local features it keeps.
    """

    def __init__(self, vae: ConvVAE, kind: str = "ssim", views: Any = VIEWS, n_reference: int = 0,
                 patch: int = 0, n_patch: int = 0) -> None:
        super().__init__(vae, kind, 1.0, n_reference, 0)
        chosen = [(float(a), int(c)) for a, c in views]
        if kind == "kl":  # one number per image: no area to choose
            chosen = [(1.0, c) for c in dict.fromkeys(c for _, c in chosen)]
        if not chosen or any(not 0.0 < a <= 1.0 or c < 0 for a, c in chosen):
            raise ValueError(f"views are (area in (0, 1], neighbours >= 0) pairs, not {views!r}")
        self.views = chosen
        self.areas = list(dict.fromkeys(a for a, _ in chosen))
        self.register_buffer("area_scores", torch.zeros(len(self.areas), n_reference))
        self.tails = nn.ModuleList(NormalTail(n_reference) for _ in chosen)
        if patch < 0:
            raise ValueError(f"the patch view's neighbours must be 0 (off) or more, not {patch}")
        self.patch = int(patch)
        if self.patch:
            positions, channels = vae.patch_shape()
            self.register_buffer("patch_codes", torch.zeros(n_patch, vae.to_mu.out_features))
            self.register_buffer("patch_features", torch.zeros(n_patch, positions, channels, dtype=torch.float16))
            self.register_buffer("patch_scores", torch.zeros(n_patch))  # their leave-one-out distances
            self.patch_tail = NormalTail(n_patch)

    def _views(self, pooled: list[torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
        """Each view's score (N, views) from the pooled errors per area and the codes."""
        out = []
        for area, count in self.views:
            k = self.areas.index(area)
            out.append(pooled[k] / self.baseline(codes, count, self.area_scores[k]) if count else pooled[k])
        return torch.stack(out, dim=1)

    def view_scores(self, images: torch.Tensor) -> torch.Tensor:
        """Each view's score before its tail, shape (N, views), the patch view last."""
        error, codes = self.errors(images)
        scores = self._views([self.pool(error, a) for a in self.areas], codes)
        if not self.patch:
            return scores
        local = patch_distance(self.vae.patch_features(images), codes, self.patch_features, self.patch_codes,
                               self.patch)
        return torch.cat([scores, (local / self.patch_baseline(codes))[:, None]], dim=1)

    def patch_baseline(self, codes: torch.Tensor) -> torch.Tensor:
        """The mean leave-one-out patch distance of the PATCH_BASELINE bank images nearest to
        each code (itself skipped): what the patch view divides by."""
        distance = ((codes[:, None, :] - self.patch_codes[None, :, :]) ** 2).sum(dim=2)
        distance = torch.where(distance <= SAME_IMAGE, torch.full_like(distance, 1e30), distance)
        nearest = distance.topk(min(PATCH_BASELINE, self.patch_codes.shape[0] - 1), dim=1, largest=False).indices
        return self.patch_scores[nearest].mean(dim=1).clamp_min(1e-12)

    def patch_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Where the patch view looks (N, 1, H, W): each position's distance to its nearest
        normal patch, brought up to the image's size (a heat map of local findings)."""
        if not self.patch:
            raise ValueError("This score has no patch view.")
        codes, _ = self.vae.encode(images)
        local = nearest_patch_distances(self.vae.patch_features(images), codes, self.patch_features,
                                        self.patch_codes, self.patch)
        local = local / self.patch_baseline(codes)[:, None]
        grid = math.isqrt(local.shape[1])
        return F.interpolate(local.view(-1, 1, grid, grid), size=images.shape[-2:], mode="bilinear",
                             align_corners=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = self.view_scores(images)
        tails = [*self.tails, self.patch_tail] if self.patch else list(self.tails)
        p = torch.stack([tail(scores[:, k]) for k, tail in enumerate(tails)], dim=1)
        return -torch.log(p.min(dim=1).values.clamp_min(1e-30))

    @torch.no_grad()
    def fit_reference(self, normals: torch.Tensor, batch_size: int = 64) -> None:
        """Fit on ``normals`` (validation normals): their codes, errors and each view's tail."""
        bank = patch_bank(self.vae, normals, batch_size) if self.patch else (None, None)
        self.use_reference(*self.pooled_errors(normals, self.areas, batch_size), areas=self.areas,
                           patch_codes=bank[0], patch_features=bank[1])

    @torch.no_grad()
    def use_reference(self, codes: torch.Tensor, area_scores: torch.Tensor, areas: Any,
                      patch_codes: torch.Tensor | None = None, patch_features: torch.Tensor | None = None) -> None:
        """Take reference normals' codes and pooled errors (one row per area of ``areas``,
        which holds every area of the views), and for the patch view some of their codes
        and local features (patch_bank), and fit each view's tail on them."""
        if len(codes) < 2:
            raise ValueError("A multi-view score needs at least two reference normals.")
        if self.patch:
            if patch_features is None or patch_codes is None or len(patch_codes) < 2:
                raise ValueError("The patch view needs the local features of at least two reference normals.")
            self.patch_codes = patch_codes.float().to(codes.device)
            self.patch_features = patch_features.half().to(codes.device)
            self.patch_scores = torch.cat([
                patch_distance(self.patch_features[i : i + 64], self.patch_codes[i : i + 64], self.patch_features,
                               self.patch_codes, self.patch)
                for i in range(0, len(self.patch_codes), 64)])
            self.patch_tail = NormalTail(len(patch_codes)).to(codes.device)
            self.patch_tail.fit(self.patch_scores / self.patch_baseline(self.patch_codes))
        areas = [float(a) for a in areas]
        missing = [a for a in self.areas if a not in areas]
        if missing:
            raise ValueError(f"the reference holds no scores for area {missing[0]:g}")
        self.reference_codes = codes.float()
        self.area_scores = torch.stack([area_scores[areas.index(a)] for a in self.areas]).float()
        self.reference_scores = self.area_scores[0]
        scores = self._views(list(self.area_scores), self.reference_codes)  # each image skips itself
        for k, tail in enumerate(self.tails):
            tail.fit(scores[:, k])


@register_phase(
    "vae", "Variational autoencoder (learns normality; finds unknown anomalies)",
    input_dims=2, output="anomaly_score", needs_labels=False, route=3,
)
class VAEPhase(Phase):
    Config = VAEConfig
    questions = (image_size_question(), EPOCHS, AUGMENT, CLAHE)
    menu_settings = {"batch_size": 16}

    def __init__(self, config: VAEConfig, classes: list[str]) -> None:
        if config.score not in SCORES:
            raise ValueError(f"unknown VAE score {config.score!r}; choose one of {', '.join(SCORES)}")
        if config.decoder not in DECODERS:
            raise ValueError(f"unknown VAE decoder {config.decoder!r}; choose one of {', '.join(DECODERS)}")
        if config.area is not None and not 0.0 < config.area <= 1.0:
            raise ValueError(f"the VAE's scored area must lie in (0, 1] (e.g. 0.1 or 1), not {config.area}")
        if config.neighbours is not None and config.neighbours < 0:
            raise ValueError(f"the VAE's neighbours must be 0 or more (e.g. 5), not {config.neighbours}")
        if config.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"unknown threshold rule {config.threshold_rule!r}; choose one of "
                             f"{', '.join(THRESHOLD_RULES)}")
        self.config, self.classes = config, list(classes)
        self.model = ConvVAE(config.image_size, config.latent_dim, config.base_channels)
        self.epoch = 0  # set by the training loop, drives the KL warm-up
        self.threshold: float | None = None  # fitted on validation by finish()
        # How scores are computed; fitted on validation by finish() (see VAEConfig).
        self.area = config.area if config.area is not None else AREAS[0]
        self.neighbours = config.neighbours if config.neighbours is not None else NEIGHBOURS[0]
        self.views = bool(config.views)  # score through every view (MultiViewScore)
        # Validation normals: their latent codes, the chosen view's scores and (runs since
        # multi-view scores) their pooled errors per area of ALL_AREAS.
        self.reference: dict[str, Any] | None = None

    def model_args(self) -> dict[str, Any]:
        c = self.config
        return {"image_size": c.image_size, "latent_dim": c.latent_dim, "base_channels": c.base_channels}

    def select_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Normal images, plus unlabeled ones (mostly normal in practice) when allowed."""
        return [
            r for r in rows
            if (r["labeled"] and r["label"] == "normal") or (not r["labeled"] and self.config.use_unlabeled)
        ]

    def targets(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        return torch.tensor([0 if (not r["labeled"] or r["label"] == "normal") else 1 for r in rows])

    def prepare(self, targets: torch.Tensor) -> None:
        return None

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, _ = batch
        recon, mu, logvar = self.model(images)
        reconstruction = reconstruction_nll(F.mse_loss(recon, images, reduction="none").flatten(1), self.config.decoder)
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        warm = min(1.0, (self.epoch + 1) / max(1, self.config.kl_warmup_epochs))
        return {"loss": reconstruction + self.config.beta * warm * kl, "output": recon}

    def scorer(self, views: bool | None = None) -> ReconstructionScore:
        """How this run scores images: its chosen view, or with ``views`` True (what the
        hybrid asks for) every view at once (MultiViewScore)."""
        views = self.views if views is None else views
        device = next(self.model.parameters()).device
        ref = self.reference
        if ref and ref.get("kind", self.config.score) != self.config.score:
            raise ValueError(f"The reference normals were scored with {ref['kind']!r}, not "
                             f"{self.config.score!r}: call finish() on validation images again after changing the score.")
        if views:
            if not ref or "area_scores" not in ref:
                raise ValueError("This VAE run keeps no reference normals for a multi-view score (it was "
                                 "trained by an older version, or validation held fewer than two normals): "
                                 "train the VAE again.")
            bank = (ref["patch_codes"].to(device), ref["patch_features"].to(device)) if "patch_features" in ref else None
            multi = MultiViewScore(self.model, self.config.score, VIEWS, len(ref["codes"]),
                                   PATCH_NEIGHBOURS if bank else 0, len(bank[0]) if bank else 0).to(device)
            multi.use_reference(ref["codes"].to(device), ref["area_scores"].to(device), ref["areas"],
                                *(bank or (None, None)))
            return multi
        n = len(ref["scores"]) if ref and ref.get("scores") is not None and self.neighbours else 0
        scorer = ReconstructionScore(self.model, self.config.score, self.area, n, self.neighbours if n else 0)
        if n:
            scorer.reference_codes.copy_(ref["codes"])
            scorer.reference_scores.copy_(ref["scores"])
        return scorer.to(device)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Anomaly scores, shape (N,)."""
        return self.scorer()(images)

    @torch.no_grad()
    def _choose(self, images: torch.Tensor, labels: np.ndarray,
                patch: bool = True) -> tuple[ReconstructionScore, np.ndarray, dict]:
        """Try every allowed way of scoring on the validation images (references fitted on
        the validation normals): the scorer with the best validation AUROC, its scores, and
        each trial's AUROC. Ties keep the first; validation without anomalies keeps all
        views (or the one view set by hand). ``patch`` False: all views but the patch view
        (what early stopping watches every epoch: the patch view costs far more)."""
        from core.metrics import anomaly_auroc

        self.model.eval()
        normal = torch.from_numpy(labels == 0) if (labels == 0).any() else torch.ones(len(labels), dtype=torch.bool)
        both = len(set(labels.tolist())) == 2
        c = self.config
        by_hand = c.area is not None or c.neighbours is not None or c.views is False
        enough = int(normal.sum()) >= 2  # one normal image cannot be its own reference
        candidates: list[ReconstructionScore] = []
        if enough and not by_hand:
            candidates.append(MultiViewScore(self.model, c.score, VIEWS, patch=PATCH_NEIGHBOURS if patch else 0)
                              .to(images.device))
        if not c.views and (by_hand or both or not enough):
            areas = [c.area] if c.area is not None else list(AREAS if both else AREAS[:1])
            counts = [c.neighbours] if c.neighbours is not None else list(NEIGHBOURS if both else NEIGHBOURS[:1])
            counts = counts if enough else [0]
            candidates += [ReconstructionScore(self.model, c.score, a, 0, n).to(images.device)
                           for a in areas for n in counts]
        if not candidates:  # all views asked for, but fewer than two normals to compare with
            candidates.append(ReconstructionScore(self.model, c.score, AREAS[0], 0, 0).to(images.device))
        best: tuple[float, ReconstructionScore, np.ndarray] | None = None
        trials: dict[str, float] = {}
        for scorer in candidates:
            if isinstance(scorer, MultiViewScore) or scorer.neighbours:
                scorer.fit_reference(images[normal.to(images.device)])
            scores = torch.cat([scorer(images[i : i + 64]) for i in range(0, len(images), 64)]).float().cpu().numpy()
            auroc = float(anomaly_auroc(labels, scores)) if both else float("nan")
            name = "all views" if isinstance(scorer, MultiViewScore) else f"area {scorer.area:g}, neighbours {scorer.neighbours}"
            trials[name] = round(auroc, 4)
            if best is None or np.nan_to_num(auroc, nan=-1.0) > best[0]:
                best = (np.nan_to_num(auroc, nan=-1.0), scorer, scores)
        assert best is not None, "no way of scoring to try"
        return best[1], best[2], {k: v for k, v in trials.items() if not np.isnan(v)}

    @torch.no_grad()
    def _reference(self, normals: torch.Tensor, batch_size: int = 64) -> dict[str, Any]:
        """Validation normals' codes and pooled errors per area of ALL_AREAS (for a multi-view
        score), and the codes and local features of up to PATCH_REFERENCE of them (its patch view)."""
        codes, pooled = ReconstructionScore(self.model, self.config.score).pooled_errors(normals, ALL_AREAS, batch_size)
        patch_codes, patch_features = patch_bank(self.model, normals, batch_size)
        return {"codes": codes.float().cpu(), "areas": list(ALL_AREAS), "area_scores": pooled.float().cpu(),
                "scores": None, "kind": self.config.score,
                "patch_codes": patch_codes.cpu(), "patch_features": patch_features.cpu()}

    @torch.no_grad()
    def validation_scores(self, images: torch.Tensor, is_anomaly: np.ndarray, device: str = "cpu") -> np.ndarray:
        """What early stopping watches: the validation scores as finish() would compute them,
        but for the patch view (finish() adds it once, on the best weights)."""
        return self._choose(images.to(device), np.asarray(is_anomaly).astype(int), patch=False)[1]

    @torch.no_grad()
    def finish(self, images: torch.Tensor, is_anomaly: torch.Tensor, **_: Any) -> dict[str, Any]:
        """Fit on the validation images (best weights loaded): how scores are computed
        (area and neighbours, see VAEConfig), the reference normals, the threshold."""
        from core.metrics import youden_threshold

        labels = is_anomaly.numpy().astype(int)
        scorer, scores, trials = self._choose(images, labels)
        self.views = isinstance(scorer, MultiViewScore)
        self.area, self.neighbours = (AREAS[0], NEIGHBOURS[0]) if self.views else (scorer.area, scorer.neighbours)
        normal = torch.from_numpy(labels == 0).to(images.device)
        self.reference = self._reference(images[normal]) if int(normal.sum()) >= 2 else None
        if self.reference is not None and self.neighbours:
            self.reference["scores"] = scorer.reference_scores.float().cpu()
        normals = scores[labels == 0] if (labels == 0).any() else scores
        c = self.config
        cut = youden_threshold(labels, scores) if c.threshold_rule == "roc" else None
        rule = "roc" if cut is not None else "percentile"
        self.threshold = cut if cut is not None else float(np.percentile(normals, c.threshold_percentile))
        how = ({"views": [list(v) for v in VIEWS], "patch_neighbours": PATCH_NEIGHBOURS} if self.views
               else {"area": self.area, "neighbours": self.neighbours})
        return {"threshold": self.threshold, "threshold_rule": rule, "score": c.score, **how,
                "val_auroc_by_choice": trials}

    def extra(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "area": self.area, "neighbours": self.neighbours,
                "views": self.views, "reference": self.reference}

    def export_module(self) -> nn.Module:
        return self.scorer()

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
