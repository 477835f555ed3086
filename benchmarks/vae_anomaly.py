#!/usr/bin/env python3
"""Unknown-anomaly detection: the VAE phase trained on normal images only.

    python benchmarks/vae_anomaly.py --data ../shared/data/medmnist/pneumoniamnist_subset.npz \\
        [--latent 16] [--sweep 4,8,16,32,64,128,512] [--scores mse,l1,ssim,kl] [--epochs 40] \\
        [--image-size 32] [--json FILE]

Trains on the normal training images, scores every test image with each anomaly score
(on the same weights), and reports the image-level AUROC normal vs pneumonia beside
AE4AD (Cai et al., MICCAI 2024), whose figures are on RSNA pneumonia chest X-rays at
64 px: a different set. Everything chosen is chosen on the validation split, as the app
does: the best epoch (validation AUROC of --select-score), and the latent size and score
reported in the JSON (best validation AUROC). Test figures are never used to choose.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ANCHORS = [("AE (AE4AD, RSNA, d=16)", 67.5), ("VAE (AE4AD, RSNA, d=16)", 67.9), ("AE, best latent (AE4AD, RSNA, d=4)", 72.9),
           ("CS-Flow (BMAD, RSNA)", 83.24)]


def run_one(ws, name: str, latent: int, epochs: int, size: int, select: str, scores: list[str],
            decoder: str = "calibrated") -> list[dict]:
    """Train one VAE; the validation and test AUROC of every score on its best weights."""
    import torch

    from app.data import phase_images, split_rows
    from core.metrics import anomaly_auroc
    from app.training import load_run_phase, predict_batches, train

    began = time.perf_counter()
    run = f"vae-d{latent}"
    train(ws, name, "vae", run=run, latent_dim=latent, epochs=epochs, image_size=size, batch_size=32,
          use_unlabeled=False, patience=epochs, score=select, decoder=decoder)
    seconds = time.perf_counter() - began
    phase = load_run_phase(ws, run)
    split_data = {}
    for split in ("val", "test"):
        rows = [r for r in split_rows(ws, name, split) if r["labeled"]]
        labels = np.array([0 if r["label"] == "normal" else 1 for r in rows])
        split_data[split] = (torch.from_numpy(phase_images(ws, phase, rows)), torch.from_numpy(labels))
    out = []
    for kind in scores:
        phase.config = dataclasses.replace(phase.config, score=kind)
        chosen = phase.finish(*split_data["val"])  # how this score is computed, chosen on validation
        found = {split: float(anomaly_auroc(labels.numpy(), predict_batches(phase, images, 128)))
                 for split, (images, labels) in split_data.items()}
        view = "all views" if "views" in chosen else f"area {chosen['area']:g}, neighbours {chosen['neighbours']}"
        out.append({"latent_dim": latent, "score": kind, "view": view,
                    "val_auroc": found["val"], "test_auroc": found["test"], "train_seconds": seconds,
                    "device": ws.run_metadata(run).get("device", "CPU")})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--sweep", help="comma-separated latent sizes to compare")
    parser.add_argument("--scores", default="mse,l1,ssim,kl", help="anomaly scores to compare on each model")
    parser.add_argument("--select-score", default="mse", help="the score whose validation AUROC picks the best epoch")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--decoder", default="calibrated", choices=["calibrated", "per-image", "fixed"],
                        help="the VAE's reconstruction term (models/vae.py)")
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
            results += run_one(ws, "data", latent, args.epochs, args.image_size, args.select_score,
                               args.scores.split(","), args.decoder)
            print(f"latent {latent}: " + ", ".join(f"{r['score']} val {r['val_auroc']:.3f} test {r['test_auroc']:.3f}"
                                                  for r in results if r["latent_dim"] == latent), flush=True)
    print(f"\n{data.name}: VAE ({args.decoder} decoder) on normal training images only, {args.image_size} px, "
          f"{args.epochs} epochs; "
          "image-level AUROC normal vs anomalous on the test split, one run:\n")
    print("| method | AUROC (%) |\n| --- | --- |")
    for method, value in ANCHORS:
        print(f"| {method} | {value:.1f} |")
    for r in results:
        print(f"| **ours**: VAE, latent {r['latent_dim']}, score {r['score']}, {r['view']} "
              f"({r['train_seconds']:.0f} s on {r['device']}) | "
              f"**{100 * r['test_auroc']:.1f}** (validation {100 * r['val_auroc']:.1f}) |")
    print("\nThe anchors are on RSNA pneumonia (64 px), not PneumoniaMNIST: a different set.")
    best = max(results, key=lambda r: r["val_auroc"])  # chosen on validation, never on test
    print(f"Chosen on validation: latent {best['latent_dim']}, score {best['score']}: "
          f"test AUROC {100 * best['test_auroc']:.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "test_auroc": round(best["test_auroc"], 4), "latent_dim": best["latent_dim"], "score": best["score"],
            "epochs": args.epochs, "image_size": args.image_size, "decoder": args.decoder,
            "sweep": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in results],
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
