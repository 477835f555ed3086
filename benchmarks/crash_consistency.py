#!/usr/bin/env python3
"""Crash consistency: organize, train, evaluate and export killed with SIGKILL at seeded points.

For each operation, a workspace where the steps before it are done is copied; the
operation is started as `main.py ...` in its own process and killed with SIGKILL after a
delay drawn (seeded) between 0 and 1.2 times its uninterrupted duration. Then:

- right after the kill, what is on disk must be whole: an organized dataset's CSVs match
  the version its metadata.json names (never half old, half new), a bundle that is there
  passes its hash check, a checkpoint that is there loads;
- no process the killed one started may still run (found by a marker in their environment);
- the operation is run again to the end: the final state must equal an uninterrupted
  run's (dataset CSVs and metadata, the model's weights, the evaluation's figures, the
  bundle's model and card), and no temporary file may be left anywhere.

    python benchmarks/crash_consistency.py [--points 20] [--ops organize,train,evaluate,export] [--json FILE]

Goals (issue 23): inconsistent_states 0, orphan_processes 0, leftover_temp_files 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OPS = ("organize", "train", "evaluate", "export")
TEMP = re.compile(r"^\..+\.(tmp|new|old|partial)\.\d+-[0-9a-f]+$")


def make_source(folder: Path, per_class: int, seed: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in ("normal", "pneumonia"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            pixels = rng.normal(100 if label == "normal" else 150, 30, (48, 48)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{label}_{k:03d}.png")
    return folder


def command(op: str, ws: Path, source: Path) -> list[str]:
    base = [sys.executable, str(ROOT / "main.py")]
    tail = ["--workspace", str(ws)]
    return {
        "organize": base + ["organize", str(source), "--name", "ds", "--replace", "--workers", "2"] + tail,
        "train": base + ["train", "--dataset", "ds", "--phase", "supervised", "--run-name", "r", "--epochs", "3",
                         "--image-size", "32", "--batch-size", "16", "--backbone", "resnet10t"] + tail,
        "evaluate": base + ["evaluate", "r"] + tail,
        "export": base + ["export", "r"] + tail,
    }[op]


def run_op(op: str, ws: Path, source: Path, mark: str | None = None, kill_after: float | None = None) -> float:
    env = {**os.environ, "MEDANOMALY_CRASH_MARK": mark or "none"}
    started = time.perf_counter()
    proc = subprocess.Popen(command(op, ws, source), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    if kill_after is None:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{op} failed uninterrupted: {err.decode()[-2000:]}")
        return time.perf_counter() - started
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)  # the process alone: its workers must go by themselves
        proc.wait()
    return time.perf_counter() - started


def marked_processes(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"MEDANOMALY_CRASH_MARK={mark}".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprint(ws: Path, op: str) -> dict[str, str]:
    """What must be equal after an interrupted and rerun operation and an uninterrupted one."""
    from app.workspace import Workspace

    workspace = Workspace.open(ws)
    out: dict[str, str] = {}
    folder = workspace.organized_path("ds")
    for part in ("labeled.csv", "unlabeled.csv", "splits/train.csv", "splits/val.csv", "splits/test.csv"):
        out[part] = _hash((folder / part).read_bytes())
    meta = json.loads((folder / "metadata.json").read_text())
    out["dataset metadata"] = _hash(json.dumps({k: v for k, v in meta.items() if k != "created"}, sort_keys=True).encode())
    if op in ("train", "evaluate", "export"):
        import torch

        state = torch.load(workspace.run_dir("r") / "best.pt", map_location="cpu", weights_only=True)["model_state"]
        out["weights"] = _hash(b"".join(v.numpy().tobytes() for _, v in sorted(state.items())))
    if op in ("evaluate", "export"):
        evaluation = json.loads((workspace.run_dir("r") / "metadata.json").read_text())["evaluation"]["test"]
        out["evaluation"] = _hash(json.dumps({k: v for k, v in evaluation.items() if k != "evaluated"},
                                             sort_keys=True, default=str).encode())
        folder = workspace.run_dir("r") / "evaluation"
        out["evaluation files"] = _hash(json.dumps(sorted(p.name for p in folder.iterdir())).encode())
        out["report.md"] = _hash((folder / "report.md").read_bytes())
    if op == "export":
        bundle = workspace.export_dir("r")
        out["model.onnx"] = _hash((bundle / "model.onnx").read_bytes())
        card = json.loads((bundle / "metadata.json").read_text())
        out["card files"] = _hash(json.dumps(card["files"], sort_keys=True).encode())
    return out


def whole_after_kill(ws: Path, op: str) -> list[str]:
    """What is on disk right after a kill, checked without repairing anything first."""
    from app.organize.organizer import dataset_version

    problems = []
    folder = ws / "data" / "organized" / "ds"
    if (folder / "metadata.json").exists():
        meta = json.loads((folder / "metadata.json").read_text())
        if meta.get("version") != dataset_version(folder):
            problems.append("dataset CSVs do not match the version in metadata.json")
    elif op != "organize" or folder.exists():
        problems.append("dataset folder without metadata.json")
    bundle = ws / "exports" / "r"
    if bundle.exists():
        from app.bundle import load_bundle

        try:
            load_bundle(bundle, keys_from=ws / "data")
        except Exception as err:  # noqa: BLE001 - any failure here is the finding
            problems.append(f"bundle does not load: {err}")
    report = ws / "checkpoints" / "r" / "evaluation" / "report.md"
    if report.exists():  # an evaluation folder is there whole: every figure its report shows
        missing = [m for m in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report.read_text()) if not (report.parent / m).exists()]
        if missing:
            problems.append(f"evaluation folder misses {missing}")
    elif (ws / "checkpoints" / "r" / "evaluation").exists():
        problems.append("evaluation folder without report.md")
    for name in ("best.pt", "last.pt"):
        path = ws / "checkpoints" / "r" / name
        if path.exists():
            from app.checkpoints import load_checkpoint

            try:
                load_checkpoint(path)
            except Exception as err:  # noqa: BLE001
                problems.append(f"{name} does not load: {err}")
    return problems


def leftovers(ws: Path) -> list[str]:
    return [str(p.relative_to(ws)) for p in ws.rglob("*") if TEMP.match(p.name) or p.name.endswith(".tmp")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20, help="kill points per operation (default 20)")
    parser.add_argument("--ops", default=",".join(OPS), help="operations to kill (default all four)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=120, help="images per class in the made dataset")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    if not set(ops) <= set(OPS) or args.points < 1:
        parser.error(f"--ops takes some of {', '.join(OPS)}; --points at least 1")
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="crash-"))
    try:
        old_source = make_source(work / "old", max(8, args.per_class // 3), args.seed + 1)
        source = make_source(work / "new", args.per_class, args.seed)
        # The workspace before each operation, and the uninterrupted run's fingerprints.
        before: dict[str, Path] = {}
        reference: dict[str, dict[str, str]] = {}
        durations: dict[str, float] = {}
        ws = work / "reference"
        run_op("organize", ws, old_source)
        for op in OPS[: max(OPS.index(o) for o in ops) + 1]:  # the steps up to the last one killed
            before[op] = work / f"before-{op}"
            shutil.copytree(ws, before[op], symlinks=True)
            durations[op] = run_op(op, ws, source)
            if op in ops:
                reference[op] = fingerprint(ws, op)
        results = {"kill_points": 0, "inconsistent_states": 0, "orphan_processes": 0, "leftover_temp_files": 0,
                   "per_op": {}, "findings": []}
        for op in ops:
            counts = {"kill_points": 0, "inconsistent_states": 0, "orphan_processes": 0, "leftover_temp_files": 0}
            for point in range(args.points):
                delay = rng.uniform(0.0, 1.2 * durations[op])
                target = work / f"{op}-{point}"
                shutil.copytree(before[op], target, symlinks=True)
                mark = uuid.uuid4().hex
                run_op(op, target, source, mark, kill_after=delay)
                time.sleep(0.5)  # the kernel's kill of orphaned workers is not instant
                orphans = marked_processes(mark)
                for pid in orphans:
                    os.kill(pid, signal.SIGKILL)
                problems = whole_after_kill(target, op)
                run_op(op, target, source)
                if fingerprint(target, op) != reference[op]:
                    changed = [k for k, v in fingerprint(target, op).items() if reference[op].get(k) != v]
                    problems.append(f"final state differs from an uninterrupted run's: {changed}")
                left = leftovers(target)
                counts["kill_points"] += 1
                counts["inconsistent_states"] += bool(problems)
                counts["orphan_processes"] += len(orphans)
                counts["leftover_temp_files"] += len(left)
                if problems or orphans or left:
                    results["findings"].append({"op": op, "point": point, "delay_s": round(delay, 2),
                                                "problems": problems, "orphans": len(orphans), "leftovers": left})
                shutil.rmtree(target, ignore_errors=True)
            results["per_op"][op] = {**counts, "uninterrupted_s": round(durations[op], 2)}
            for key in counts:
                results[key] += counts[key]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'operation':<10} {'kill points':>11} {'inconsistent':>12} {'orphans':>8} {'temp files':>10} {'run s':>6}")
    for op, row in results["per_op"].items():
        print(f"{op:<10} {row['kill_points']:>11} {row['inconsistent_states']:>12} {row['orphan_processes']:>8} "
              f"{row['leftover_temp_files']:>10} {row['uninterrupted_s']:>6}")
    print(f"{'all':<10} {results['kill_points']:>11} {results['inconsistent_states']:>12} "
          f"{results['orphan_processes']:>8} {results['leftover_temp_files']:>10}   (goal: 0 / 0 / 0)")
    for finding in results["findings"]:
        print("finding:", finding)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
