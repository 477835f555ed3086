"""Organize a raw folder into a dataset ready for training.

Writes ``data/organized/<name>/``: metadata.json, training_config.json,
labeled.csv, unlabeled.csv, splits/{train,val,test}.csv and scan_report.json. Rows
are plain dicts with the keys of ``ROW_KEYS``; they name files by item id, and the
places go into the workspace's private map (app.private), never into these files.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from app.atomic import swap_in, temp_sibling
from app.cube_store import STORE_SUFFIXES
from core.errors import DatasetError
from core.findings import row_findings
from app.organize.detect import (
    LABEL_RULES, MODALITY_RULES, NORMAL, REGION_RULES, Detected, anomaly_class, described_regions, detect,
    findings, label_from_folder, vocabulary_digest,
)
from app.organize.pixel_rules import agree_with_siblings, fill_regions
from app.organize.colour import dataset_channels
from app.organize.multilabel import dataset_findings
from app.label_maps import label_map
from app.organize.classes import class_folders, name_corrections, own_names_beside_unknown, settle_classes
from app.organize.ordinal import grade_order, ordered_classes
from app.organize.looks import folder_looks
from app.organize.npz import npz_rows
from app.pseudonyms import pseudonymize
from app.organize.review import apply_corrections, load_corrections
from app.organize.rows import ROW_KEYS, natural_key, read_rows, row_place, write_rows  # noqa: F401  (re-exported)
from app.organize.scan import IMAGE_2D, VOLUMES, FileRecord, Skipped, base_name, masked_stem, scan_tree
from app.private import identifier_tokens, item_id, source_id, token_hash
from app.organize.tables import (
    LabelTable, TableHit, TableReport, TreeIndex, free_text, is_negative, match_keys, match_tables, read_label_table,
    open_table, read_split_table, table_dialect,
)
from app.organize.splits import SPLITS, assign_splits, check_patient_disjoint
from app.progress import Progress, report
from app.state import Kind, read_state_or, write_state
from app.workspace import Workspace, now_iso



@dataclass(frozen=True)
class OrganizeResult:
    name: str
    path: Path
    items: int
    labeled: int
    unlabeled: int
    skipped: int
    classes: dict[str, int]
    split_counts: dict[str, int]
    skip_reasons: dict[str, int]  # reason (without file details) -> files
    duplicates: int  # groups of files with identical content
    conflicts: int = 0  # items a label table and their class folder disagree on: left unlabeled
    table_notes: tuple[str, ...] = ()  # per label table: rows applied, ambiguous, naming no file
    mask_note: str = ""  # why the masks beside the images label nothing, when they do not
    findings: tuple[str, ...] = ()  # several findings per image: those a classifier gives a probability each
    class_note: str = ""  # why the dataset's own class names were kept (app/organize/classes.py)


NOT_ITEMS = ("table", "mask", "annotation", "json", "companion")  # files read for what they say of the images


def group_items(records: list[FileRecord], root: Path) -> list[tuple[list[FileRecord], str]]:
    """Files -> items: one per 2D image or volume, one per DICOM series (tables, masks: none)."""
    series: dict[str, list[FileRecord]] = defaultdict(list)
    items: list[tuple[list[FileRecord], str]] = []
    for record in records:
        if record.format in NOT_ITEMS:
            continue
        if record.format == "dicom":
            # A file with no series UID is a series of its own.
            series[record.series_uid or f"file:{record.path}"].append(record)
        else:
            items.append(([record], record.format))
    for files in series.values():
        files.sort(key=lambda r: (r.position is None, r.position or 0.0, r.path))
        items.append((files, "dicom_series"))
    items.sort(key=lambda pair: pair[0][0].path)
    return items


def _stem(path: str) -> str:
    """A file's name without its extension: sub-01_T1w for sub-01_T1w.nii.gz and sub-01_T1w.json
    (a name's own dots kept: 1.3.6.1.4.1.14519...mhd)."""
    return base_name(Path(path).name, (*VOLUMES, *IMAGE_2D, ".json", ".dcm", ".dicom", ".ima"))


@dataclass
class JsonFacts:
    """What the JSON files of a tree say of its images: BIDS sidecars (sub-01_T1w.json beside
    sub-01_T1w.nii.gz: the DICOM fields dcm2niix copied) and dataset_description.json names."""

    sidecars: dict[tuple[str, str], dict[str, Any]]  # (folder, stem) -> the sidecar's kept fields
    dataset_names: dict[str, str]  # folder -> the words of its dataset_description's Name
    unused: set[str]  # JSON files that are neither

    def header(self, record: FileRecord) -> dict[str, Any]:
        """``record``'s header with its sidecar's fields under it (the image's own tags win) and
        the name of the nearest dataset above it."""
        path = Path(record.path)
        header = {**self.sidecars.get((str(path.parent), _stem(record.path)), {}), **record.header}
        name = next((self.dataset_names[str(p)] for p in path.parents if str(p) in self.dataset_names), "")
        return {**header, "DatasetName": name} if name else header


def json_facts(records: list[FileRecord]) -> JsonFacts:
    images = {(str(Path(r.path).parent), _stem(r.path)) for r in records if r.format not in NOT_ITEMS}
    facts = JsonFacts({}, {}, set())
    for record in (r for r in records if r.format == "json"):
        path, key = Path(record.path), (str(Path(record.path).parent), _stem(record.path))
        if path.name == "dataset_description.json" or (path.name == "dataset.json" and "DatasetName" in record.header):
            facts.dataset_names[str(path.parent)] = record.header.get("DatasetName", "")  # BIDS; a Decathlon task
        elif key in images:
            facts.sidecars[key] = record.header
        else:
            facts.unused.add(record.path)
    return facts


@dataclass
class Context:
    """What the organizer learned from files that are not items: label tables and masks."""

    tables: list[tuple[str, LabelTable]]  # (path, table)
    masks: dict[tuple[str, str], bool]  # (image folder, image stem) -> mask non-empty
    secret: bytes
    looks: dict[str, str] = field(default_factory=dict)  # 2D image folder -> its pixels' look
    splits: dict[str, str] = field(default_factory=dict)  # image path -> a given split (official lists)
    hits: dict[str, list[TableHit]] = field(default_factory=dict)  # image path -> what label tables say of it
    annotations: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # series -> [(SEG|RTSTRUCT, lesion)]
    table_reports: list[TableReport] = field(default_factory=list)
    root_name: str = ""  # the name of the folder the user pointed at: read by the name rules too
    mask_note: str = ""  # why the masks beside the images label nothing, when they do not
    facts: JsonFacts | None = None  # what BIDS sidecars and dataset descriptions say
    class_folders: dict[Path, str] = field(default_factory=dict)  # folders that are classes by their place
    label_maps: dict[str, list[int]] = field(default_factory=dict)  # label map volume -> the values in it
    table_folders: tuple[str, ...] = ()  # the folders that hold label tables, as rows' paths write them


def _context(records: list[FileRecord], secret: bytes, root: Path) -> tuple[Context, list[Skipped]]:
    tables, unused, masks, splits, annotations, areas = [], [], {}, {}, {}, []
    label_maps: dict[str, list[int]] = {}  # a label map volume -> the values in it
    facts = json_facts(records)
    for record in records:
        path = Path(record.path)
        if record.format == "json":
            if record.path in facts.unused:
                unused.append(Skipped(str(path.relative_to(root)), "a JSON file beside no image of its name "
                                      "(not a BIDS sidecar) and no dataset_description.json"))
        elif record.format == "table":
            table = read_label_table(path)
            given = None if table else read_split_table(path)
            if table and free_text(table):
                unused.append(Skipped(str(path.relative_to(root)), free_text(table)))
            elif table:
                tables.append((record.path, table))
            elif given:
                splits.update(given)
            else:
                unused.append(Skipped(str(path.relative_to(root)), _unused_table_reason(path)))
        elif record.format == "annotation":
            for series in record.header.get("References", []):
                annotations.setdefault(series, []).append((record.header["Annotation"], record.header["Lesion"]))
        elif record.format == "mask" and record.header.get("VolumeMask"):
            label_maps[record.path] = list(record.header.get("Values", []))  # labels only where its layout says
        elif record.format == "mask":
            stem = masked_stem(path.name.split(".")[0])
            nonempty = bool(record.header.get("MaskNonEmpty"))
            areas.append(float(record.header.get("MaskArea", 0.0)))
            for folder in (path.parent, path.parent.parent, path.parent.parent / "images"):
                key = (str(folder), stem)
                masks[key] = masks.get(key, False) or nonempty
    mask_note = ""
    if areas and min(areas) > 0 and float(np.median(areas)) > OUTLINE_AREA:
        # Every mask set, and large: outlines of an organ (lungs), not of lesions. They label nothing.
        mask_note = (f"{len(areas)} mask(s), every one set and covering {np.median(areas):.0%} of its image (median): "
                     "organ outlines, not lesions; they label nothing")
        masks = {}

    index = TreeIndex(r.path for r in records if r.format not in NOT_ITEMS)
    matches = match_tables(tables, index)
    context = Context(tables, masks, secret, splits=match_keys(splits, index), hits=matches.hits,
                      table_reports=matches.reports, root_name=root.name, annotations=annotations,
                      mask_note=mask_note, facts=facts, label_maps=label_maps,
                      table_folders=tuple(sorted({str(PurePath(root.name, Path(p).parent.relative_to(root)))
                                                  for p, _ in tables})))
    return context, unused


def _label_map_note(rows: list[dict[str, Any]], maps: int) -> str:
    """What the label map volumes did: set aside as images, and how many volumes they labeled."""
    if not maps:
        return ""
    used = sum(1 for r in rows if r["label_rule"] == "label_map")
    return (f"{maps} segmentation volume(s) (label maps: labelsTr/, *_seg, segmentation.nii.gz) set aside, not "
            f"images; {used} volume(s) labeled from them (tumor where a lesion value is present, else normal). "
            "A map labels only where its layout names its lesion values (a Decathlon dataset.json, KiTS, LiTS, "
            "BraTS): an organ's map and a lesion's look alike")


def _unused_table_reason(path: Path) -> str:
    """Why a CSV file is not read: MURA's study lists say what its folder names say."""
    try:
        with open_table(path) as handle:
            first = next(csv.reader(handle, dialect=table_dialect(handle)), [])
    except (OSError, csv.Error):
        first = []
    if len(first) == 2 and first[0].rstrip().endswith("/") and first[1].strip() in ("0", "1"):
        return "a list of studies and labels; the same labels are read from the study folders' names"
    if len(first) == 1 and "/" in first[0]:
        return "a list of image paths without labels"
    return "a CSV file that is not a label table this tool reads"


def _table_label(files: list[FileRecord], context: Context) -> tuple[TableHit | None, str]:
    """What the label tables say of an item (a series: of any of its slices), and their label.

    Several answers: a finding wins over "normal" (a series with one bleeding slice
    bleeds) and different findings are all kept ("a|b")."""
    hits = [hit for f in files for hit in context.hits.get(f.path, [])]
    if not hits:
        return None, ""
    findings = sorted({part for hit in hits if not is_negative(hit.label) for part in hit.label.split("|")})
    label = "|".join(findings) if findings else hits[0].label  # all say normal: in the table's own words
    return next((h for h in hits if h.patient), hits[0]), label


def _make_row(files: list[FileRecord], kind: str, root: Path, ws: Workspace, context: Context) -> dict[str, Any]:
    middle = files[len(files) // 2]  # the slice a 2D model looks at
    path = Path(middle.path)
    relative = PurePath(context.root_name, path.relative_to(root))
    header = context.facts.header(middle) if context.facts else dict(middle.header)
    table_hit, table_label = _table_label(files, context)
    if context.table_folders:
        header["TableFolders"] = context.table_folders
    place = next((context.class_folders[p] for p in path.parents if p in context.class_folders), "")
    if place:
        header["ClassFolder"] = place
    folder_label = label_from_folder(header, relative) or place
    conflict = bool(table_hit and folder_label and anomaly_class(table_label) != anomaly_class(folder_label))
    if table_hit:
        header.update(TableModality=table_hit.table.modality, TableRegion=table_hit.table.region)
        if not conflict:
            header["LabelTable"] = table_label
    mask_key = (str(path.parent), path.name.split(".")[0])
    if mask_key in context.masks:
        header["MaskNonEmpty"] = context.masks[mask_key]
    if kind == "volume" and context.label_maps:
        found = label_map(path, root)
        values = context.label_maps.get(str(found.path)) if found and found.path else None
        if values:  # read by the scanner; a map present and empty is a volume without its lesion
            header["LesionMap"] = any(v in found.values if found.values else v > 0 for v in values)
    marks = context.annotations.get(middle.series_uid, []) if kind == "dicom_series" else []
    lesion = next((lesion for _, lesion in marks if lesion), "")
    if lesion:
        header["AnnotatedLesion"] = lesion
    if kind == "image2d" and str(path.parent) in context.looks:
        header["ImageLook"] = context.looks[str(path.parent)]
    modality = detect(MODALITY_RULES, header, relative, default="OT")
    region = detect(REGION_RULES, header, relative)
    named = described_regions(header) if region.rule in ("dicom_body_part", "dicom_description") else []
    label = detect(LABEL_RULES, header, relative, default="")
    if conflict:  # never resolved silently: unlabeled, and said in the scan report and the review
        label = Detected("", "conflict", 0.0)
    series_hash = hashlib.sha256("".join(f.sha256 for f in files).encode()).hexdigest()
    patient = middle.patient or f"F{series_hash[:12]}"  # unknown patient: the item is its own
    if table_hit and table_hit.patient and middle.patient_rule != "dicom_patient_id":
        patient = pseudonymize(context.secret, f"table:{table_hit.patient}")
    return {
        "path": ws.relative(Path(middle.path)),  # in memory only: write_dataset keeps it in the private map
        **({"files": [ws.relative(Path(f.path)) for f in files]} if kind == "dicom_series" else {}),
        "kind": "image2d" if kind == "image2d" else ("volume" if kind == "volume" else "dicom_series"),
        "format": "dicom" if kind == "dicom_series" else Path(middle.path).suffix.lower().lstrip("."),
        "series_id": middle.series_uid if kind == "dicom_series" else "",
        "n_files": len(files),
        "patient_id": patient,
        "modality": modality.value, "modality_rule": modality.rule,
        "modality_confidence": modality.confidence,
        "region": region.value, "region_rule": region.rule, "region_confidence": region.confidence,
        # every region named (the pixels pick the main one, app.organize.pixel_rules), else the one found
        "regions": "|".join(named) if len(named) > 1 else ("" if region.value == "unknown" else region.value),
        "label": anomaly_class(label.value) if label.value else "",
        "source_label": label.value,
        "findings": findings(label.value),
        "labeled": bool(label.value),
        "label_rule": label.rule if label.value or conflict else "", "label_confidence": label.confidence,
        **({"conflict": {"label_table": table_label, "class_folder": folder_label}} if conflict else {}),
        "sha256": files[0].sha256 if len(files) == 1 else series_hash,
        "annotations": "|".join(sorted({kind for kind, _ in marks})),
        "split": "",
    }


# 2: non-image DICOM objects (SEG, SR, ...) and DICOMDIR told apart; 3: every region word of a
# description kept (only the body part tag's words were), body part defined terms kept whole
# 4: masks' area; 5: SOP class and view position kept (mammography); 6: ImageType kept (the
# anatomy an ultrasound image's type names, a gated nuclear medicine study), JSON sidecars read
# 7: the values in a label map volume (the lesion values a Decathlon dataset.json names label it);
# files in a folder whose name ends in "mask" are masks (Montgomery's ManualMask/leftMask/); OCT2017 patients
SCANNER_VERSION = 7
SCANNER = f"{SCANNER_VERSION}.{vocabulary_digest()}"  # and the words a description keeps (detect.py)
OUTLINE_AREA = 0.15  # masks set on every image and covering more than this (median) outline organs
MAX_WORKERS = 32  # more scan processes than this only add memory


def default_image_size(rows: list[dict[str, Any]]) -> int:
    return 128 if len(rows) < 5000 else 224


def organize(
    ws: Workspace,
    source: str | Path,
    name: str,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
    workers: int | None = None,
    replace: bool = False,
    progress: Progress | None = None,
) -> OrganizeResult:
    """Scan ``source`` (a folder, or a dataset name in the index) into an organized dataset.

    The dataset is written whole beside its place and swapped in; until then a
    previous version stays whole and in use. Replacing a dataset that runs were
    trained on needs ``replace``.

    Raises:
        DatasetError: the source does not exist or holds no image this tool reads,
            or the dataset has trained runs and ``replace`` is not set.
        BusyError: another process is writing this dataset.
    """
    ws.organized_path(name)  # the name is checked before any work
    with ws.lock("dataset", name):
        check_replace(ws, name, replace)
        return _organize(ws, source, name, seed=seed, fractions=fractions, workers=workers,
                         replace=replace, progress=progress)


def trained_runs(ws: Workspace, name: str) -> list[str]:
    """The runs trained on dataset ``name``."""
    return [m["run"] for m in ws.runs() if m.get("dataset") == name]


def check_replace(ws: Workspace, name: str, replace: bool) -> None:
    """Refuse to replace a dataset that runs were trained on, unless asked to.

    Raises:
        DatasetError: saying which runs, and how to go on.
    """
    if replace or not (ws.organized_path(name) / "metadata.json").exists():
        return
    runs = trained_runs(ws, name)
    if runs:
        shown = ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
        raise DatasetError(
            f"Dataset {name!r} already exists and runs were trained on it ({shown}). Organize under another "
            f"name, or replace it with --replace (those runs keep their models; evaluating them will say "
            f"the data changed)."
        )


def _organize(
    ws: Workspace, source: str | Path, name: str, *, seed: int, fractions: tuple[float, float, float],
    workers: int | None, replace: bool, progress: Progress | None,
) -> OrganizeResult:
    if str(source).lower().endswith(STORE_SUFFIXES):
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise DatasetError(f"{path} does not exist.")
        rows = npz_rows(ws, path, progress)
        check_patient_disjoint(rows)  # the official splits, kept as they are
        return write_dataset(ws, name, ws.private.store_source(path), rows, [], [], seed, fractions,
                             replace=replace)
    root = _resolve_source(ws, source)
    workers = max(1, min(int(workers), MAX_WORKERS)) if workers else min(4, os.cpu_count() or 1)
    source = source_id(ws.secret(), ws.relative(root))  # the cache names neither the folder nor its files
    cache_path = ws.data_dir / "cache" / f"scan-{source}.json"
    _drop_old_caches(cache_path.parent)
    cache = read_state_or(cache_path, Kind.SCAN_CACHE, {"root": source, "files": {}})
    cached = cache["files"] if cache.get("scanner", 1) == SCANNER else {}
    records, skipped, fresh = scan_tree(root, ws.secret(), workers=workers, cache=cached, progress=progress)
    write_state(cache_path, Kind.SCAN_CACHE, {"root": source, "files": fresh, "scanner": SCANNER})
    ws.private.add_identifiers({h for r in records for h in r.identifiers})
    context, unused = _context(records, ws.secret(), root)
    skipped += unused
    if not any(r.format not in NOT_ITEMS for r in records):
        reasons = Counter(s.reason.split(":")[0] for s in skipped).most_common(3)
        why = "; ".join(f"{n} {reason}" for reason, n in reasons)
        raise DatasetError(
            f"No readable image under {root} ({len(skipped)} file(s) skipped{': ' + why if why else ''}). "
            "Point Organize at a folder of DICOM, PNG/JPEG/TIFF or NIfTI files."
        )
    groups = group_items(records, root)
    report(progress, "Looking at 2D images", 0, 1)
    context.looks = folder_looks([Path(files[0].path) for files, kind in groups if kind == "image2d"])
    report(progress, "Looking at 2D images", 1, 1)
    known = set(ws.private.identifier_hashes())
    context.class_folders = class_folders(
        [Path(files[0].path) for files, kind in groups if kind == "image2d"], root,
        lambda name: any(token_hash(ws.secret(), t) in known for t in identifier_tokens(name)))
    rows = [_make_row(files, kind, root, ws, context) for files, kind in groups]
    beside = own_names_beside_unknown(rows, [Path(files[0].path) for files, _ in groups], context.class_folders)
    own_names = settle_classes(rows)
    fill_regions(rows, [[f.path for f in files] for files, _ in groups], progress)
    agree_with_siblings(rows, [[f.path for f in files] for files, _ in groups])
    apply_corrections(rows, load_corrections(ws, name), ws.secret())
    name_corrections(rows, own_names, beside)
    assign_splits(rows, fractions, seed)
    _given_splits(rows, {ws.relative(Path(p)): split for p, split in context.splits.items()})
    duplicates = _duplicates(ws, records)
    skipped_ids = _skipped(ws, root, skipped)
    tables = _table_notes(ws, root, context.table_reports)
    mask_note = "; ".join(filter(None, [context.mask_note, _label_map_note(rows, len(context.label_maps))]))
    report_labels = {"label_tables": tables, **({"masks": mask_note} if mask_note else {}),
                     **({"classes": own_names} if own_names else {})}
    result = write_dataset(ws, name, ws.private.store_source(root), rows, skipped_ids, duplicates, seed, fractions,
                           replace=replace, label_report=report_labels)
    lines = tuple(_table_line(root, r) for r in context.table_reports)
    class_note = (f"{', '.join(own_names['own_class_names'])}: {own_names['why']}" if own_names else "")
    return dataclasses.replace(result, table_notes=lines, mask_note=mask_note, class_note=class_note)


def _table_notes(ws: Workspace, root: Path, reports: list[TableReport]) -> list[dict[str, Any]]:
    """What each label table did, by item id, for the scan report."""
    ids = _file_ids(ws, [ws.relative(Path(r.path), follow_links=False) for r in reports])
    return [{"item": i, "layout": r.table.layout, "rows_applied": r.applied,
             "rows_naming_several_files": r.ambiguous, "rows_naming_no_file": r.unmatched}
            for i, r in zip(ids, reports)]


def _table_line(root: Path, report: TableReport) -> str:
    """One line on the user's screen for a label table (its place is theirs to see)."""
    line = f"{Path(report.path).relative_to(root)} ({report.table.layout}): {report.applied} row(s) applied"
    if report.ambiguous:
        line += (f"; {report.ambiguous} name a file that several folders hold and were not applied "
                 "(give the table a column of paths)")
    if report.unmatched:
        line += f"; {report.unmatched} name no file here"
    return line


def _drop_old_caches(folder: Path) -> None:
    """Scan caches of versions before item ids named files by path and kept free text: gone."""
    for old in folder.glob("scan-*.json"):
        if not re.fullmatch(r"scan-F[0-9a-f]{12}\.json", old.name):
            old.unlink(missing_ok=True)


def _given_splits(rows: list[dict[str, Any]], given: dict[str, str]) -> None:
    """Official splits (a split list beside the images) replace the drawn ones where they say.

    Raises:
        DatasetError: the list puts one patient's images in two splits.
    """
    if not given:
        return
    for row in rows:
        split = given.get(row["path"])
        if split:
            row["split"] = split
    try:
        check_patient_disjoint(rows)
    except DatasetError as err:
        raise DatasetError(f"The split list beside the images mixes patients across splits: {err}") from err


def _resolve_source(ws: Workspace, source: str | Path) -> Path:
    index = ws.load_index()
    if str(source) in index and index[str(source)].get("raw_path"):
        entry = index[str(source)]
        if not entry.get("complete"):
            raise DatasetError(f"Dataset {source!r} is not completely collected. Run Collect again.")
        return ws.private.source(entry["raw_path"])
    root = Path(source).expanduser()
    if not root.is_dir():
        known = ", ".join(index) or "none collected yet"
        raise DatasetError(f"{source} is neither a folder nor a collected dataset (datasets: {known}).")
    return root.resolve()


def _file_ids(ws: Workspace, places: list[str]) -> list[str]:
    """Item ids for single files, recorded in the private map."""
    secret = ws.secret()
    ids = [item_id(secret, place) for place in places]
    ws.private.add(items={i: {"path": place} for i, place in zip(ids, places)})
    return ids


def _duplicates(ws: Workspace, records: list[FileRecord]) -> list[list[str]]:
    """Groups of files with identical content, by item id."""
    by_hash: dict[str, list[str]] = defaultdict(list)
    for record in records:
        if record.sha256:  # a detached header's voxels are hashed with the header
            by_hash[record.sha256].append(ws.relative(Path(record.path), follow_links=False))
    groups = [places for places in by_hash.values() if len(places) > 1]
    ids = iter(_file_ids(ws, [p for group in groups for p in group]))
    return [[next(ids) for _ in group] for group in groups]


def _skipped(ws: Workspace, root: Path, skipped: list[Skipped]) -> list[dict[str, str]]:
    """Skipped files by item id, with their reason (which names no path)."""
    ids = _file_ids(ws, [ws.relative(root / s.path, follow_links=False) for s in skipped])
    return [{"item": i, "reason": s.reason} for i, s in zip(ids, skipped)]


def write_dataset(
    ws: Workspace, name: str, source: str, rows: list[dict[str, Any]],
    skipped: list[dict[str, str]], duplicates: list[list[str]], seed: int,
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15), held_out: tuple[str, ...] = (),
    replace: bool = False, label_report: dict[str, Any] | None = None,
) -> OrganizeResult:
    """Write every file of an organized dataset from its rows (splits already assigned).

    All files are written into a new folder beside the dataset's and swapped in
    whole (see app.atomic.swap_in), under the dataset's lock. Rows that still carry
    their path get an item id, and the place goes into the private map.

    ``held_out``: labels kept out of the classes (open-set evaluation: they appear in
    the test split only, as anomalies no classifier was trained on).

    Raises:
        DatasetError: see check_replace.
        BusyError: another process is writing this dataset.
    """
    final = ws.organized_path(name)
    with ws.lock("dataset", name):
        check_replace(ws, name, replace)
        _assign_items(ws, rows)
        new = temp_sibling(final, "new")
        new.mkdir(parents=True)
        try:
            if (final / "corrections.json").exists():  # the user's corrections outlive every version
                shutil.copy2(final / "corrections.json", new / "corrections.json")
            result = _write_files(ws, name, new, final, source, rows, skipped, duplicates, seed,
                                  fractions, held_out, label_report or {"label_tables": []})
            swap_in(new, final)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        ws.record_dataset(name, organized_path=ws.relative(final), items=len(rows))
    return result


def _assign_items(ws: Workspace, rows: list[dict[str, Any]]) -> None:
    """Give rows that carry a path (new ones, or read from an older version) their item id,
    and record where each is in the private map; the path then leaves the row."""
    secret = ws.secret()
    entries: dict[str, dict[str, Any]] = {}
    for row in rows:
        place = row.pop("path", None)
        files = row.pop("files", None)
        if not place or row.get("item"):
            continue
        if row["kind"] == "npz":  # one entry per file; the row adds its split and index
            file_id = item_id(secret, place)
            entries[file_id] = {"path": place}
            row["item"] = f"{file_id}.{row['series_id']}"
        else:
            key = f"series:{row['series_id']}" if row["kind"] == "dicom_series" and row["series_id"] else place
            row["item"] = item_id(secret, key)
            entries[row["item"]] = {"path": place, **({"files": files} if files else {})}
    ws.private.add(items=entries)


def dataset_version(folder: Path) -> str:
    """A hash of a dataset's rows and splits: what a run was trained on."""
    digest = hashlib.sha256()
    for part in ("labeled.csv", "unlabeled.csv", *(f"splits/{s}.csv" for s in SPLITS)):
        path = folder / part
        digest.update(part.encode() + b"\0" + (path.read_bytes() if path.exists() else b"") + b"\0")
    return digest.hexdigest()[:16]


def _write_files(
    ws: Workspace, name: str, out: Path, final: Path, source: str, rows: list[dict[str, Any]],
    skipped: list[dict[str, str]], duplicates: list[list[str]], seed: int,
    fractions: tuple[float, float, float], held_out: tuple[str, ...], label_report: dict[str, Any],
) -> OrganizeResult:
    labeled = [r for r in rows if r["labeled"]]
    unlabeled = [r for r in rows if not r["labeled"]]
    check_patient_disjoint(rows)
    write_rows(out / "labeled.csv", labeled)
    write_rows(out / "unlabeled.csv", unlabeled)
    for split in SPLITS:
        write_rows(out / "splits" / f"{split}.csv", [r for r in rows if r["split"] == split])
    conflicts = [{"item": r["item"], "answers": r["conflict"]} for r in rows if r.get("conflict")]
    _write_json(out / "scan_report.json", {"skipped": skipped, "duplicates": duplicates,
                                           "label_conflicts": conflicts, **label_report})
    classes = Counter(r["label"] for r in labeled if r["label"] not in held_out)
    ordered = sorted(classes, key=lambda c: (c != NORMAL, natural_key(c)))  # class_2 before class_10
    several = dataset_findings(labeled)  # one probability per finding (app/organize/multilabel.py)
    graded = not several and ordered_classes(ordered, {Path(row_place(ws, r)).name for r in rows
                                                       if r.get("kind") == "npz"})
    if graded:  # grades in their order: the ordinal loss reads a grade's place in this list
        ordered = grade_order(ordered)
    split_counts = Counter(r["split"] for r in rows)
    counts = {
        "items": len(rows), "labeled": len(labeled), "unlabeled": len(unlabeled),
        "patients": len({r["patient_id"] for r in rows}), "skipped": len(skipped),
        "duplicates": len(duplicates), "by_class": dict(classes),
        "by_modality": dict(Counter(r["modality"] for r in rows)),
        "by_region": dict(Counter(r["region"] for r in rows)),
        "by_split": dict(split_counts),
        "by_source_label": dict(Counter(r["source_label"] for r in labeled)),
        "label_conflicts": len(conflicts),
    }
    if several:
        counts["by_finding"] = dict(Counter(f for r in labeled for f in set(row_findings(r))))
    write_state(out / "metadata.json", Kind.DATASET_METADATA, {
        "name": name, "source_dataset": source, "classes": ordered, "counts": counts,
        **({"findings": several} if several else {}),
        "items": len(rows), "created": now_iso(), "seed": seed, "split_fractions": list(fractions),
        "version": dataset_version(out),
        **({"held_out_classes": list(held_out)} if held_out else {}),
    })
    total = sum(classes.values())
    weights = {c: round(total / (len(classes) * classes[c]), 4) for c in ordered}
    previous = read_state_or(final / "training_config.json", Kind.TRAINING_CONFIG, {})
    write_state(out / "training_config.json", Kind.TRAINING_CONFIG, {
        "balance": previous.get("balance", "class_weights"),
        "dataset": name, "classes": ordered, "normal_class": NORMAL if NORMAL in classes else "",
        "image_size": default_image_size(rows), "channels": dataset_channels(ws, rows), "class_weights": weights,
        "labeled_fraction": round(len(labeled) / len(rows), 4),
        **({"findings": several} if several else {}),
        "ordinal": graded,
        "recommended_phases": (["supervised", "vae"] if several else ["supervised", "vae", "hybrid"])
        if NORMAL in classes else ["supervised"],
    })
    reasons = Counter(s["reason"].split(":")[0] for s in skipped)
    return OrganizeResult(name, final, len(rows), len(labeled), len(unlabeled), len(skipped),
                          dict(classes), dict(split_counts), dict(reasons.most_common()), len(duplicates),
                          len(conflicts), findings=tuple(several))


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    os.replace(tmp, path)
