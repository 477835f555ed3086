#!/usr/bin/env python3
"""Open-set benchmark: does the hybrid catch an anomaly class no classifier was trained on?

One anomaly class is held out (gone from train and validation, kept in test); the
supervised classifier, the VAE (normal images only) and the hybrid are trained with
the app's engine on what remains. On the test split, each scores normal images
against the known anomaly classes and against the held-out (unknown) one:

    python benchmarks/open_set.py [--hold-out tumor] [--scale 6] [--epochs 15] [--seeds 0,1,2]
        [--backbone efficientnet_b0] [--save-scores DIR] [--json FILE]

Demo data by default (several planted anomaly types; a fresh demo per seed);
``--dataset NAME --workspace DIR`` runs it on an organized multi-class dataset of a
workspace instead. Each seed is one whole run; the table gives the mean and each run,
since one run of a small test split moves by several hundredths. The hybrid is shown
at its default weight and at w = 0.5 (set by hand). There is no published anchor for
the demo data; the figure to beat is the supervised row. ``--save-scores DIR`` keeps
every detector's test scores and labels per seed (``scores-<seed>.npz``) for study.
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


def scores_on_test(ws, run: str, dataset: str, views: bool = False) -> tuple[np.ndarray, list[dict]]:
    """The run's anomaly score for every labeled test image (classifiers: 1 - P(normal));
    ``views``: a VAE run scoring through every view (as the hybrid's VAE part does)."""
    import torch

    from app.data import phase_images, split_rows
    from app.training import load_run_phase, predict_batches

    phase = load_run_phase(ws, run)
    if views:
        phase.views = True
    rows = [r for r in split_rows(ws, dataset, "test") if r["labeled"]]
    outputs = predict_batches(phase, torch.from_numpy(phase_images(ws, phase, rows)), 64)
    if phase.spec.output == "class_probabilities":
        outputs = 1.0 - outputs[:, phase.classes.index("normal")]
    return outputs, rows


def auroc(scores: np.ndarray, rows: list[dict], positives: set[str], same_kind: bool = False) -> float:
    """Normal vs ``positives``; with ``same_kind`` only the normals of the positives' own
    modality and region (in the demo each anomaly kind lives in one, so "all normals" also
    measures how well a detector tells that kind of image from the others)."""
    from core.metrics import anomaly_auroc

    kinds = {(r.get("modality"), r.get("region")) for r in rows if r["label"] in positives}
    keep = [k for k, r in enumerate(rows) if r["label"] in positives or
            (r["label"] == "normal" and (not same_kind or (r.get("modality"), r.get("region")) in kinds))]
    labels = np.array([0 if rows[k]["label"] == "normal" else 1 for k in keep])
    return float(anomaly_auroc(labels, scores[keep]))


def one_run(args: argparse.Namespace, seed: int, tmp: str) -> tuple[dict, dict, float | None]:
    """AUROC (known, unknown) per detector for one seed; the test counts; the hybrid's weight."""
    from app.collectors import collect
    from app.organize.dataset_tools import hold_out_class
    from app.organize.organizer import organize
    from app.training import train
    from app.workspace import Workspace

    if args.dataset:
        ws, source = Workspace.open(args.workspace or "."), args.dataset
    else:
        ws, source = Workspace.open(tmp), "demo"
        collect("demo", ws, scale=args.scale, seed=seed)
        organize(ws, "demo", "demo", seed=seed)
    open_name = f"{source}-without-{args.hold_out}"
    held = hold_out_class(ws, source, args.hold_out, f"{open_name}-{seed}")
    open_name = f"{open_name}-{seed}"
    known = set(held.classes) - {"normal"}
    print(f"seed {seed}: {source}, {args.hold_out!r} held out; known anomaly classes {sorted(known)}", flush=True)
    common = {"image_size": args.image_size, "epochs": args.epochs, "batch_size": 16, "seed": seed}
    sup = train(ws, open_name, "supervised", run=f"open-sup-{seed}", pretrained=False, backbone=args.backbone,
                **common)
    decoder = {"decoder": args.vae_decoder} if args.vae_decoder else {}
    vae = train(ws, open_name, "vae", run=f"open-vae-{seed}", score=args.vae_score, **decoder, **common)
    hyb = train(ws, open_name, "hybrid", run=f"open-hyb-{seed}", supervised_run=sup.run, vae_run=vae.run)
    half = train(ws, open_name, "hybrid", run=f"open-hyb-half-{seed}", supervised_run=sup.run, vae_run=vae.run,
                 weight=0.5)
    chosen = train(ws, open_name, "hybrid", run=f"open-hyb-run-{seed}", supervised_run=sup.run, vae_run=vae.run,
                   vae_scoring="run")
    table, kept = {}, {}
    for name, run, views in (("supervised", sup.run, False), ("vae", vae.run, False), ("vae_views", vae.run, True),
                             ("hybrid", hyb.run, False), ("hybrid_w05", half.run, False),
                             ("hybrid_vae_run", chosen.run, False)):
        scores, rows = scores_on_test(ws, run, open_name, views)
        table[name] = (auroc(scores, rows, known), auroc(scores, rows, {args.hold_out}),
                       auroc(scores, rows, {args.hold_out}, same_kind=True))
        kept[name] = scores
    if args.save_scores:
        folder = Path(args.save_scores)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"scores-{seed}.npz", labels=np.array([r["label"] for r in rows]), **kept)
    counts = {label: sum(r["label"] == label for r in rows) for label in ["normal", *sorted(known), args.hold_out]}
    print("  " + ", ".join(f"{k} {a:.3f} / {b:.3f} ({c:.3f})" for k, (a, b, c) in table.items()), flush=True)
    return table, counts, hyb.metrics.get("weight")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hold-out", default="tumor", help="the anomaly class kept unknown")
    parser.add_argument("--scale", type=int, default=6, help="demo size multiplier (6: about 900 items)")
    parser.add_argument("--dataset", help="an organized dataset of --workspace instead of the demo")
    parser.add_argument("--workspace", help="the workspace holding --dataset")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--backbone", default="efficientnet_b0", help="the supervised phase's timm backbone")
    parser.add_argument("--save-scores", metavar="DIR", help="keep each seed's test scores here (npz)")
    parser.add_argument("--vae-score", default="ssim", choices=["mse", "l1", "ssim", "kl"])
    parser.add_argument("--vae-decoder", choices=["calibrated", "per-image", "fixed"],
                        help="the VAE's reconstruction term (default: the VAE phase's)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one whole run each")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    began = time.perf_counter()
    seeds = [int(v) for v in args.seeds.split(",")]
    runs = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(args, seed, tmp))
    names = list(runs[0][0])
    mean = {name: tuple(float(np.mean([r[0][name][i] for r in runs])) for i in range(3)) for name in names}
    counts, weight = runs[0][1], runs[0][2]
    source = args.dataset or "demo"
    print(f"\nOpen-set test on {source} ({', '.join(f'{k} {v}' for k, v in counts.items())} test images in "
          f"the first run), {args.hold_out!r} never seen in training; mean of {len(seeds)} runs (seeds "
          f"{args.seeds}), then each run:\n")
    print("| detector | AUROC normal vs known | AUROC normal vs unknown | unknown vs its own kind's normals | "
          "runs (known / unknown) |\n| --- | --- | --- | --- | --- |")
    labels = {"vae": "VAE (as validation chose)", "vae_views": "VAE, all views (the hybrid's part)",
              "hybrid": f"hybrid (weight {weight})", "hybrid_w05": "hybrid (weight 0.5, by hand)",
              "hybrid_vae_run": f"hybrid (weight {weight}, the VAE as validation chose)"}
    for name in names:
        each = "; ".join(f"{r[0][name][0]:.3f} / {r[0][name][1]:.3f}" for r in runs)
        print(f"| {labels.get(name, name)} | {mean[name][0]:.3f} | {mean[name][1]:.3f} | {mean[name][2]:.3f} | {each} |")
    print("\nNo published anchor exists for the demo data: the hybrid should beat the supervised row "
          "on the unknown class while keeping its known-class AUROC. The fourth column compares the unknown "
          "class with the normals of its own modality and region only: a classifier can rank an unknown kind "
          "below normals (AUROC < 0.5) just because every image of that modality it was trained on was normal.")
    if args.json:
        figures = {
            "dataset": source, "held_out": args.hold_out, "seeds": seeds, "test_counts_first_run": counts,
            "hybrid_weight": weight, "backbone": args.backbone, "epochs": args.epochs, "image_size": args.image_size, "vae_score": args.vae_score,
            "vae_decoder": args.vae_decoder or "default",
            "seconds": round(time.perf_counter() - began, 1),
        }
        for name, key in ((n, n) for n in names):
            figures[f"auroc_known_{key}"] = round(mean[name][0], 4)
            figures[f"auroc_unknown_{key}"] = round(mean[name][1], 4)
            figures[f"auroc_unknown_same_kind_{key}"] = round(mean[name][2], 4)
            figures[f"runs_{key}"] = [[round(v, 4) for v in r[0][name]] for r in runs]
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
