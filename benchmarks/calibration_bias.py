"""Where a classifier's class bias comes from, measured on the same logits: none (the
temperature alone), fitted on validation with the temperature (the default until session
25), the log of the training split's class shares with the temperature fitted (the
default since), or the log of the validation split's shares (what the app takes since
session 31 when the two splits' shares differ beyond chance, models/supervised.py
proportions_shift; the table marks the app's choice).

    python benchmarks/calibration_bias.py --data ../shared/data/medmnist/pneumoniamnist.npz \
        [--minutes 7] [--backbone resnet10t] [--image-size 64] [--seed 0] [--json FILE]

One run is trained with calibration off (2D: the recipe search's regularization, strong
augmentation, mixup 0.4, EMA 0.99, class weights; 3D files: the cube3d phase as
benchmarks/medmnist.py trains it without flags, ResNet-10 3D of width 16 at the native
28 voxels, strong augmentation, class weights); its validation and test logits are
kept, and each variant is fitted on validation and read on test: argmax accuracy and ECE
(10 bins, as the app reports it). These are the plain log-loss fits, without the app's
guards for a validation split the model tells apart entirely (ClassifierPhase.finish sets
the temperature by Laplace's rule there, or leaves a wild model as trained).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _fitted_bias(logits, targets):
    """The temperature and a free per-class bias minimizing the validation log-loss."""
    import torch
    import torch.nn.functional as F

    log_t = torch.zeros(1, requires_grad=True)
    bias = torch.zeros(logits.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t, bias], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def nll():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp() + bias, targets)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().exp()), (bias - bias.mean()).detach()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a MedMNIST-format .npz file (2D or 3D)")
    parser.add_argument("--minutes", type=float, default=7.0)
    parser.add_argument("--backbone", help="default resnet10t (2D) or resnet10 (3D)")
    parser.add_argument("--image-size", type=int, help="default 64 (2D) or 28 (3D)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    import numpy as np
    import torch

    from app.data import phase_inputs, split_rows
    from app.organize.organizer import organize
    from app.training import load_run_phase, train
    from app.workspace import Workspace
    from core.metrics import calibration_errors
    from models.supervised import fit_temperature, prior_bias, proportions_shift

    data = Path(args.data).expanduser().resolve()
    with np.load(data, mmap_mode="r") as arrays:
        shape = arrays["train_images"].shape
    volumes = len(shape) == 4 and shape[-1] != 3
    args.backbone = args.backbone or ("resnet10" if volumes else "resnet10t")
    args.image_size = args.image_size or (28 if volumes else 64)
    if volumes:  # the 3D defaults of benchmarks/medmnist.py
        phase_name, options = "cube3d", {"lr": 1e-3, "width": 16}
    else:
        phase_name, options = "supervised", {"lr": 3e-3, "pretrained": False, "ema": 0.99, "mixup": 0.4}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(tmp)
        organize(ws, data, "bench")
        result = train(ws, "bench", phase_name, run="bench", backbone=args.backbone, image_size=args.image_size,
                       epochs=40, batch_size=args.batch_size, augment="strong", seed=args.seed, patience=100,
                       time_limit_s=args.minutes * 60, max_epochs=100, class_weights=True, calibration="none",
                       **options)
        phase = load_run_phase(ws, "bench")
        phase.model.eval()

        def logits_of(split: str) -> tuple[torch.Tensor, torch.Tensor]:
            rows = phase.select_rows(split_rows(ws, "bench", split))
            images = phase_inputs(ws, phase, rows, None, f"Loading {split} images")
            with torch.no_grad():
                out = torch.cat([phase.model(images[i : min(i + 64, len(images))])
                                 for i in range(0, len(images), 64)]).float()
            return out, phase.targets(rows)

        val_logits, val_targets = logits_of("val")
        test_logits, test_targets = logits_of("test")
        train_labels = [r["label"] for r in phase.select_rows(split_rows(ws, "bench", "train"))]
    counts = [train_labels.count(c) for c in phase.classes]
    zeros = torch.zeros(len(phase.classes))
    shares = prior_bias(counts)
    val_counts = torch.bincount(val_targets, minlength=len(phase.classes)).tolist()
    val_shares = prior_bias(val_counts)
    shift = proportions_shift(counts, val_counts)
    variants = {
        "none (temperature alone)": (fit_temperature(val_logits, val_targets, zeros), zeros),
        "fitted on validation (until session 25)": _fitted_bias(val_logits, val_targets),
        "training shares, temperature fitted" + (" (the app's choice)" if shift is None else ""):
            (fit_temperature(val_logits, val_targets, shares), shares),
        "validation shares, temperature fitted" + (" (the app's choice: the shares differ)" if shift is not None else ""):
            (fit_temperature(val_logits, val_targets, val_shares), val_shares),
    }
    rows = []
    print(f"\n{data.name}: {phase_name} {args.backbone} {args.image_size} px, seed {args.seed}, {result.epochs_done} epochs; "
          f"training shares {', '.join(f'{c} {n / sum(counts):.1%}' for c, n in zip(phase.classes, counts))}; "
          f"validation shares {', '.join(f'{c} {n / sum(val_counts):.1%}' for c, n in zip(phase.classes, val_counts))}"
          + (f" (differ beyond chance, p = {shift:.2g})" if shift is not None else "") + "\n")
    print("| bias | temperature | bias values | test ACC | test ECE | validation ACC |\n| --- | --- | --- | --- | --- | --- |")
    for name, (temperature, bias) in variants.items():
        test = torch.softmax(test_logits / temperature + bias, 1).numpy()
        val = torch.softmax(val_logits / temperature + bias, 1).numpy()
        row = {"variant": name, "temperature": round(temperature, 3), "bias": [round(float(b), 3) for b in bias],
               "test_acc": round(float((test.argmax(1) == test_targets.numpy()).mean()), 4),
               "test_ece": round(calibration_errors(test, test_targets.numpy())["ece"], 4),
               "val_acc": round(float((val.argmax(1) == val_targets.numpy()).mean()), 4)}
        rows.append(row)
        print(f"| {name} | {row['temperature']:.3f} | {', '.join(f'{b:+.2f}' for b in row['bias'])} | "
              f"{row['test_acc']:.3f} | {row['test_ece']:.3f} | {row['val_acc']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": data.name, "phase": phase_name, "backbone": args.backbone, "image_size": args.image_size,
                                               "seed": args.seed, "epochs": result.epochs_done, "train_counts": counts,
                                               "classes": phase.classes, "variants": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
