#!/usr/bin/env python3
"""The out-of-distribution gate against real images: does predict refuse what its models never saw?

Trains the demo workflow's models (fast mode) in a fresh workspace, then predicts on
every real image and series under ../shared/data (the demo's images are generated
phantoms, so every real image is outside what its models saw, even where modality and
region match) and on the demo's own test split.

    python benchmarks/ood.py [--data ../shared/data] [--workspace DIR] [--json FILE]

Keys: flagged_real (goal >= 0.95), flagged_in_distribution (goal <= 0.05),
demo_macro_auc, demo_min_class_sensitivity (the demo supervised model's test figures),
and per-folder counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def real_inputs(data: Path) -> list[Path]:
    """Each folder of real images (one predict call each; DICOM series stay whole), and loose volumes."""
    targets = []
    for folder in sorted(p for p in data.rglob("*") if p.is_dir()):
        if "medmnist" in folder.parts:
            continue
        if any(f.is_file() and f.suffix.lower() not in (".md", ".txt", ".csv", ".json") for f in folder.iterdir()):
            targets.append(folder)
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workspace", type=Path, help="reuse this workspace (its demo workflow is resumed)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} is absent: the real images live in ../shared/data beside the project.")
    from app.organize.organizer import read_rows
    from app.organize.rows import row_place
    from app.predict import predict
    from app.verdict import model_verdict
    from app.workflow import WorkflowOptions, run_workflow
    from app.workspace import Workspace

    made = args.workspace is None
    where = args.workspace or Path(tempfile.mkdtemp(prefix="ood-"))
    try:
        ws = Workspace.open(where)
        started = time.perf_counter()
        state = run_workflow(ws, WorkflowOptions(dataset="demo", fast=True))
        trained_s = time.perf_counter() - started
        runs = {p: state["steps"][p]["run"] for p in ("supervised", "vae", "hybrid")}
        per_folder, outside, total = {}, 0, 0
        reasons: dict[str, int] = {}
        appearance_checked = appearance_flagged = 0
        for folder in real_inputs(args.data):
            try:
                result = predict(ws, folder, overlays=False)
            except Exception as err:  # noqa: BLE001 - a folder the app cannot read at all is reported, not fatal
                per_folder[str(folder.relative_to(args.data))] = {"error": str(err)[:200]}
                continue
            answered = [p for p in result.predictions if p.run or p.outside]
            flagged = sum(1 for p in answered if p.outside)
            per_folder[str(folder.relative_to(args.data))] = {"items": len(answered), "outside": flagged}
            for p in answered:
                reason = ("appearance" if "unlike its training images" in p.note else
                          "region unknown" if "region could not be told" in p.note else
                          "modality/region never seen" if p.outside else "inside")
                reasons[reason] = reasons.get(reason, 0) + 1
                if p.run and p.ood_distance is not None:  # routed: would the appearance check alone flag it?
                    appearance_checked += 1
                    appearance_flagged += "unlike its training images" in p.note
            outside, total = outside + flagged, total + len(answered)
        # The appearance check alone: every real item routed by modality (--allow-ood) and its distance read.
        alone_checked = alone_flagged = 0
        for folder in real_inputs(args.data):
            try:
                loose = predict(ws, folder, overlays=False, allow_ood=True)
            except Exception:  # noqa: BLE001 - reported in the first pass
                continue
            for p in loose.predictions:
                if p.ood_distance is not None:
                    alone_checked += 1
                    alone_flagged += "unlike its training images" in p.note
        # The demo's own test split, predicted the same way (each file alone, as a user would).
        raw = ws.raw_dir / "demo" / "demo"
        test_rows = read_rows(ws.organized_path("demo") / "splits" / "test.csv")
        test_files = {ws.resolve(row_place(ws, r)).resolve() for r in test_rows}
        result = predict(ws, raw, overlays=False)
        # Where each item is: the private map, as for a dataset row.
        inside = [p for p in result.predictions if ws.private.path_of(p.item).resolve() in test_files]
        in_flagged = sum(1 for p in inside if p.outside)
        sup = ws.run_metadata(runs["supervised"])
        test = sup.get("evaluation", {}).get("test", {})
        sensitivities = [c["sensitivity"] for c in test.get("per_class", {}).values() if c.get("support")]
        results = {
            "flagged_real": outside / total if total else None, "real_items": total,
            "flagged_in_distribution": in_flagged / len(inside) if inside else None, "in_distribution_items": len(inside),
            "demo_macro_auc": test.get("roc_auc_ovr"),
            "demo_min_class_sensitivity": min(sensitivities) if sensitivities else None,
            "demo_ece_after_calibration": test.get("ece"),
            "calibration": sup.get("calibration"),
            "verdicts": {run: model_verdict(ws.run_metadata(run)).text for run in runs.values()},
            "workflow_seconds": round(trained_s, 1), "per_folder": per_folder, "reasons_real": reasons,
            "appearance_flagged_of_routed_real": [appearance_flagged, appearance_checked],
            "appearance_alone_flagged_real": alone_flagged / alone_checked if alone_checked else None,
            "appearance_alone_items": alone_checked,
        }
    finally:
        if made:
            shutil.rmtree(where, ignore_errors=True)
    print(f"{'figure':<34} {'ours':>8}  goal")
    rows = [("real images flagged outside", results["flagged_real"], ">= 0.95"),
            ("demo test images flagged outside", results["flagged_in_distribution"], "<= 0.05"),
            ("demo supervised macro AUC", results["demo_macro_auc"], ">= 0.90"),
            ("demo min class sensitivity", results["demo_min_class_sensitivity"], "> 0"),
            ("demo test ECE (calibrated)", results["demo_ece_after_calibration"], "<= 0.10")]
    for name, value, goal in rows:
        print(f"{name:<34} {value if value is None else f'{value:.3f}':>8}  {goal}")
    print(f"({results['real_items']} real items, {results['in_distribution_items']} demo test items; "
          f"workflow {results['workflow_seconds']} s)")
    print(f"real items by reason: {results['reasons_real']}; routed real items the appearance check flagged: "
          f"{appearance_flagged} of {appearance_checked}; with every real item routed by modality alone "
          f"(--allow-ood), the appearance check flags {alone_flagged} of {alone_checked}")
    for folder, row in results["per_folder"].items():
        print(f"  {folder}: {row}")
    for run, verdict in results["verdicts"].items():
        print(f"  verdict {run}: {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
