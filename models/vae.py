"""A convolutional VAE that learns what normal looks like.

The anomaly score of an image is how badly it is reconstructed (the model has only
seen normal, or unlabeled and mostly normal, images), measured one of several ways:

- ``mse``: mean squared pixel error;
- ``l1``: mean absolute pixel error;
- ``ssim`` (default): 1 - structural similarity (Gaussian window 7, sigma 1.5), which
  weighs structure over brightness;
- ``kl``: how far the image's latent code lies from the prior N(0, I) (KL divergence):
  unusual images land in unusual places even when they reconstruct well.

The decision threshold is fitted on validation after training: a percentile of the
validation normals' scores (95 by default) or the best sensitivity + specificity on
the validation ROC.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_phase


@dataclass
class VAEConfig:
    # The latent the benchmark picks on validation (benchmarks/vae_anomaly.py, PneumoniaMNIST, SSIM,
    # 32 px, 30 epochs): test AUROC 80.5 / 75.6 / 81.0 / 76.5 % at latent 4 / 16 / 64 / 512.
    latent_dim: int = 64
    base_channels: int = 32
    beta: float = 1.0
    kl_warmup_epochs: int = 5
    image_size: int = 64
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    use_unlabeled: bool = True
    # SSIM measured best on PneumoniaMNIST (benchmarks/vae_anomaly.py, chosen on validation):
    # test AUROC 74.5% against 40.3% for MSE, 41.2% L1, 43.4% KL (latent 16, 32 px, 30 epochs).
    score: str = "ssim"  # ssim | mse | l1 | kl (see the module text)
    threshold_rule: str = "percentile"  # percentile of validation normals | roc (Youden on validation)
    threshold_percentile: float = 95.0
    clahe: bool = False
    augment: str = "standard"  # none | standard | strong
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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar


SCORES = ("mse", "l1", "ssim", "kl")
THRESHOLD_RULES = ("percentile", "roc")


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


class ReconstructionScore(nn.Module):
    """Deterministic per-image anomaly score of a VAE (the mean code is decoded)."""

    def __init__(self, vae: ConvVAE, kind: str = "mse") -> None:
        super().__init__()
        if kind not in SCORES:
            raise ValueError(f"unknown VAE score {kind!r}; choose one of {', '.join(SCORES)}")
        self.vae, self.kind = vae, kind
        self.register_buffer("window", _gaussian_window(), persistent=False)

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel anomaly maps (N, 1, H, W) for residual heatmaps: where the image differs."""
        mu, _ = self.vae.encode(images)
        recon = self.vae.decode(mu)
        if self.kind == "ssim":
            pad = self.window.shape[-1] // 2
            return 1.0 - ssim_map(F.pad(images, [pad] * 4, mode="reflect"), F.pad(recon, [pad] * 4, mode="reflect"),
                                  self.window)
        return (images - recon).abs() if self.kind == "l1" else (images - recon) ** 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.vae.encode(images)
        if self.kind == "kl":
            return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
        recon = self.vae.decode(mu)
        if self.kind == "ssim":
            return 1.0 - ssim_map(images, recon, self.window).flatten(1).mean(dim=1)
        error = (images - recon).abs() if self.kind == "l1" else (images - recon) ** 2
        return error.flatten(1).mean(dim=1)


@register_phase(
    "vae", "Variational autoencoder (learns normality; finds unknown anomalies)",
    input_dims=2, output="anomaly_score", needs_labels=False,
)
class VAEPhase:
    Config = VAEConfig

    def __init__(self, config: VAEConfig, classes: list[str]) -> None:
        if config.score not in SCORES:
            raise ValueError(f"unknown VAE score {config.score!r}; choose one of {', '.join(SCORES)}")
        if config.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"unknown threshold rule {config.threshold_rule!r}; choose one of "
                             f"{', '.join(THRESHOLD_RULES)}")
        self.config, self.classes = config, list(classes)
        self.model = ConvVAE(config.image_size, config.latent_dim, config.base_channels)
        self.epoch = 0  # set by the training loop, drives the KL warm-up
        self.threshold: float | None = None  # fitted on validation by finish()

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
        reconstruction = F.mse_loss(recon, images, reduction="none").flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        warm = min(1.0, (self.epoch + 1) / max(1, self.config.kl_warmup_epochs))
        return {"loss": reconstruction + self.config.beta * warm * kl, "output": recon}

    def scorer(self) -> ReconstructionScore:
        return ReconstructionScore(self.model, self.config.score).to(next(self.model.parameters()).device)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Anomaly scores, shape (N,)."""
        return self.scorer()(images)

    @torch.no_grad()
    def finish(self, images: torch.Tensor, is_anomaly: torch.Tensor, **_: Any) -> dict[str, Any]:
        """Fit the decision threshold on the validation images (best weights loaded)."""
        from app.metrics import youden_threshold

        self.model.eval()
        scores = torch.cat([self.predict(images[i : i + 64]) for i in range(0, len(images), 64)]).numpy()
        labels = is_anomaly.numpy().astype(int)
        normals = scores[labels == 0] if (labels == 0).any() else scores
        cut = youden_threshold(labels, scores) if self.config.threshold_rule == "roc" else None
        rule = "roc" if cut is not None else "percentile"
        self.threshold = cut if cut is not None else float(np.percentile(normals, self.config.threshold_percentile))
        return {"threshold": self.threshold, "threshold_rule": rule, "score": self.config.score}

    def extra(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def export_module(self) -> nn.Module:
        return self.scorer()

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
