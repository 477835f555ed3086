"""benchmarks/medmnist.py end to end on a tiny colour file: the flagless command others will run
on MedMNIST sets nobody here has (colour, several classes), and its one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HUES = [(200, 60, 130), (60, 200, 130), (130, 60, 200)]  # equal channel means: only colour tells them apart


def _colour_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 90), ("val", 30), ("test", 30)):
        labels = (np.arange(n) % 3).reshape(n, 1)
        images = np.repeat((100 + rng.random((n, 28, 28, 1)) * 60).astype(np.uint8), 3, axis=-1)
        for k in range(n):
            y, x = rng.integers(4, 16, 2)
            images[k, y : y + 9, x : x + 9] = HUES[int(labels[k, 0])]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(path, **arrays)
    return path


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "medmnist.py"), *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


def test_the_flagless_benchmark_searches_a_colour_multiclass_file(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = _bench("--data", str(_colour_npz(tmp_path / "huemnist.npz")), "--minutes", "0.4", "--batch-size", "16",
                  "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    rounds = [t["round"] for t in figures["trials"]]  # successive halving: eight recipes, then four, then two
    assert figures["channels"] == 3 and figures["recipe"]["name"] and rounds == [0] * 8 + [1] * 4 + [2] * 2
    assert figures["test_auc"] >= 0.9, figures  # three hues a grey reading could not tell apart
    assert 0 <= figures["test_ece"] <= 1 and "Test calibration error (ECE" in done.stdout
    assert "time_plan" in figures and all({"after_epoch", "epochs"} <= set(p) for p in figures["time_plan"] or [])
    assert "RGB" in done.stdout and "chosen:" in done.stdout
    alone = figures["winner_alone"]  # set when a second member was averaged in: the winner's own figures
    assert alone is None or {"test_auc", "test_acc"} <= set(alone), alone


def test_the_short_runs_benchmark_trains_each_variant_of_the_weight_average(tmp_path: Path) -> None:
    out = tmp_path / "short.json"
    script = str(ROOT / "benchmarks" / "short_runs.py")
    done = subprocess.run([sys.executable, script, "--data", str(_colour_npz(tmp_path / "huemnist.npz")),
                           "--recipes", "resnet10t-32", "--epochs", "1", "--batch-size", "16", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["recipe"] == "resnet10t-32" and all(0.0 <= row[v] <= 1.0 for v in ("fixed", "corrected", "none"))
    assert "| resnet10t-32 | 1 |" in done.stdout
    done = subprocess.run([sys.executable, script, "--data", str(tmp_path / "huemnist.npz"), "--recipes", "vgg-99"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 2 and done.stderr.startswith("Error: no recipe named vgg-99"), done.stderr


def test_the_flagless_benchmark_trains_a_multi_label_file_one_probability_per_finding(tmp_path: Path) -> None:
    from tests.app.test_multilabel import multilabel_npz

    out = tmp_path / "figures.json"
    done = _bench("--data", str(multilabel_npz(tmp_path / "chestmnist.npz")), "--minutes", "0.4",
                  "--batch-size", "16", "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["multilabel"] is True and figures["test_auc"] >= 0.8, figures
    assert "| Google AutoML Vision (MedMNIST v2) | 0.778 | 0.948 |" in done.stdout, "ChestMNIST's anchors"
    assert "means over the findings" in done.stdout


def test_the_calibration_bias_benchmark_compares_four_biases_on_one_run(tmp_path: Path) -> None:
    out = tmp_path / "bias.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "calibration_bias.py"), "--data",
                           str(_colour_npz(tmp_path / "huemnist.npz")), "--minutes", "0.15", "--image-size", "32",
                           "--batch-size", "16", "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["train_counts"] == [30, 30, 30] and len(figures["variants"]) == 4
    shares = figures["variants"][2]
    assert shares["bias"] == [0.0, 0.0, 0.0], "even classes: the training shares' bias is none"
    assert all(0 <= v["test_acc"] <= 1 and 0 <= v["test_ece"] <= 1 for v in figures["variants"])
    assert "| training shares, temperature fitted (the app's choice) |" in done.stdout, "even in both splits"


def test_the_calibration_bias_benchmark_trains_the_3d_phase_on_a_volume_file(tmp_path: Path) -> None:
    """A 3D file is trained as benchmarks/medmnist.py trains it (cube3d, 28 voxels), not as 2D."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 12), ("test", 12)):
        labels = (np.arange(n) % 2).reshape(n, 1)
        volumes = (rng.random((n, 28, 28, 28)) * 80).astype(np.uint8)
        volumes[labels[:, 0] == 1, 10:18, 10:18, 10:18] = 220  # a bright cube: the "tumor" class
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = volumes, labels
    np.savez(tmp_path / "cubemnist3d.npz", **arrays)
    out = tmp_path / "bias.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "calibration_bias.py"), "--data",
                           str(tmp_path / "cubemnist3d.npz"), "--minutes", "0.1", "--batch-size", "8", "--json",
                           str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert (figures["phase"], figures["backbone"], figures["image_size"]) == ("cube3d", "resnet10", 28)
    assert len(figures["variants"]) == 4 and all(0 <= v["test_acc"] <= 1 for v in figures["variants"])


def test_the_laterality_benchmark_builds_mirrored_classes_one_subject_per_split(tmp_path: Path) -> None:
    """benchmarks/laterality.py's file: the two halves of real brain slices as two classes,
    equal in number, each split from its own subjects, and found to mirror each other."""
    import torch

    from app.laterality import mirror_pairs
    from benchmarks.laterality import SIDE, SUBJECTS, build
    from tests.conftest import shared

    names = [name for split in SUBJECTS.values() for name in split]
    assert len(names) == len(set(names)), "no subject in two splits"
    for name in names:
        shared(name)
    counts = build(tmp_path / "hemispheres.npz")
    assert min(counts.values()) >= 40
    with np.load(tmp_path / "hemispheres.npz") as data:
        for split, n in counts.items():
            images, labels = data[f"{split}_images"], data[f"{split}_labels"].reshape(-1)
            assert images.shape == (n, SIDE, SIDE) and (labels == 0).sum() == (labels == 1).sum() == n // 2
        x = torch.from_numpy(data["train_images"].astype(np.float32) / 255)[:, None]
        found = mirror_pairs(x, data["train_labels"].reshape(-1), ["left half", "right half"])
    assert [p["classes"] for p in found] == [["left half", "right half"]]


def test_the_layout_benchmark_times_each_network_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "layout.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "layout.py"), "--only", "resnet10t-32,vae-64",
                           "--batch", "4", "--steps", "1", "--rounds", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["network"] for r in rows] == ["resnet10t-32", "vae-64"]
    assert all(r["plain"] > 0 and r["channels_last"] > 0 and r["ratio"] > 0 for r in rows)
    assert "resnet10t-32" in done.stdout and "ratio" in done.stdout
