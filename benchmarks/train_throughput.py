#!/usr/bin/env python3
"""Training images per second: the app's loop against a bare PyTorch loop, in one run.

Same model (EfficientNet-B0 by default), batch size, image size and in-memory images.
The app's figure is whole epochs as the app runs them (augmentation, gradient clipping,
learning-rate schedule, validation on a small split, two checkpoints written); the bare
loop is forward, loss, backward, step. Best epoch of each after a warm-up epoch.

    python benchmarks/train_throughput.py [--images 2048] [--image-size 64] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

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


def bare_loop(backbone: str, images: int, size: int, batch: int, epochs: int) -> float:
    """Best images/s of a plain loop over random in-memory tensors of the same shape."""
    import torch

    from models.supervised import create_backbone

    torch.manual_seed(0)
    model = create_backbone(backbone, 2, pretrained=False).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(images, 1, size, size)
    y = torch.randint(0, 2, (images,))
    best = 0.0
    for _ in range(epochs):
        began = time.perf_counter()
        order = torch.randperm(images)
        for k in range(0, images, batch):
            index = order[k : k + batch]
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        best = max(best, images / (time.perf_counter() - began))
    return best


def app_loop(backbone: str, images: int, size: int, batch: int, epochs: int) -> float:
    from app.organize.organizer import organize
    from app.training import train
    from app.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(tmp)
        make_npz(Path(tmp) / "throughputmnist.npz", images)
        organize(ws, Path(tmp) / "throughputmnist.npz", "bench")
        train(ws, "bench", "supervised", run="bench", backbone=backbone, image_size=size, batch_size=batch,
              epochs=epochs, pretrained=False, patience=epochs)
        history = ws.run_metadata("bench")["history"]
    return max(images / h["seconds"] for h in history)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    shape = (args.backbone, args.images, args.image_size, args.batch_size, args.epochs)
    bare = bare_loop(*shape)
    ours = app_loop(*shape)
    bare_again = bare_loop(*shape)  # before and after: the machine's drift shows
    reference = max(bare, bare_again)
    ratio = ours / reference
    print(f"\n{args.backbone}, {args.image_size} px, batch {args.batch_size}, {args.images} images, "
          f"best of {args.epochs} epochs:\n")
    print("| loop | images/s | ratio |\n| --- | --- | --- |")
    print(f"| bare PyTorch (before / after) | {bare:.1f} / {bare_again:.1f} | 1.00 |")
    print(f"| the app's training loop | {ours:.1f} | {ratio:.2f} (target >= 0.95) |")
    if args.json:
        Path(args.json).write_text(json.dumps({"ratio": round(ratio, 3), "app_images_per_s": round(ours, 1),
                                               "bare_images_per_s": round(reference, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
