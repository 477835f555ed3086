#!/usr/bin/env python3
"""How well the organizer tells the body region, on the real images under ../shared/data.

Two passes over the same images:
- as given (their names and tags): per rule, how many items it decides and how many right;
- neutral copies (names like item03/file017.dcm, descriptive DICOM tags removed, the
  modality kept): what the pixels alone decide.

    python benchmarks/regions.py [--data ../shared/data] [--json FILE]

Keys: per pass, items, right, unknown, wrong, and by_rule {rule: [decided, right]};
wrong lists each wrong item (true region -> found, by which rule).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def judge(rows: list[dict], truth: dict[str, str], origins: dict[str, str] | None = None,
          modalities: dict[str, str] | None = None) -> dict:
    by_rule: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    result = {"items": 0, "right": 0, "unknown": 0, "wrong": [], "modality_right": 0, "modality_wrong": []}
    for row in rows:
        expected = truth.get(row["place"])
        wanted = (modalities or {}).get(row["place"])
        if expected and wanted:
            if row["modality"] == wanted:
                result["modality_right"] += 1
            else:
                result["modality_wrong"].append(f"{_shown(row, origins)}: {wanted} -> {row['modality']} "
                                                f"({row['modality_rule']})")
        if not expected:
            continue
        result["items"] += 1
        if row["region"] == "unknown":
            result["unknown"] += 1
            result.setdefault("unknown_items", []).append(f"{_shown(row, origins)}: {expected} ({row['modality']})")
            continue
        by_rule[row["region_rule"]][0] += 1
        if row["region"] == expected:
            result["right"] += 1
            by_rule[row["region_rule"]][1] += 1
        else:
            result["wrong"].append(f"{_shown(row, origins)}: {expected} -> {row['region']} ({row['region_rule']})")
    result["by_rule"] = dict(by_rule)
    return result


def _shown(row: dict, origins: dict[str, str] | None) -> str:
    return (origins or {}).get(row["place"], "/".join(Path(row["place"]).parts[-2:]))


def organized(source: Path, work: Path) -> list[dict]:
    from app.organize.organizer import organize
    from app.organize.rows import read_rows, row_place
    from app.workspace import Workspace

    ws = Workspace.open(work)
    organize(ws, source, "regions", workers=2)
    out = ws.organized_path("regions")
    rows = read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv")
    for row in rows:
        files = ws.private.item(row["item"]).get("files") or [row_place(ws, row)]
        row["place"] = str(ws.resolve(files[len(files) // 2]).resolve())
    return rows


def main() -> int:
    from tests.app.organize.real_regions import image_files, neutral_copy, true_modality, true_region

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = args.data.resolve()
    if not data.is_dir():
        print(f"{data} is missing: this benchmark needs the real images of ../shared/data.")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        truth = {str(p): true_region(p, data) for p in image_files(data)}
        modalities = {str(p): true_modality(p, data) for p in image_files(data)}
        given = judge(organized(data, Path(tmp) / "ws1"), truth, modalities=modalities)
        copies = {str(Path(k).resolve()): v for k, v in neutral_copy(data, Path(tmp) / "neutral").items()}
        neutral = judge(organized(Path(tmp) / "neutral", Path(tmp) / "ws2"), {k: v[0] for k, v in copies.items()},
                        {k: f"{Path(k).name} ({v[1]})" for k, v in copies.items()},
                        {k: true_modality(data / v[1], data) for k, v in copies.items()})
    for title, result in (("as given (names and tags)", given), ("neutral copies (pixels only)", neutral)):
        print(f"\n{title}: {result['right']} of {result['items']} items right, {result['unknown']} unknown, "
              f"{len(result['wrong'])} wrong")
        print(f"  {'rule':28} {'decided':>8} {'right':>6}")
        for rule, (decided, right) in sorted(result["by_rule"].items(), key=lambda kv: -kv[1][0]):
            print(f"  {rule:28} {decided:8d} {right:6d}")
        for line in result["wrong"]:
            print(f"  wrong: {line}")
        print(f"  modality: {result['modality_right']} of {result['items']} right")
        for line in result["modality_wrong"]:
            print(f"  modality wrong: {line}")
    if args.json:
        args.json.write_text(json.dumps({"as_given": given, "neutral": neutral}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
