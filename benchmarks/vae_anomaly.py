#!/usr/bin/env python3
"""Unknown-anomaly detection: the VAE phase trained on normal images only.

    python benchmarks/vae_anomaly.py --data ../shared/data/medmnist/pneumoniamnist_subset.npz \\
        [--latent 16] [--sweep 4,8,16,32,64,128,512] [--epochs 40] [--image-size 32] [--json FILE]

Trains on the normal training images, scores every test image by reconstruction error,
and reports the image-level AUROC normal vs pneumonia beside AE4AD (Cai et al., MICCAI
2024), whose figures are on RSNA pneumonia chest X-rays at 64 px: a different set.
Model selection (best epoch) uses the validation split's labels, as the app does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ANCHORS = [("AE (AE4AD, RSNA, d=16)", 67.5), ("VAE (AE4AD, RSNA, d=16)", 67.9), ("AE, best latent (AE4AD, RSNA, d=4)", 72.9),
           ("CS-Flow (BMAD, RSNA)", 83.24)]


def run_one(ws, name: str, latent: int, epochs: int, size: int) -> dict:
    from app.evaluate import evaluate_run
    from app.training import train

    began = time.perf_counter()
    run = f"vae-d{latent}"
    train(ws, name, "vae", run=run, latent_dim=latent, epochs=epochs, image_size=size, batch_size=32,
          use_unlabeled=False, patience=epochs)
    seconds = time.perf_counter() - began
    metrics = evaluate_run(ws, run, "test").metrics
    return {"latent_dim": latent, "test_auroc": metrics["anomaly_auroc"],
            "ci95": metrics["ci95"]["anomaly_auroc"], "train_seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--sweep", help="comma-separated latent sizes to compare")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    from app.organize.organizer import organize
    from app.workspace import Workspace

    data = Path(args.data).expanduser().resolve()
    latents = [int(v) for v in args.sweep.split(",")] if args.sweep else [args.latent]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(tmp)
        organize(ws, data, "data")
        results = []
        for latent in latents:
            results.append(run_one(ws, "data", latent, args.epochs, args.image_size))
            print(f"latent {latent}: test AUROC {results[-1]['test_auroc']:.3f}", flush=True)
    print(f"\n{data.name}: VAE on normal training images only, {args.image_size} px, {args.epochs} epochs; "
          "image-level AUROC normal vs anomalous on the test split, one run:\n")
    print("| method | AUROC (%) |\n| --- | --- |")
    for method, value in ANCHORS:
        print(f"| {method} | {value:.1f} |")
    for r in results:
        print(f"| **ours**: VAE, latent {r['latent_dim']} ({r['train_seconds']:.0f} s on CPU) | "
              f"**{100 * r['test_auroc']:.1f}** ({100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}) |")
    print("\nThe anchors are on RSNA pneumonia (64 px), not PneumoniaMNIST: a different set.")
    best = max(results, key=lambda r: r["test_auroc"])
    if args.json:
        Path(args.json).write_text(json.dumps({"test_auroc": round(best["test_auroc"], 4), "latent_dim": best["latent_dim"],
                                               "sweep": {r["latent_dim"]: round(r["test_auroc"], 4) for r in results}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
