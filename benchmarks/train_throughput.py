#!/usr/bin/env python3
"""Training images per second: the app's loop against a bare PyTorch loop, in one run.

Same model (EfficientNet-B0 by default), batch size, image size and in-memory images.
The app's figure is whole epochs as the app times them (augmentation, gradient clipping,
learning-rate schedule, precise batch norm, validation on a small split; the checkpoints
are written after the epoch's timer stops); the bare loop is forward, loss, backward, step.

The two take turns, one epoch each (the bare epoch runs from the app's end-of-epoch
progress call, outside the app's epoch timer), so that a machine that speeds up or slows
down during the run weighs on both alike: on shared machines the bare loop alone drifted by
a fifth between the start and the end of a run. The ratio is the best app epoch over the
best bare epoch, the first epoch of each (warm-up) left out; the median ratio of the
neighbouring pairs is printed beside it.

On a GPU (``--device cuda``) the bare loop's images live on the GPU from the start and it
runs under the same mixed precision as the app (Runtime.autocast): the app's figure shows
what its input pipeline costs next to a loop that has none. On the CPU both lay the model
out channels-last and step AdamW fused, as the app does (app/runtime.py fast_layout,
optimizer_options).

    python benchmarks/train_throughput.py [--device cpu|cuda] [--images 2048] [--image-size 64] [--epochs 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_npz(path: Path, images: int) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", images), ("val", 32), ("test", 32)):
        arrays[f"{split}_images"] = (rng.random((n, 28, 28)) * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(path, **arrays)


class BareLoop:
    """Forward, loss, backward, step over random in-memory tensors of the app's shape."""

    def __init__(self, backbone: str, images: int, size: int, batch: int):
        import torch

        from app.runtime import current_runtime, fast_layout, optimizer_options
        from models.supervised import create_backbone

        torch.manual_seed(0)
        self.runtime = current_runtime()
        device = self.runtime.device
        # Laid out as the app lays it out (channels-last on the CPU): the ratio is the loop's cost, not the layout's.
        self.model = fast_layout(create_backbone(backbone, 2, pretrained=False).train().to(device), device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, **optimizer_options(device))
        self.x = torch.rand(images, 1, size, size, device=device)
        self.y = torch.randint(0, 2, (images,), device=device)
        self.batch = batch

    def epoch(self) -> float:
        """Images per second of one epoch."""
        import torch

        self.runtime.synchronize()
        began = time.perf_counter()
        order = torch.randperm(len(self.x), device=self.x.device)
        for k in range(0, len(self.x), self.batch):
            index = order[k : k + self.batch]
            with self.runtime.autocast():
                loss = torch.nn.functional.cross_entropy(self.model(self.x[index]), self.y[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.runtime.synchronize()
        return len(self.x) / (time.perf_counter() - began)


def interleaved(backbone: str, images: int, size: int, batch: int, epochs: int) -> tuple[list[float], list[float]]:
    """Images per second of each app epoch and of the bare epoch run right after it."""
    from app.organize.organizer import organize
    from app.training import train
    from app.workspace import Workspace

    bare = BareLoop(backbone, images, size, batch)
    bare_rates: list[float] = []

    def progress(task: str, done: int, total: Any, **info: Any) -> None:
        if task == "Epochs":  # the app's epoch is over and timed; the bare loop takes its turn
            bare_rates.append(bare.epoch())

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(tmp)
        make_npz(Path(tmp) / "throughputmnist.npz", images)
        organize(ws, Path(tmp) / "throughputmnist.npz", "bench")
        train(ws, "bench", "supervised", run="bench", backbone=backbone, image_size=size, batch_size=batch,
              epochs=epochs, pretrained=False, patience=epochs, progress=progress)
        app_rates = [images / h["seconds"] for h in ws.run_metadata("bench")["history"]]
    return app_rates, bare_rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each loop, the first a warm-up (at least 2)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when PyTorch sees one, as the app)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch of each loop is a warm-up")
    if args.device:
        os.environ["MEDANOMALY_DEVICE"] = args.device  # the app's loop and the bare one alike
    from core.errors import DeviceError
    from app.runtime import current_runtime

    try:
        device = current_runtime().describe()
    except DeviceError as err:
        parser.error(str(err))
    app_rates, bare_rates = interleaved(args.backbone, args.images, args.image_size, args.batch_size, args.epochs)
    ours, reference = max(app_rates[1:]), max(bare_rates[1:])
    ratio = ours / reference
    pairs = float(np.median([a / b for a, b in zip(app_rates[1:], bare_rates[1:])]))
    print(f"\n{args.backbone}, {args.image_size} px, batch {args.batch_size}, {args.images} images, on {device}, "
          f"{args.epochs} epochs of each loop taking turns (the first a warm-up):\n")
    print("| epoch | the app's loop (images/s) | bare PyTorch right after (images/s) |\n| --- | --- | --- |")
    for k, (a, b) in enumerate(zip(app_rates, bare_rates), 1):
        print(f"| {k}{' (warm-up)' if k == 1 else ''} | {a:.1f} | {b:.1f} |")
    print(f"\nratio, best app epoch over best bare epoch: **{ratio:.2f}** (target >= 0.95); "
          f"median ratio of the pairs: {pairs:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"ratio": round(ratio, 3), "pair_ratio_median": round(pairs, 3),
                                               "app_images_per_s": round(ours, 1), "images_per_second": round(ours, 1),
                                               "device": device,
                                               "bare_images_per_s": round(reference, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
