#!/usr/bin/env python3
"""Scan throughput: the organizer's scanner against a bare pydicom header loop.

Generates a tree of small DICOM files, then, in one run and on the same files:
a bare ``pydicom.dcmread(stop_before_pixels=True)`` loop; our scan with one worker;
our scan with two workers. Peak memory is the scanning process's maximum RSS.

    python benchmarks/scan_speed.py [--files N] [--json FILE]

Targets (issue 3): one worker >= 0.8 of the bare loop; two workers >= 1.6 x one;
peak memory < 500 MB on 100,000 files.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_tree(folder: Path, count: int) -> None:
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    pixels = np.zeros((16, 16), np.uint16).tobytes()
    series = [generate_uid() for _ in range(max(1, count // 100))]
    for k in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"s{k // 100:04d}" / f"IM{k:06d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.BodyPartExamined = "CT", f"{k // 100}", "CHEST"
        ds.SeriesInstanceUID, ds.InstanceNumber = series[k // 100], k % 100
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(k % 100)], [1, 0, 0, 0, 1, 0]
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels
        ds.save_as(path, enforce_file_format=True)


def measure(mode: str, folder: str) -> dict:
    """Run in a fresh process so that peak memory belongs to this mode alone."""
    import pydicom

    from app.organize.scan import list_files, scan_tree

    began = time.perf_counter()
    if mode == "bare":
        files = [str(p) for p in list_files(Path(folder))]
        for path in files:
            pydicom.dcmread(path, stop_before_pixels=True)
        count = len(files)
    else:
        records, skipped, _ = scan_tree(Path(folder), b"k" * 32, workers=int(mode))
        count = len(records) + len(skipped)
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"files": count, "seconds": seconds, "files_per_s": count / seconds, "peak_mb": max(peak, children)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        print(json.dumps(measure(*args._measure)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        print(f"Generating {args.files} DICOM files...", flush=True)
        make_tree(Path(tmp), args.files)
        results = {}
        for mode in ("bare", "1", "2"):
            out = subprocess.run([sys.executable, __file__, "--_measure", mode, tmp], check=True,
                                 capture_output=True, text=True).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
    bare, one, two = results["bare"], results["1"], results["2"]
    figures = {
        "files": args.files, "cpu_count": os.cpu_count(),
        "bare_files_per_s": round(bare["files_per_s"], 1), "one_worker_files_per_s": round(one["files_per_s"], 1),
        "two_workers_files_per_s": round(two["files_per_s"], 1),
        "ratio_one_worker": round(one["files_per_s"] / bare["files_per_s"], 3),
        "speedup_two_workers": round(two["files_per_s"] / one["files_per_s"], 3),
        "peak_mb": round(max(one["peak_mb"], two["peak_mb"]), 1),
    }
    print(f"\nScan of {args.files} small DICOM files ({os.cpu_count()} CPU cores), one run:\n")
    print(f"| what | files/s | ratio | target |\n| --- | --- | --- | --- |")
    print(f"| bare pydicom.dcmread(stop_before_pixels=True) loop | {bare['files_per_s']:.0f} | 1.00 | (anchor) |")
    print(f"| our scan, 1 worker (header + SHA-256 + checks) | {one['files_per_s']:.0f} | "
          f"{figures['ratio_one_worker']:.2f} of bare | >= 0.80 |")
    print(f"| our scan, 2 workers | {two['files_per_s']:.0f} | {figures['speedup_two_workers']:.2f} x 1 worker | >= 1.60 |")
    print(f"\nPeak memory of the scanning process: {figures['peak_mb']:.0f} MB (target < 500 MB at 100,000 files)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
