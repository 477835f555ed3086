#!/usr/bin/env python3
"""ONNX Runtime against PyTorch eager on the same exported model, in one run.

Trains a small supervised model on the demo data (the weights do not change the
speed; they make the INT8 metric change meaningful), exports its bundle with an
INT8 copy, then times, passes interleaved: latency at batch 1 (p50, p95) and
throughput at batch 32, for PyTorch eager (no_grad, eval), ONNX Runtime FP32 and
ONNX Runtime INT8.

    python benchmarks/onnx_speed.py [--image-size 128] [--backbone efficientnet_b0] [--json FILE]

Targets (issue 8): ONNX Runtime at least 2x PyTorch eager at batch 1; max abs
difference <= 1e-4. Keys: speedup_batch1, max_abs_diff.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timings(call, batch: np.ndarray, repeats: int) -> list[float]:
    call(batch)  # warm-up
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        call(batch)
        out.append(time.perf_counter() - began)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from app.bundle import export_bundle
    from app.collectors import collect
    from app.organize.organizer import organize
    from app.training import load_run_phase, train
    from app.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(tmp)
        collect("demo", ws, scale=1)
        organize(ws, "demo", "demo")
        train(ws, "demo", "supervised", run="speed", epochs=args.epochs, image_size=args.image_size,
              batch_size=16, backbone=args.backbone, pretrained=False)
        bundle = export_bundle(ws, "speed", int8=True)
        module = load_run_phase(ws, "speed").export_module().eval()
        fp32 = ort.InferenceSession(str(bundle.path / "model.onnx"), providers=["CPUExecutionProvider"])
        int8 = ort.InferenceSession(str(bundle.path / "model.int8.onnx"), providers=["CPUExecutionProvider"])
        quantized = bundle.int8

        def eager(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(x)).numpy()

        engines = {"PyTorch eager": eager,
                   "ONNX Runtime FP32": lambda x: fp32.run(None, {"image": x})[0],
                   "ONNX Runtime INT8": lambda x: int8.run(None, {"image": x})[0]}
        rng = np.random.default_rng(0)
        one = rng.random((1, 1, args.image_size, args.image_size), dtype=np.float32)
        many = rng.random((32, 1, args.image_size, args.image_size), dtype=np.float32)
        diff = float(np.abs(engines["ONNX Runtime FP32"](many) - eager(many)).max())
        single = {name: [] for name in engines}
        batched = {name: [] for name in engines}
        for _ in range(args.rounds):  # interleaved: every engine under the same conditions
            for name, call in engines.items():
                single[name] += timings(call, one, 20)
                batched[name] += timings(call, many, 2)
    rows = {}
    for name in engines:
        p50, p95 = np.percentile(single[name], [50, 95]) * 1000
        rows[name] = {"p50_ms": p50, "p95_ms": p95, "images_per_s": 32 / float(np.median(batched[name]))}
    eager_p50 = rows["PyTorch eager"]["p50_ms"]
    figures = {
        "backbone": args.backbone, "image_size": args.image_size, "cpu_count": os.cpu_count(),
        "speedup_batch1": round(eager_p50 / rows["ONNX Runtime FP32"]["p50_ms"], 3),
        "speedup_batch1_int8": round(eager_p50 / rows["ONNX Runtime INT8"]["p50_ms"], 3),
        "throughput_ratio_batch32": round(rows["ONNX Runtime FP32"]["images_per_s"] / rows["PyTorch eager"]["images_per_s"], 3),
        "int8_vs_fp32_batch32": round(rows["ONNX Runtime INT8"]["images_per_s"] / rows["ONNX Runtime FP32"]["images_per_s"], 3),
        "max_abs_diff": diff, "int8_metric": quantized["metric"], "int8_metric_fp32": round(quantized["fp32"], 4),
        "int8_metric_int8": round(quantized["int8"], 4),
        **{f"{k.split()[-1].lower() if 'ONNX' in k else 'eager'}_{m}": round(v, 3) for k, r in rows.items() for m, v in r.items()},
    }
    print(f"\n{args.backbone} at {args.image_size} px, {os.cpu_count()} CPU cores, one run, {args.rounds} interleaved rounds:\n")
    print("| engine | batch 1 p50 (ms) | batch 1 p95 (ms) | batch 32 (images/s) | batch-1 speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['images_per_s']:.0f} | {eager_p50 / r['p50_ms']:.2f}x |")
    print(f"\nONNX FP32 vs PyTorch, max abs difference on 32 images: {diff:.2e} (limit 1e-4); target: >= 2x at batch 1.")
    print(f"INT8: {quantized['metric']} {quantized['fp32']:.4f} (FP32) -> {quantized['int8']:.4f} "
          f"({quantized['change']:+.4f}) on the demo validation split (small: read the change, not the level).")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
