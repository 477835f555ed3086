#!/usr/bin/env python3
"""Cube extraction speed and memory on a generated 512 x 512 x 300 CT volume.

Writes a synthetic CT (int16 Hounsfield units, 0.7 x 0.7 x 1.0 mm, a body ellipse with
bright spots) as NIfTI, then in this process: loads it the way the 3D phase does
(orientation, resampling to 1 mm, CT window), extracts cubes of 48^3 around the spots
(positives) and as many negatives away from them; reports cubes per second of the
extraction alone and of load + extraction, and the peak resident memory.

    python benchmarks/cube_speed.py [--cubes 200] [--json FILE]

There is no published anchor for this; the issue asks for the figures (cubes/s, peak MB).
Keys: cubes_per_second, cubes_per_second_with_loading, peak_mb, load_seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_volume(path: Path, shape=(300, 512, 512), seed: int = 0) -> list[tuple[float, float, float]]:
    """A CT-like volume (z, y, x) saved as NIfTI; returns bright-spot centres in file voxels (i, j, k)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    z, y, x = shape
    volume = np.full(shape, -1000, np.int16)
    yy, xx = np.mgrid[0:y, 0:x]
    body = ((yy - y / 2) / (y * 0.42)) ** 2 + ((xx - x / 2) / (x * 0.45)) ** 2 <= 1
    volume[:, body] = 40
    volume += rng.normal(0, 20, size=(1, y, x)).astype(np.int16)  # one noise plane, broadcast: cheap
    spots = []
    for _ in range(100):
        k, j, i = rng.integers(40, z - 40), rng.integers(150, y - 150), rng.integers(150, x - 150)
        volume[k - 3 : k + 3, j - 3 : j + 3, i - 3 : i + 3] = 400
        spots.append((float(i), float(j), float(k)))
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.7, 0.7, 1.0))
    sitk.WriteImage(image, str(path))
    return spots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cubes", type=int, default=200, help="positives + negatives (half each)")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--_make", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._make:  # in a child process, so that generating does not count in the peak below
        print(json.dumps(make_volume(Path(args._make))))
        return 0
    import subprocess

    from app.cubes import Point, extract_cube, negative_centres
    from app.volumes import load_volume

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ct.nii"
        made = subprocess.run([sys.executable, __file__, "--_make", str(path)], check=True, capture_output=True, text=True)
        spots = [tuple(s) for s in json.loads(made.stdout.strip().splitlines()[-1])]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        began = time.perf_counter()
        volume = load_volume(path, "CT")
        loaded = time.perf_counter()
        wanted = args.cubes // 2
        points = [Point(volume.file_voxel_to_voxel(s)) for s in (spots * (wanted // len(spots) + 1))[:wanted]]
        centres = [p.zyx for p in points] + negative_centres(volume.array, points, args.cubes - wanted,
                                                            np.random.default_rng(0))
        cubes = np.empty((len(centres), 48, 48, 48), np.uint8)
        for k, centre in enumerate(centres):
            cubes[k] = (extract_cube(volume.array, centre, fill=0.0) * 255).astype(np.uint8)
        done = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extraction = done - loaded
    figures = {
        "volume_shape_file": [300, 512, 512], "volume_shape_resampled": list(volume.array.shape),
        "cubes": len(centres), "load_seconds": round(loaded - began, 2),
        "cubes_per_second": round(len(centres) / extraction, 1),
        "cubes_per_second_with_loading": round(len(centres) / (done - began), 1),
        "peak_mb": round(peak, 1), "peak_mb_before_loading": round(before, 1),
    }
    print(f"\nGenerated CT 512 x 512 x 300 (0.7 x 0.7 x 1.0 mm) -> {volume.array.shape} voxels at 1 mm; one run:\n")
    print("| what | figure |\n| --- | --- |")
    print(f"| load, orient, resample, window | {figures['load_seconds']:.1f} s |")
    print(f"| cube extraction ({len(centres)} cubes of 48^3, half negatives) | {figures['cubes_per_second']:.0f} cubes/s |")
    print(f"| load + extraction | {figures['cubes_per_second_with_loading']:.1f} cubes/s |")
    print(f"| peak resident memory | {figures['peak_mb']:.0f} MB ({figures['peak_mb_before_loading']:.0f} MB before loading) |")
    print("\nNo published anchor: these are the figures the issue asks for.")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
