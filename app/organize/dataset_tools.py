"""Work on organized datasets: statistics, balancing, merging, exporting."""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from app.atomic import temp_sibling
from core.errors import DatasetError
from app.plots import dataset_plot
from app.organize.rows import read_rows, write_rows
from app.organize.splits import SPLITS, assign_splits
from app.state import Kind, read_state, write_state
from app.workspace import Workspace

BALANCE_METHODS = ("class_weights", "oversample", "undersample", "none")


def all_rows(ws: Workspace, dataset: str) -> list[dict[str, Any]]:
    ws.dataset_metadata(dataset)  # a clear error when it does not exist
    out = ws.organized_path(dataset)
    return read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv")


def dataset_statistics(ws: Workspace, dataset: str) -> dict[str, Any]:
    """Counts by class x split, modality, region, kind; plus a bar chart (statistics.png)."""
    rows = all_rows(ws, dataset)
    by_class_split: dict[str, dict[str, int]] = defaultdict(lambda: {s: 0 for s in SPLITS})
    for row in rows:
        by_class_split[row["label"] or "(unlabeled)"][row["split"]] += 1
    order = ws.dataset_metadata(dataset).get("classes", [])  # normal first; grades in their order
    place = {name: k for k, name in enumerate(order)}
    stats = {
        "items": len(rows), "patients": len({r["patient_id"] for r in rows}),
        "by_class_and_split": dict(sorted(by_class_split.items(), key=lambda kv: (place.get(kv[0], len(order)), kv[0]))),
        "by_modality": dict(Counter(r["modality"] for r in rows).most_common()),
        "by_region": dict(Counter(r["region"] for r in rows).most_common()),
        "by_kind": dict(Counter(r["kind"] for r in rows).most_common()),
    }
    stats["plot"] = str(dataset_plot(stats, ws.organized_path(dataset) / "statistics.png", dataset))
    return stats


def balance_rows(rows: list[dict[str, Any]], method: str, seed: int = 0) -> list[dict[str, Any]]:
    """Training rows resampled so that every class has as many as the largest (oversample)
    or the smallest (undersample); other methods return the rows unchanged."""
    if method not in ("oversample", "undersample"):
        return rows
    by_class: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_class[row["label"]].append(row)
    if not by_class:
        return rows
    rng = random.Random(seed)
    target = (max if method == "oversample" else min)(len(v) for v in by_class.values())
    out: list[dict[str, Any]] = []
    for label in sorted(by_class):
        members = by_class[label]
        if len(members) >= target:
            out += rng.sample(members, target)
        else:
            out += members + [rng.choice(members) for _ in range(target - len(members))]
    return out


def set_balance(ws: Workspace, dataset: str, method: str) -> dict[str, Any]:
    """Choose how training handles class imbalance for this dataset (training_config.json)."""
    if method not in BALANCE_METHODS:
        raise DatasetError(f"Unknown balancing {method!r}; choose one of {', '.join(BALANCE_METHODS)}.")
    path = ws.organized_path(dataset) / "training_config.json"
    config = read_state(path, Kind.TRAINING_CONFIG)
    config["balance"] = method
    write_state(path, Kind.TRAINING_CONFIG, {k: v for k, v in config.items() if k not in ("kind", "schema_version")})
    return config


def merge_datasets(ws: Workspace, names: list[str], new_name: str, seed: int = 0) -> Any:
    """One dataset from several organized ones, split again by patient.

    Pseudonyms come from one workspace key, so a patient present in two datasets
    stays one patient and lands in one split.
    """
    from app.organize.organizer import write_dataset

    if len(names) < 2:
        raise DatasetError("Choose at least two datasets to merge.")
    if new_name in names:
        raise DatasetError("Give the merged dataset a new name.")
    rows = [row for name in names for row in all_rows(ws, name)]
    assign_splits(rows, seed=seed)
    return write_dataset(ws, new_name, f"merged:{'+'.join(names)}", rows, [], [], seed)


def hold_out_class(ws: Workspace, dataset: str, label: str, new_name: str) -> Any:
    """A copy of ``dataset`` where ``label`` is unknown: gone from train and validation, kept
    in test, and not one of the classes. Train on it to see how each phase copes with a
    kind of anomaly it never saw (open-set evaluation). Splits are kept as they are.
    """
    from app.organize.organizer import write_dataset

    meta = ws.dataset_metadata(dataset)
    rows = all_rows(ws, dataset)
    if label == "normal" or label not in meta["classes"]:
        choices = ", ".join(c for c in meta["classes"] if c != "normal")
        raise DatasetError(f"{label!r} is not an anomaly class of {dataset!r}; hold out one of: {choices}.")
    if new_name == dataset:
        raise DatasetError("Give the held-out copy a new name.")
    kept = [r for r in rows if r["label"] != label or r["split"] == "test"]
    if not any(r["label"] == label for r in kept):
        raise DatasetError(f"The test split of {dataset!r} holds no {label!r} image to evaluate on.")
    return write_dataset(ws, new_name, f"held-out:{dataset}-{label}", kept, [], [],
                         int(meta.get("seed", 0)), held_out=(label,))


def export_dataset(ws: Workspace, dataset: str, fmt: str, destination: Path) -> Path:
    """Write every row (and the dataset's metadata for JSON) to ``destination``.

    Raises:
        DatasetError: ``destination`` exists already (it is never overwritten), or an unknown format.
    """
    rows = all_rows(ws, dataset)
    if fmt not in ("csv", "json"):
        raise DatasetError(f"Export format {fmt!r} is not csv or json.")
    if destination.exists() or destination.is_symlink():
        raise DatasetError(f"{destination} exists already; it is not overwritten. Give a new file name.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(destination)
    try:
        if fmt == "csv":
            write_rows(tmp, rows)
        else:
            meta = ws.dataset_metadata(dataset)
            tmp.write_text(json.dumps({"dataset": meta, "rows": rows}, indent=1, default=str), encoding="utf-8")
        try:
            os.link(tmp, destination)  # fails rather than replace a file made meanwhile
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links (a USB drive's FAT)
            if destination.exists():
                raise FileExistsError(destination) from None
            os.replace(tmp, destination)
    except FileExistsError:
        raise DatasetError(f"{destination} exists already; it is not overwritten. Give a new file name.") from None
    finally:
        tmp.unlink(missing_ok=True)
    return destination
