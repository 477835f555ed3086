#!/usr/bin/env python3
"""Load on ``main.py serve --bundle``: many clients at once against the same model called directly.

    python benchmarks/serve_load.py [--clients 32] [--seconds 60] [--bundle DIR --image FILE]
                                    [--new-connections] [--json FILE]

Without ``--bundle`` a small model is trained on the demo data and exported in a
temporary workspace (about a minute). The server runs as its own process on loopback;
``--clients`` threads each post the image again and again for ``--seconds``, each on
its own kept-alive connection as HTTP client libraries do (``--new-connections``: a new
TCP connection per request, as plain urllib does). The
direct figure runs the same work in this process with as many threads and no HTTP:
the image read and prepared as the bundle's card says, ONNX Runtime, the
out-of-distribution gate (app.predict.answer_items), one image per call as each client
sends one; a second figure has one thread call it with 32 images at once. Goal: the
server keeps >= 80% of the first. The server scores concurrent requests' images as one
batch (web.batching), which is how it can keep more than 100% of it.

Keys: requests, errors (goal 0), p50_ms, p95_ms, images_per_second, direct_images_per_second,
kept (server / direct), direct_batched_images_per_second, kept_of_batched, clients,
connections (keep-alive or new), seconds, machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def demo_bundle(work: Path) -> tuple[Path, Path, Path]:
    """(bundle, one of its training images, the workspace's data folder) from the demo data."""
    from app.bundle import export_bundle
    from app.collectors import collect
    from app.organize.organizer import organize
    from app.training import train
    from app.workspace import Workspace

    ws = Workspace.open(work)
    collect("demo", ws, scale=1)
    organize(ws, "demo", "demo", workers=1)
    train(ws, "demo", "supervised", run="served", epochs=2, image_size=64, batch_size=16, backbone="resnet10t",
          pretrained=False)
    image = next(p for p in sorted((ws.data_dir / "raw").rglob("*.dcm")))
    return export_bundle(ws, "served").path, image, ws.data_dir


def hammer(call, clients: int, seconds: float) -> tuple[list[float], int]:
    """Run ``call()`` from ``clients`` threads for ``seconds``; each call's latency, and the failures."""
    latencies: list[float] = []
    errors = [0]
    first: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        while time.perf_counter() < stop:
            began = time.perf_counter()
            try:
                call()
                spent = time.perf_counter() - began
                with lock:
                    latencies.append(spent)
            except Exception as err:
                with lock:
                    errors[0] += 1
                    if not first:
                        detail = err.read().decode(errors="replace")[:300] if hasattr(err, "read") else ""
                        first.append(f"{type(err).__name__}: {err} {detail}")
                        print(f"first failure: {first[0][:300]}", flush=True)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--image", type=Path)
    parser.add_argument("--keys-from", type=Path, help="a workspace's data folder whose keys the bundle is signed by")
    parser.add_argument("--new-connections", action="store_true",
                        help="open a new connection for every request instead of keeping one per client")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if bool(args.bundle) != bool(args.image):
        parser.error("--bundle and --image go together")

    from app.predict import answer_items, find_items, model_from_bundle

    with tempfile.TemporaryDirectory() as scratch:
        if args.bundle:
            bundle, image, keys = args.bundle, args.image, args.keys_from
        else:
            print("Training and exporting a small demo model ...", flush=True)
            bundle, image, keys = demo_bundle(Path(scratch) / "ws")
        body = image.read_bytes()
        kind = "dcm" if image.suffix.lower() in (".dcm", "") else image.suffix.lower().lstrip(".")

        # The same model called directly: read, prepare, ONNX Runtime, gate; no HTTP.
        model = model_from_bundle(bundle, keys_from=keys, trust_unsigned=keys is None)
        items = find_items(image)
        direct, direct_errors = hammer(lambda: answer_items(items, ["x"], [model], chosen=True, allow_ood=True),
                                       args.clients, args.seconds)
        # ... and as a caller who batches does: 32 images per call, from one thread.
        many = items * 32
        batched, _ = hammer(lambda: answer_items(many, ["x"] * len(many), [model], chosen=True, allow_ood=True),
                            1, min(args.seconds, 20.0))
        batched_rate = len(batched) * len(many) / min(args.seconds, 20.0)

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, str(ROOT / "main.py"), "serve", "--bundle", str(bundle), "--port", str(port),
                   *(["--workspace", str(keys.parent)] if keys else ["--trust-unsigned"])]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            url = f"http://127.0.0.1:{port}/api/v1"
            deadline = time.time() + 120
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"The server stopped: {server.stderr.read()[-800:]}")
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=2).read()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise SystemExit("The server did not answer within 120 s.") from None
                    time.sleep(0.3)

            path = f"/api/v1/predict?kind={kind}&allow_ood=true"
            local = threading.local()

            def post() -> None:
                if args.new_connections:
                    request = urllib.request.Request(f"{url}/predict?kind={kind}&allow_ood=true", data=body,
                                                     method="POST",
                                                     headers={"Content-Type": "application/octet-stream"})
                    with urllib.request.urlopen(request, timeout=60) as reply:
                        if reply.status != 200 or not json.loads(reply.read())["predictions"]:
                            raise RuntimeError("no answer")
                    return
                if getattr(local, "connection", None) is None:
                    local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                try:
                    local.connection.request("POST", path, body=body,
                                             headers={"Content-Type": "application/octet-stream"})
                    reply = local.connection.getresponse()
                    answer = reply.read()
                except (OSError, http.client.HTTPException):
                    local.connection.close()
                    local.connection = None
                    raise
                if reply.status != 200 or not json.loads(answer)["predictions"]:
                    raise RuntimeError(f"no answer ({reply.status}): {answer[:200]!r}")

            served, errors = hammer(post, args.clients, args.seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)

    rate = len(served) / args.seconds
    direct_rate = len(direct) / args.seconds
    result = {
        "requests": len(served) + errors, "errors": errors, "direct_errors": direct_errors,
        "p50_ms": round(float(np.percentile(served, 50)) * 1000, 1) if served else None,
        "p95_ms": round(float(np.percentile(served, 95)) * 1000, 1) if served else None,
        "images_per_second": round(rate, 1), "direct_images_per_second": round(direct_rate, 1),
        "kept": round(rate / direct_rate, 3) if direct_rate else None,
        "direct_batched_images_per_second": round(batched_rate, 1),
        "kept_of_batched": round(rate / batched_rate, 3) if batched_rate else None,
        "clients": args.clients, "connections": "new per request" if args.new_connections else "keep-alive",
        "seconds": args.seconds, "image_bytes": len(body),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(f"\n{'':28}{'served (HTTP)':>16}{'direct (ORT)':>16}")
    print(f"{'images per second':28}{result['images_per_second']:>16}{result['direct_images_per_second']:>16}")
    print(f"{'p50 / p95 latency, ms':28}{str(result['p50_ms']) + ' / ' + str(result['p95_ms']):>16}{'':>16}")
    print(f"{'errors':28}{errors:>16}{direct_errors:>16}")
    print(f"{'direct, 32 images per call':28}{'':>16}{result['direct_batched_images_per_second']:>16}")
    print(f"server keeps {result['kept']:.0%} of the direct rate (goal >= 80%), {args.clients} clients, "
          f"{args.seconds:g} s, {result['machine']}" if result["kept"] is not None else "no direct figure")
    if result["kept_of_batched"] is not None:
        print(f"(and {result['kept_of_batched']:.0%} of a direct caller that batches 32 images per call)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
