"""A convolutional VAE that learns what normal looks like.

The anomaly score of an image is its reconstruction error: the model has only
seen normal (or unlabeled, mostly normal) images, so findings reconstruct badly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_phase


@dataclass
class VAEConfig:
    latent_dim: int = 16  # AE4AD: small latents beat large ones on chest X-ray
    base_channels: int = 32
    beta: float = 1.0
    kl_warmup_epochs: int = 5
    image_size: int = 64
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    use_unlabeled: bool = True
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


class ReconstructionScore(nn.Module):
    """Deterministic per-image anomaly score: mean squared reconstruction error."""

    def __init__(self, vae: ConvVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mu, _ = self.vae.encode(images)
        return ((images - self.vae.decode(mu)) ** 2).flatten(1).mean(dim=1)


@register_phase(
    "vae", "Variational autoencoder (learns normality; finds unknown anomalies)",
    input_dims=2, output="anomaly_score", needs_labels=False,
)
class VAEPhase:
    Config = VAEConfig

    def __init__(self, config: VAEConfig, classes: list[str]) -> None:
        self.config, self.classes = config, list(classes)
        self.model = ConvVAE(config.image_size, config.latent_dim, config.base_channels)
        self.epoch = 0  # set by the training loop, drives the KL warm-up

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

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Anomaly scores, shape (N,)."""
        return ReconstructionScore(self.model)(images)

    def export_module(self) -> nn.Module:
        return ReconstructionScore(self.model)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
