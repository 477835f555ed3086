"""What a short screening run's validation figure says about a recipe, by how its weights
are averaged: torch's EMA with a fixed decay (until session 29), the same bias-corrected
(now, app/training.py ema_decay) and no average (the last step's weights).

    python benchmarks/short_runs.py --data ../shared/data/medmnist/breastmnist.npz \
        [--recipes resnet10t-64,efficientnet_b0-64,resnet10t-32] [--epochs 2,5] [--seed 0] [--json FILE]

Each recipe of the search (app/recipes.py RECIPES_2D, by name) is trained for each number
of epochs, once per variant, from the same seed, and the best validation AUC of each run
(the figure successive halving ranks recipes by) is printed. The recipe search's
screening rounds on a small set are this short: two to eight epochs of nine batches on
BreastMNIST, where a fixed decay of 0.99 averages over about 100 steps from the first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("fixed", "corrected", "none")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a MedMNIST-format 2D .npz file")
    parser.add_argument("--recipes", default="resnet10t-64,efficientnet_b0-64,resnet10t-32",
                        help="names from app/recipes.py RECIPES_2D, comma-separated")
    parser.add_argument("--epochs", default="2,5", help="run lengths, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    import app.training
    from app.organize.organizer import organize
    from app.recipes import RECIPES_2D
    from app.training import train
    from app.workspace import Workspace
    from core.errors import WorkbenchError

    known = {r.name: r for r in RECIPES_2D}
    chosen = [name.strip() for name in args.recipes.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        print(f"Error: no recipe named {', '.join(unknown)}; the search's recipes are {', '.join(known)}",
              file=sys.stderr)
        return 2
    lengths = [int(e) for e in args.epochs.split(",")]
    corrected = app.training.weight_average

    def fixed(model, decay):  # torch's EMA as the app used it until session 29
        return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) if decay else None

    rows = []
    with tempfile.TemporaryDirectory(prefix="short-runs-") as tmp:
        ws = Workspace(Path(tmp) / "ws")
        try:
            organize(ws, Path(args.data), "bench")
        except WorkbenchError as error:
            print(f"Error: {error}", file=sys.stderr)
            return 2
        for name in chosen:
            recipe = known[name]
            for epochs in lengths:
                row = {"recipe": name, "epochs": epochs}
                for variant in VARIANTS:
                    app.training.weight_average = fixed if variant == "fixed" else corrected
                    options = {**recipe.options(), **({"ema": 0.0} if variant == "none" else {})}
                    run = f"{name.replace('+', '-')}-{epochs}-{VARIANTS.index(variant)}"
                    train(ws, "bench", "supervised", run=run, epochs=epochs, batch_size=args.batch_size, seed=args.seed,
                          pretrained=False, patience=epochs, **options)
                    row[variant] = round(float(ws.run_metadata(run)["best_metric"]), 4)
                app.training.weight_average = corrected
                rows.append(row)
                print(f"  {name}, {epochs} epochs: " + ", ".join(f"{v} {row[v]:.4f}" for v in VARIANTS), flush=True)
    print(f"\n{Path(args.data).name}: best validation AUC of a short run, seed {args.seed} "
          "(recipe settings as the search screens them: EMA 0.99 unless 'none')\n")
    print("| recipe | epochs | EMA 0.99 fixed (before) | EMA 0.99 bias-corrected (now) | no average |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['recipe']} | {row['epochs']} | " + " | ".join(f"{row[v]:.4f}" for v in VARIANTS) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": Path(args.data).name, "seed": args.seed, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
