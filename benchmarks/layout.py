#!/usr/bin/env python3
"""Training steps per second in the usual (NCHW) layout against channels-last (NHWC), in one run.

Each model of the recipe search (app/recipes.py RECIPES_2D), the VAE and the 3-D ResNet is
timed both ways, taking turns (plain, channels-last, plain, ...) so that a machine that
speeds up or slows down weighs on both alike: forward, loss, backward and AdamW's step on
random in-memory images, after a few warm-up steps. The ratio says what app/runtime.py
``fast_layout`` buys: training lays out 2-D networks channels-last on the CPU.

    python benchmarks/layout.py [--device cpu] [--batch 128] [--steps 6] [--rounds 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def models() -> list[tuple[str, Any, tuple[int, ...]]]:
    """(name, a function making the model, one image's shape) for every network timed."""
    from app.recipes import RECIPES_2D
    from models.cube3d import create_resnet3d
    from models.supervised import create_backbone
    from models.vae import ConvVAE

    made = [(recipe.name, (lambda b=recipe.backbone: create_backbone(b, 2, pretrained=False)),
             (1, recipe.image_size, recipe.image_size)) for recipe in RECIPES_2D]
    made.append(("vae-64", lambda: ConvVAE(image_size=64), (1, 64, 64)))
    made.append(("resnet10-3d-28", lambda: create_resnet3d("resnet10", 32, 2), (1, 28, 28, 28)))
    return made


def images_per_second(model: Any, shape: tuple[int, ...], batch: int, steps: int, channels_last: bool,
                      device: str) -> float:
    import torch

    torch.manual_seed(0)
    x = torch.rand(batch, *shape, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def step() -> None:
        out = model(x)
        loss = out[0].float().pow(2).mean() if isinstance(out, tuple) else out.float().pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128, help="images per step (3-D: an eighth of it)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per layout (the best is kept)")
    parser.add_argument("--only", default="", help="comma-separated names to time (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import os

    import torch

    wanted = {name for name in args.only.split(",") if name}
    rows = []
    print(f"{'network':20s} {'plain img/s':>12s} {'channels-last':>14s} {'ratio':>6s}")
    for name, make, shape in models():
        if wanted and name not in wanted:
            continue
        batch = max(2, args.batch // 8) if len(shape) == 4 else args.batch
        best = {False: 0.0, True: 0.0}
        for _ in range(args.rounds):
            for channels_last in (False, True):
                model = make().to(args.device).train()
                best[channels_last] = max(best[channels_last], images_per_second(
                    model, shape, batch, args.steps, channels_last, args.device))
        ratio = best[True] / best[False]
        rows.append({"network": name, "batch": batch, "plain": round(best[False], 1),
                     "channels_last": round(best[True], 1), "ratio": round(ratio, 2)})
        print(f"{name:20s} {best[False]:12.0f} {best[True]:14.0f} {ratio:6.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "threads": torch.get_num_threads(),
                                         "cpus": os.cpu_count(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
