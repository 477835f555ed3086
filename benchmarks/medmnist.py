#!/usr/bin/env python3
"""Train on a MedMNIST ``.npz`` with the app's own engine; test AUC/ACC beside the anchors.

    python benchmarks/medmnist.py --data ../shared/data/medmnist/pneumoniamnist_subset.npz \\
        [--minutes 10] [--backbone efficientnet_b0] [--image-size 64] [--ensemble 1] [--json FILE]

The file is organized as it comes (official splits), trained with the `supervised`
phase (2D) or the `cube3d` phase (3D files), with strong augmentation unless
``--augment`` says otherwise, under a wall-clock budget (epochs are planned from a timed probe, and the
training loop fits the plan again after timing its first epochs, so that the learning-rate schedule
completes), evaluated once on the test split. ``--ensemble K`` shares the same budget among K runs
that differ only in seed (``--seed`` the first) and averages their calibrated probabilities (app.evaluate.evaluate_ensemble).

``--recipe auto`` (the default for 2D files when no recipe flag is given: ``--backbone``,
``--image-size``, ``--augment``, ``--lr``, ``--ema``, ``--mixup``) screens a few recipes on the
validation split and continues the best to the end of the budget (app/recipes.py); the JSON
then holds ``recipe`` (the chosen one) and ``trials`` (each recipe's validation figure). Time
left after the winner's 100 epochs trains more members, each kept only when validation agrees
(``search_ensemble``) and averaged into the search's run, one model as the menus, the workflow
and the dashboard give it; the test figures are then the average's, and ``winner_alone`` holds
the winner's own (single view: the search also averages each image with its mirror where
validation does not refuse it, ``search_ensemble.mirror``). 3D files keep the 3D defaults, which carried to sets nobody tuned on.
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

MAX_EPOCHS = 100  # MedMNIST v2 trains 100 epochs: a time-limited run's plan grows no further

# MedMNIST v2 (Yang et al., Sci Data 2023) test AUC / ACC, from ../shared/docs/ANCHORS.md.
ANCHORS = {
    "pneumoniamnist": [("ResNet-18 (28)", .944, .854), ("ResNet-18 (224)", .956, .864), ("ResNet-50 (28)", .948, .854),
                       ("ResNet-50 (224)", .962, .884), ("auto-sklearn", .942, .855), ("AutoKeras", .947, .878),
                       ("Google AutoML Vision", .991, .946)],
    "breastmnist": [("ResNet-18 (28)", .901, .863), ("ResNet-18 (224)", .891, .833), ("ResNet-50 (28)", .857, .812),
                    ("ResNet-50 (224)", .866, .842), ("auto-sklearn", .836, .803), ("AutoKeras", .871, .831),
                    ("Google AutoML Vision", .919, .861)],
    "adrenalmnist3d": [("ResNet-18 + 2.5D", .718, .772), ("ResNet-18 + 3D", .827, .721), ("ResNet-18 + ACS", .839, .754),
                       ("ResNet-50 + 3D", .828, .745), ("auto-sklearn", .828, .802), ("AutoKeras", .804, .705)],
    # Multi-label (14 findings): AUC and ACC are means over the findings (ACC at 0.5). Not in ANCHORS.md: from
    # MedMNIST v2's table of 2D results (Yang et al. 2023), the source of the rows above. Five rows (the two
    # at 224 px, auto-sklearn, AutoKeras, AutoML Vision) agree with a second public copy of the table (a
    # dataset card's); the two 28 px rows have not been checked against a second copy.
    "chestmnist": [("ResNet-18 (28)", .768, .947), ("ResNet-18 (224)", .773, .947), ("ResNet-50 (28)", .769, .947),
                   ("ResNet-50 (224)", .773, .948), ("auto-sklearn", .649, .779), ("AutoKeras", .742, .937),
                   ("Google AutoML Vision", .778, .948)],
}


def seconds_per_epoch(backbone: str, size: int, batch: int, train_images: int, dims: int = 2, width: int = 32,
                      device: str = "cpu", channels: int = 1) -> float:
    """Time a few training steps of the model alone on ``device``, to size the run to the budget
    (a first guess: the run refits its plan after its first epochs)."""
    from app.timing import probe_seconds_per_epoch

    if dims == 3:
        from models.cube3d import create_resnet3d

        model = create_resnet3d(backbone, width, 2)
    else:
        from models.supervised import create_backbone

        model = create_backbone(backbone, 2, pretrained=False, in_chans=channels)
    return probe_seconds_per_epoch(model, (channels, *(size,) * dims), train_images, batch, device)


def seeds_used(first: int, members: int) -> str:
    """How the table names the seeds: nothing for the default one run of seed 0."""
    if members > 1:
        return f", ensemble of {members} seeds" + (f" ({first}-{first + members - 1})" if first else "")
    return f", seed {first}" if first else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a MedMNIST-format .npz file")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget (wall clock)")
    parser.add_argument("--backbone", help="default efficientnet_b0 (2D) or resnet10 (3D)")
    parser.add_argument("--image-size", type=int, help="default 64 (2D) or 28, the native size (3D)")
    parser.add_argument("--width", type=int, default=16, help="3D: channels of the first stage")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, help="default 3e-3 (2D) or 1e-3 (3D)")
    parser.add_argument("--augment", choices=["none", "standard", "strong"],
                        help="default strong: it scored above standard on the MedMNIST files measured here (README)")
    parser.add_argument("--recipe", choices=["auto", "flags"],
                        help="auto: search recipes on validation (2D default unless a recipe flag is given); "
                             "flags: train the flags' recipe as given")
    parser.add_argument("--flips", choices=["auto", "on", "off"],
                        help="left-right flips in the augmentation (default auto: left out where the training split's "
                             "classes mirror each other, app/laterality.py)")
    parser.add_argument("--clahe", action="store_true")
    parser.add_argument("--weight-decay", type=float, help="AdamW's decoupled weight decay; default the phase's (1e-4)")
    parser.add_argument("--ema", type=float, help="decay of a weight average (e.g. 0.99); 0: off (the default)")
    parser.add_argument("--mixup", type=float, metavar="ALPHA",
                        help="blend pairs of training images and labels, Beta(ALPHA, ALPHA) shares (e.g. 0.2); 0: off")
    parser.add_argument("--ordinal", type=float, metavar="WEIGHT",
                        help="ordered classes (e.g. RetinaMNIST's grades): squared-EMD loss term with this weight (e.g. 1)")
    parser.add_argument("--no-class-weights", action="store_true",
                        help="plain cross-entropy (MedMNIST's protocol) instead of the app's class-weighted loss")
    parser.add_argument("--tta", action="store_true", help="average with the mirrored image at test time")
    parser.add_argument("--calibration", default="temperature+bias", choices=["temperature+bias", "temperature", "none"],
                        help="the calibration after training (the app's default: temperature+bias: the temperature fitted on validation, the bias from the training split's class shares)")
    parser.add_argument("--ensemble", type=int, default=1, metavar="K",
                        help="K runs (seeds SEED..SEED+K-1) sharing the budget, probabilities averaged; default 1")
    parser.add_argument("--seed", type=int, default=0, help="the first run's seed (an ensemble's runs: SEED, SEED+1, ...)")
    parser.add_argument("--no-search-ensemble", action="store_true",
                        help="--recipe auto: never spend time left after the winner's run on more members")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if args.weight_decay is not None and args.weight_decay < 0:
        parser.error(f"--weight-decay must be 0 or more (e.g. 0.05), not {args.weight_decay:g}")
    if args.seed < 0:
        parser.error(f"--seed must be 0 or more, not {args.seed}")

    from app.evaluate import evaluate_ensemble, evaluate_run
    from app.recipes import RECIPES_2D, search_and_train
    from app.runtime import current_runtime
    from app.organize.organizer import organize
    from app.training import train
    from app.workspace import Workspace

    import numpy as np

    runtime = current_runtime()
    device = runtime.describe()
    data = Path(args.data).expanduser().resolve()
    name = data.name.split(".")[0].split("_")[0].lower()
    with np.load(data, mmap_mode="r") as arrays:
        shape = arrays["train_images"].shape
    channels = 3 if len(shape) == 4 and shape[-1] == 3 else 1
    dims = len(shape) - 1 - (channels == 3)
    phase = "cube3d" if dims == 3 else "supervised"
    flags_given = any(v is not None for v in (args.backbone, args.image_size, args.augment, args.lr, args.ema, args.mixup))
    if args.ordinal and dims == 3:
        parser.error("--ordinal is for 2D classifiers; the 3D phase has no ordinal loss")
    if args.recipe == "auto" and (dims == 3 or args.ensemble > 1):
        parser.error("--recipe auto searches 2D recipes for one run: leave it out for 3D files and ensembles")
    if args.recipe == "auto" and flags_given:
        parser.error("--recipe auto chooses backbone, image size, augmentation, learning rate, EMA and mixup itself: "
                     "leave those flags out, or use --recipe flags to train them as given")
    auto = dims == 2 and args.ensemble <= 1 and (args.recipe == "auto" or (args.recipe is None and not flags_given))
    args.augment = args.augment or "strong"
    args.ema, args.mixup = args.ema or 0.0, args.mixup or 0.0
    args.backbone = args.backbone or ("resnet10" if dims == 3 else "efficientnet_b0")
    args.image_size = args.image_size or (28 if dims == 3 else 64)
    args.lr = args.lr or (1e-3 if dims == 3 else 3e-3)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(tmp)
        result = organize(ws, data, name)
        train_images = result.split_counts["train"]
        members = max(1, args.ensemble)
        budget = args.minutes * 60 / members
        options = ({"width": args.width} if dims == 3 else {"pretrained": False, "clahe": args.clahe})
        if args.weight_decay is not None:
            options["weight_decay"] = args.weight_decay
        if args.flips:
            options["flips"] = args.flips
        options.update(class_weights=not args.no_class_weights, calibration=args.calibration)
        if args.ordinal:
            options["ordinal"] = args.ordinal
        searched: dict = {"recipe": "flags", "trials": []}
        began = time.perf_counter()
        if auto:
            print(f"{name}: {train_images} training images; screening {len(RECIPES_2D)} recipes on validation (successive halving), "
                  f"then the best to the end of {args.minutes:g} minutes", flush=True)
            found, searched = search_and_train(ws, name, budget, run="bench", seed=args.seed,
                                               batch_size=args.batch_size, ensemble=not args.no_search_ensemble,
                                               **options)
            runs = [found]
            chosen = searched["recipe"]
            args.backbone, args.image_size, args.lr = chosen["backbone"], chosen["image_size"], chosen["lr"]
            args.augment, args.ema, args.mixup = chosen["augment"], chosen["ema"], chosen["mixup"]
            for trial in searched["trials"]:
                print(f"  {trial['recipe']}" + (f", round {trial['round']}" if trial.get("round") else "") + f": validation {trial['val_monitor']:.4f} after {trial['epochs']} epochs "
                      f"({trial['seconds']:.0f} s)")
            print(f"  chosen: {chosen['name']}", flush=True)
            for m in searched.get("ensemble", {}).get("members", []):
                print(f"  {m['member'].rsplit('-', 1)[-1]}: {m['recipe']} (seed {m['seed']}), {m['seconds']:.0f} s of the "
                      f"time left\n    validation AUC {m['val_auc_before']:.4f} without it, {m['val_auc_with']:.4f} "
                      "with it: " + ("kept" if m["kept"] else "dropped"), flush=True)
            if searched.get("ensemble", {}).get("mirror"):
                m = searched["ensemble"]["mirror"]
                print(f"  mirror view: validation AUC {m['val_auc_single']:.4f} single, {m['val_auc_mirrored']:.4f} "
                      "mirrored: " + ("kept" if m["kept"] else "dropped"), flush=True)
        else:
            per_epoch = seconds_per_epoch(args.backbone, args.image_size, args.batch_size, train_images, dims,
                                          args.width, runtime.device, channels)
            epochs = max(1, int(budget / per_epoch))
            # The probe is a guess (on a GPU it counts CUDA's start-up); after three epochs the
            # run refits its plan to the time left, up to MedMNIST's own 100 epochs or the
            # probe's plan, whichever is more.
            ceiling = max(epochs, MAX_EPOCHS)
            print(f"{name}: {train_images} training images; about {per_epoch:.0f} s per epoch -> {epochs} epochs "
                  f"in {args.minutes / members:.3g} minutes" + (f", for each of {members} runs" if members > 1 else ""),
                  flush=True)
            options.update(ema=args.ema, mixup=args.mixup)
            runs = [train(ws, name, phase, run=f"bench-{k}", backbone=args.backbone, image_size=args.image_size,
                          epochs=epochs, batch_size=args.batch_size, lr=args.lr, augment=args.augment, seed=args.seed + k,
                          patience=ceiling, time_limit_s=budget, max_epochs=ceiling, **options) for k in range(members)]
        train_seconds = time.perf_counter() - began
        averaged = searched.get("ensemble", {}).get("runs", []) if auto else []
        folded = bool(auto and searched.get("ensemble", {}).get("averaged_in"))
        mirror = bool(auto and searched.get("ensemble", {}).get("mirror", {}).get("kept"))
        alone = None
        if folded:
            # the search's run is the average itself (one model, as the menus give it: its members,
            # and the mirror view where chosen); the winner on its own, single view, kept beside it,
            # measured too: what averaging added
            test = evaluate_run(ws, runs[0].run, "test", tta=args.tta).metrics
            alone = evaluate_run(ws, averaged[0], "test", tta=args.tta).metrics
        elif members == 1:
            test = evaluate_run(ws, runs[0].run, "test", tta=args.tta).metrics
        else:
            test = evaluate_ensemble(ws, [r.run for r in runs], "test", tta=args.tta)
        epochs_done = runs[0].epochs_done if members == 1 else "+".join(str(r.epochs_done) for r in runs)
        time_plan = ws.run_metadata(runs[0].run).get("time_plan")
        flips = ws.run_metadata(runs[0].run).get("flips")
    figures = {
        "dataset": name, "phase": phase, "backbone": args.backbone, "image_size": args.image_size, "channels": channels, "epochs": epochs_done, "ensemble": members, "seed": args.seed,
        "train_seconds": round(train_seconds, 1), "budget_used": round(train_seconds / (args.minutes * 60), 3),
        "device": device, "multilabel": "exact_match" in test, "test_auc": round(test["roc_auc_ovr"], 4),
        "test_acc": round(test["accuracy"], 4), "test_ece": round(test["ece"], 4) if "ece" in test else None, "test_auc_ci95": test["ci95"].get("roc_auc_ovr"),
        "test_acc_ci95": test["ci95"].get("accuracy"), "augment": args.augment, "clahe": args.clahe,
        "tta": args.tta, "ema": args.ema, "mixup": args.mixup, "class_weights": not args.no_class_weights, "calibration": args.calibration,
        "weight_decay": args.weight_decay, "test_acc_at_val_threshold": test.get("accuracy_at_val_threshold"),
        "lr": args.lr, "recipe": searched["recipe"], "trials": searched["trials"], "ordinal": args.ordinal or 0.0,
        "search_ensemble": searched.get("ensemble"),
        "winner_alone": ({"test_auc": round(alone["roc_auc_ovr"], 4), "test_acc": round(alone["accuracy"], 4)}
                         if alone else None),
        # every fit of the kept run's epochs to the time left: more than one means its pace changed
        # (another load on the machine), which makes the run less comparable with idle ones
        "time_plan": time_plan,
        # whether training flipped images, and the classes found to mirror each other (app/laterality.py)
        "flips": flips,
    }
    how = (f"{members} runs averaged" if members > 1 else
           f"{len(averaged)} runs averaged ({' + '.join(averaged)})" if len(averaged) > 1 else "one run")
    print(f"\n{name} test split ({test['n']} images), {how}:\n")
    print("| method | test AUC | test ACC |\n| --- | --- | --- |")
    for method, auc, acc in ANCHORS.get(name, []):
        print(f"| {method} (MedMNIST v2) | {auc:.3f} | {acc:.3f} |")
    ci_auc, ci_acc = figures["test_auc_ci95"] or [0, 0], figures["test_acc_ci95"] or [0, 0]
    extras = "".join([f", {args.augment} augmentation", ", CLAHE" if args.clahe else "", ", TTA" if args.tta else "",
                      f", EMA {args.ema:g}" if args.ema else "", f", mixup {args.mixup:g}" if args.mixup else "",
                      f", ordinal loss {args.ordinal:g}" if args.ordinal else "",
                      f", weight decay {args.weight_decay:g}" if args.weight_decay is not None else "", ", no class weights" if args.no_class_weights else "",
                      f", calibration {args.calibration}" if args.calibration != "temperature+bias" else "",
                      seeds_used(args.seed, members),
                      ", averaged with " + " and ".join(f"{m['recipe']} (seed {m['seed']})" for m in searched["ensemble"]["members"]
                                                         if m["kept"])
                      if len(averaged) > 1 else "", ", mirror view" if mirror else "",
                      ", no flips (classes mirror each other)" if (flips or {}).get("mirror_pairs") else ""])
    print(f"| **ours**: {args.backbone} ({args.image_size} px{', RGB' if channels == 3 else ''}, from scratch{extras}, {epochs_done} epochs, "
          f"{train_seconds / 60:.1f} min on {device}) | **{figures['test_auc']:.3f}** ({ci_auc[0]:.3f}-{ci_auc[1]:.3f}) | "
          f"**{figures['test_acc']:.3f}** ({ci_acc[0]:.3f}-{ci_acc[1]:.3f}) |")
    if alone:
        print(f"| ours, the winner alone (single view, before its members or its mirror were averaged in) | "
              f"{figures['winner_alone']['test_auc']:.3f} | {figures['winner_alone']['test_acc']:.3f} |")
    if figures["test_ece"] is not None:
        print(f"\nTest calibration error (ECE, 10 bins): {figures['test_ece']:.3f}")
    if figures["time_plan"] and len(figures["time_plan"]) > 1:
        print("\nThe time plan was refitted as the epochs' pace changed (another load on the machine?): "
              + ", ".join(f"{p['epochs']} epochs after epoch {p['after_epoch']} ({p['seconds_per_epoch']} s each)"
                          for p in figures["time_plan"]))
    if figures["multilabel"]:
        print("\nSeveral findings per image: one probability each; AUC and ACC are the means over the findings "
              "(ACC at 0.5), as MedMNIST reports them.")
    if figures["test_acc_at_val_threshold"] is not None:
        print(f"\nACC at the anomaly threshold chosen on validation (Youden{', any finding against none' if figures['multilabel'] else ''}): "
              f"{figures['test_acc_at_val_threshold']:.3f}")
    if name == "pneumoniamnist" and "subset" in data.name:
        print("\nNote: this PneumoniaMNIST file trains on 3882 of the official 4708 training images "
              "(val and test are the official ones).")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


def run() -> int:
    """main, with the app's own errors (a file it cannot train, a busy run) as one line and exit status 2."""
    from core.errors import WorkbenchError

    try:
        return main()
    except WorkbenchError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())
