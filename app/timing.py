"""How long a training epoch will take, measured before training: the time budgets' first guess."""

from __future__ import annotations

import time
from typing import Any


def probe_seconds_per_epoch(model: Any, image_shape: tuple[int, ...], train_images: int, batch_size: int,
                            device: str = "cpu") -> float:
    """Time a few training steps of ``model`` alone on ``device`` (random images of
    ``image_shape``, channels first), scaled to an epoch (+15% for validation and loading):
    a first guess, each run refits its plan once timed."""
    import torch

    from app.runtime import fast_layout, optimizer_options

    model = fast_layout(model.to(device), device)  # as training lays it out and steps it
    optimizer = torch.optim.AdamW(model.parameters(), **optimizer_options(device))
    x = torch.rand(batch_size, *image_shape, device=device)
    y = torch.randint(0, 2, (batch_size,), device=device)
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
    began = 0.0
    for step in range(8):
        if step == 3:  # the first steps carry the warm-up
            synchronize()
            began = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    synchronize()
    per_step = (time.perf_counter() - began) / 5
    return per_step * (train_images / batch_size) * 1.15
