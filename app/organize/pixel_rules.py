"""The region from the pixels (app.organize.anatomy), for the items the other rules leave open.

An item is read when no tag, description or name gave its region, or when its
descriptions name several ("CT ABD AND PELVIS WITH CHEST IMAGES"): then the slices say
which of them the series mostly shows. Items of one folder come from one source, so a
folder of many items is judged on a few evenly spaced ones; only when those agree does
the answer stand for the rest (``sibling_agreement``, weaker), else each item is read.

The pixels also check the modality where only a header hinted at it: an untagged file
with the usual -1024 intercept is CT only if its values hold air near -1000 HU
(an MR exported as a secondary capture often has that intercept too); a 3D volume
whose format says nothing is CT by its Hounsfield values, else most likely MR.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path, PurePath
from typing import Any

from app.organize.anatomy import looks_like_ct, read_pixels, region_from_pixels
from app.progress import Progress, report

SAMPLE = 8
PIXELS = ("pixels", 0.5)
CHOSEN_BY_PIXELS = ("description_and_pixels", 0.8)  # named in the descriptions, and what the slices show
SIBLINGS = ("sibling_agreement", 0.4)
MIN_SIBLINGS = 3  # items of a folder that must agree on a region before it stands for their unknown siblings


HOUNSFIELD = ("hounsfield_values", 0.6)
NOT_HOUNSFIELD = ("pixels_not_hounsfield", 0.5)  # a header that hinted at CT, pixels without air at -1000 HU
VOLUME_NOT_HOUNSFIELD = ("volume_not_hounsfield", 0.3)  # a 3D volume without units, not CT: MR is most likely


def needs_region(row: dict[str, Any]) -> bool:
    return row["region"] == "unknown" or len(row.get("regions", "").split("|")) > 1


def needs_pixels(row: dict[str, Any]) -> bool:
    return needs_region(row) or row["modality_rule"] == "hounsfield_rescale"  # a header's guess, checked


def _set_modality(row: dict[str, Any], modality: str, rule: tuple[str, float]) -> None:
    row["modality"], (row["modality_rule"], row["modality_confidence"]) = modality, rule


def _read(row: dict[str, Any], paths: list[Path]) -> Any:
    pixels = read_pixels(paths, row["kind"])
    if pixels is None:
        return None
    if row["modality_rule"] == "hounsfield_rescale" and not looks_like_ct(pixels):
        _set_modality(row, "OT", NOT_HOUNSFIELD)  # e.g. an MR exported as a secondary capture with -1024
    if row["kind"] == "volume" and row["modality_rule"] in ("file_format", "none"):
        if looks_like_ct(pixels):
            _set_modality(row, "CT", HOUNSFIELD)
        elif pixels.extent_mm and row["modality"] == "OT":
            _set_modality(row, "MR", VOLUME_NOT_HOUNSFIELD)
    if not needs_region(row):
        return None  # read only to check the modality: the region stands
    candidates = tuple(row["regions"].split("|")) if "|" in row.get("regions", "") else ()
    return region_from_pixels(pixels, row["modality"], candidates)


def _set(row: dict[str, Any], found: Any, rule: tuple[str, float]) -> None:
    if "|" in row.get("regions", ""):
        rule = CHOSEN_BY_PIXELS if rule == PIXELS else SIBLINGS
        row["regions"] = "|".join([found.region, *(r for r in row["regions"].split("|") if r != found.region)])
    else:
        row["regions"] = "|".join(found.regions)
    row["region"], (row["region_rule"], row["region_confidence"]) = found.region, rule


def fill_regions(rows: list[dict[str, Any]], files: list[list[str]], progress: Progress | None = None) -> int:
    """Regions from pixels for the rows that need them (in place); ``files[i]`` are row i's
    files in slice order. Returns the items whose pixels were read."""
    by_folder: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if needs_pixels(row) and row["modality"] in ("CT", "MR", "XR", "OT"):
            by_folder[str(PurePath(files[i][0]).parent)].append(i)
    total, done, read = sum(len(v) for v in by_folder.values()), 0, 0
    if total == 0:
        return 0  # no progress row for nothing to do (an unfinished one would linger on screen)
    report(progress, "Reading regions from pixels", 0, total)
    for members in by_folder.values():
        sample = members[:: max(1, len(members) // SAMPLE)][:SAMPLE] if len(members) > SAMPLE else members
        found = {i: _read(rows[i], [Path(f) for f in files[i]]) for i in sample}
        read += len(sample)
        for i, answer in found.items():
            if answer:
                _set(rows[i], answer, PIXELS)
        rest = [i for i in members if i not in found]
        if all(rows[i]["modality_rule"] == NOT_HOUNSFIELD[0] for i in sample):
            for i in rest:  # one source: what its sample showed holds for the rest
                if rows[i]["modality_rule"] == "hounsfield_rescale":
                    _set_modality(rows[i], "OT", NOT_HOUNSFIELD)
        answers = {a.region for a in found.values() if a}
        if rest and len(answers) == 1 and all(found.values()):
            region = next(a for a in found.values() if a)
            for i in (i for i in rest if needs_region(rows[i])):
                if "|" not in rows[i].get("regions", "") or region.region in rows[i]["regions"].split("|"):
                    _set(rows[i], region, SIBLINGS)
        elif rest:
            for i in (i for i in rest if needs_region(rows[i])):  # the sample disagrees or is unsure: each speaks
                answer = _read(rows[i], [Path(f) for f in files[i]])
                read += 1
                if answer:
                    _set(rows[i], answer, PIXELS)
        done += len(members)
        report(progress, "Reading regions from pixels", done, total)
    return read


def agree_with_siblings(rows: list[dict[str, Any]], files: list[list[str]]) -> int:
    """The region of a folder's items for those of them no rule could place (in place;
    ``files[i]``: row i's files). A folder's single-file items of one modality come from
    one source (a folder of chest films named by number, an export of one study's
    slices): where at least MIN_SIBLINGS of them have a region, all the same one, and
    they outnumber the unknown ones, the unknown ones take it (``sibling_agreement``,
    weaker than any rule that reads the item itself). A folder whose items disagree gives
    nothing; multi-file DICOM series are left out (a study folder holds series of
    different regions). Returns the items placed."""
    by_folder: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if len(files[i]) == 1:
            by_folder[(str(PurePath(files[i][0]).parent), row["modality"])].append(i)
    placed = 0
    for members in by_folder.values():
        unknown = [i for i in members if rows[i]["region"] == "unknown"]
        known = [i for i in members if rows[i]["region"] != "unknown"]
        regions = {rows[i]["region"] for i in known}
        if not unknown or len(regions) != 1 or len(known) < max(MIN_SIBLINGS, len(unknown) + 1):
            continue
        region = regions.pop()
        for i in unknown:
            rows[i]["region"], rows[i]["regions"] = region, region
            rows[i]["region_rule"], rows[i]["region_confidence"] = SIBLINGS
            placed += 1
    return placed
