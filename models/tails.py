"""How unusual a score is among normal images: a tail probability fitted on their scores.

The hybrid puts its two parts on this one scale, and the VAE's multi-view score puts
each of its views on it before taking the most unusual.
"""

from __future__ import annotations

import torch
from torch import nn

TAIL_FRACTION = 0.2  # the top fifth of the reference normals fits the exponential tail


class NormalTail(nn.Module):
    """P(a normal image scores at least this high), fitted on normal images' scores.

    Empirical, (1 + #{reference >= s}) / (n + 1), up to the start u of the top
    fifth of the reference scores; beyond it, mass * exp(-(s - u) / scale), the
    peaks-over-threshold exponential tail, so scores beyond every reference image
    keep their order. Never increases with s.
    """

    def __init__(self, n_reference: int) -> None:
        super().__init__()
        self.register_buffer("reference", torch.zeros(n_reference))
        self.register_buffer("tail", torch.tensor([0.0, 1.0, 1.0]))  # start u, scale, mass

    @torch.no_grad()
    def fit(self, scores: torch.Tensor) -> None:
        ref = torch.sort(scores.float().flatten()).values
        n = len(ref)
        k = max(1, int(round(TAIL_FRACTION * n))) if n > 1 else 0
        start = float(ref[n - 1 - k])
        scale = float((ref[n - k :] - start).mean()) if k else 0.0
        if not scale > 0:  # ties at the top, or one reference image: a scale from the spread, or a tiny one
            spread = float(ref[-1] - ref[0])
            scale = spread / n if spread > 0 else 1e-3 * (abs(start) + 1.0)
        self.reference = ref
        self.tail = torch.tensor([start, scale, (1.0 + k) / (n + 1.0)])

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        n = self.reference.shape[0]
        empirical = (1.0 + (self.reference[None, :] >= scores[:, None]).float().sum(dim=1)) / (n + 1.0)
        start, scale, mass = self.tail[0], self.tail[1], self.tail[2]
        beyond = mass * torch.exp(-(scores - start).clamp(min=0.0) / scale)
        return torch.where(scores > start, beyond, empirical)
