"""Left and right as the classes: does the flagless command still tell them apart?

    python benchmarks/laterality.py [--minutes 3] [--seed 0] [--json FILE]

MedMNIST's organ sets name left and right organs as classes (kidney, femur, lung), and a
left-right flip turns one into the other. None of them is in ../shared, so this builds a
set of the same kind from real brain MR volumes there: every axial slice through the head,
cut at the head's middle into its two halves, each made 28 x 28 (class 0: the half on the
image's left; class 1: the other). The halves of a brain mirror each other, so only
left and right tell the classes apart. One subject per split, so no subject is on both
sides of one (train: the Siemens T1 series and the 1 mm NIfTI brain; validation: the
ITK T1 volume; test: the TCGA post-contrast T1).

It then runs ``benchmarks/medmnist.py`` on the file twice, without recipe flags: with
``--flips auto`` (the default: training finds that the classes mirror each other and
leaves flips out, app/laterality.py) and with ``--flips on`` (what every run did before
session 31), and prints both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SUBJECTS = {  # split -> the volumes of its subjects (paths under ../shared/data)
    "train": ["dicom/mr_brain_t1w_series", "nifti/eun_uchar_8.nii.gz"],
    "val": ["nifti/KmeansTest_T1UCharRaw.nii.gz"],
    "test": ["regions/brain_head/mr_brain_t1gd_TCGA-02-0003_pyradiomics_brain1.nrrd"],
}
SIDE = 28


def _volume(path: Path) -> np.ndarray:
    """The volume as (z, y, x) in LPS order (SimpleITK): each [k] an axial slice, x left-right."""
    import SimpleITK as sitk

    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS")).astype(np.float32)


def halves(volume: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each axial slice whose head is at least half its largest, cut at the head's middle
    column: (the half on the image's left, the other), each SIDE x SIDE in [0, 1]."""
    from scipy import ndimage
    from skimage.transform import resize

    low, high = np.percentile(volume, [1, 99.5])
    scaled = np.clip((volume - low) / max(high - low, 1e-6), 0, 1)
    masks = [ndimage.binary_fill_holes(ndimage.binary_opening(s > 0.15, iterations=2)) for s in scaled]
    areas = np.array([m.sum() for m in masks])
    found = []
    for image, mask, area in zip(scaled, masks, areas):
        if area < 0.5 * areas.max():
            continue
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        middle = (cols[0] + cols[-1] + 1) // 2
        box = image[rows[0] : rows[-1] + 1]
        found.append(tuple(resize(part, (SIDE, SIDE), anti_aliasing=True).astype(np.float32)
                           for part in (box[:, cols[0] : middle], box[:, middle : cols[-1] + 1])))
    return found


def build(path: Path) -> dict[str, int]:
    """The MedMNIST-style .npz at ``path``; returns the images in each split."""
    arrays, counts = {}, {}
    for split, names in SUBJECTS.items():
        pairs = [pair for name in names for pair in halves(_volume(SHARED / name))]
        images = np.stack([half for pair in pairs for half in pair])
        labels = np.tile([0, 1], len(pairs)).reshape(-1, 1)
        arrays[f"{split}_images"] = np.round(images * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
        counts[split] = len(images)
    np.savez(path, **arrays)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="each of the two runs' budget (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    missing = [name for names in SUBJECTS.values() for name in names if not (SHARED / name).exists()]
    if missing:
        print(f"Error: {SHARED / missing[0]} is absent (the real-data folder ../shared/data)", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "hemispheres.npz"
        counts = build(data)
        print(f"hemispheres: train {counts['train']}, validation {counts['val']}, test {counts['test']} images "
              "(two halves of each axial slice; one subject per split)", flush=True)
        for flips in ("auto", "on"):
            out = Path(tmp) / f"{flips}.json"
            done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "medmnist.py"), "--data", str(data),
                                   "--minutes", str(args.minutes), "--seed", str(args.seed), "--flips", flips,
                                   "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
                return done.returncode
            results[flips] = json.loads(out.read_text())
    print("\n| flips | used | recipe | test AUC | test ACC |\n| --- | --- | --- | --- | --- |")
    for flips, found in results.items():
        used = (found.get("flips") or {}).get("used")
        print(f"| {flips} | {'yes' if used else 'no'} | {found['recipe']['name']} | {found['test_auc']:.3f} | "
              f"{found['test_acc']:.3f} |")
    pairs = (results["auto"].get("flips") or {}).get("mirror_pairs") or []
    print("\nClasses found to mirror each other (auto): "
          + ("; ".join(f"{p['classes'][0]} / {p['classes'][1]} (ratio {p['ratio']})" for p in pairs) or "none"))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "minutes": args.minutes, "seed": args.seed,
                                               "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
