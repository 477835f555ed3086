"""Incremental rescans and user corrections that survive them."""

from pathlib import Path

import pytest

from core.errors import DatasetError
from app.organize import scan
from app.organize.organizer import organize, read_rows
from app.organize.review import add_correction, review_groups
from tests.conftest import placed
from tests.app.organize.layouts import LAYOUTS, png


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    LAYOUTS["chest_xray_pneumonia"](tmp_path / "d")
    png(tmp_path / "d" / "extra" / "scan_1.png")
    return tmp_path / "d"


def test_a_rescan_reads_only_new_or_changed_files(ws, tree, monkeypatch) -> None:
    organize(ws, tree, "cxr", workers=1)
    calls: list[str] = []
    real = scan.scan_file
    monkeypatch.setattr(scan, "scan_file", lambda path, root, secret: calls.append(path.name) or real(path, root, secret))
    again = organize(ws, tree, "cxr", workers=1)
    assert calls == [] and again.items == 25
    png(tree / "extra" / "scan_2.png")
    (tree / "extra" / "scan_1.png").write_bytes((tree / "extra" / "scan_2.png").read_bytes() + b"")
    import os

    os.utime(tree / "extra" / "scan_1.png", ns=(1, 1))
    third = organize(ws, tree, "cxr", workers=1)
    assert sorted(calls) == ["scan_1.png", "scan_2.png"] and third.items == 26


def test_a_rescan_reads_descriptions_again_when_the_words_the_rules_read_change(ws, tmp_path, monkeypatch) -> None:
    """A scan keeps only the description words a rule reads (free text can hold names); a
    newer vocabulary must not meet records cut to an older one's words."""
    from app.organize import detect, organizer
    from tests.app.organize.layouts import dicom

    dicom(tmp_path / "pacs" / "1.dcm", modality="CT", patient="P1", study="CT ZYGOFRONTAL")
    organize(ws, tmp_path / "pacs", "pacs", workers=1)
    assert read_rows(ws.organized_path("pacs") / "unlabeled.csv")[0]["region"] == "unknown"
    monkeypatch.setitem(detect.REGION_WORDS, "brain", detect.REGION_WORDS["brain"] | {"ZYGOFRONTAL"})
    monkeypatch.setattr(organizer, "SCANNER", f"{organizer.SCANNER_VERSION}.{detect.vocabulary_digest()}")
    calls: list[str] = []
    real = scan.scan_file
    monkeypatch.setattr(scan, "scan_file", lambda path, root, secret: calls.append(path.name) or real(path, root, secret))
    organize(ws, tmp_path / "pacs", "pacs", workers=1)
    assert calls == ["1.dcm"], "read again under the new vocabulary"
    row = read_rows(ws.organized_path("pacs") / "unlabeled.csv")[0]
    assert (row["region"], row["region_rule"]) == ("brain", "dicom_description")


def test_review_groups_show_detection_per_folder(ws, tree) -> None:
    organize(ws, tree, "cxr", workers=1)
    groups = {g.folder.split("/d/")[-1]: g for g in review_groups(ws, "cxr")}
    assert groups["chest_xray/train/PNEUMONIA"].items == 6
    assert groups["chest_xray/train/PNEUMONIA"].label == "infection"
    assert groups["extra"].label == "(unlabeled)"
    assert groups["extra"].region == "unknown" and groups["extra"].confidence == 0.0, "a folder to correct"


def test_corrections_are_saved_and_reapplied_on_rescan(ws, tree) -> None:
    organize(ws, tree, "cxr", workers=1)
    folder = next(g.folder for g in review_groups(ws, "cxr") if g.folder.endswith("/extra"))
    add_correction(ws, "cxr", folder, "label", "PNEUMONIA")
    add_correction(ws, "cxr", folder, "region", "chest")
    result = organize(ws, tree, "cxr", workers=1)
    assert result.unlabeled == 0
    row = next(r for r in placed(ws, read_rows(ws.organized_path("cxr") / "labeled.csv")) if "extra" in r["path"])
    assert (row["label"], row["source_label"], row["label_rule"]) == ("infection", "PNEUMONIA", "user_correction")
    assert row["region_rule"] == "user_correction" and float(row["label_confidence"]) == 1.0
    with pytest.raises(DatasetError):
        add_correction(ws, "cxr", folder, "patient_id", "x")


def test_statistics_merge_balance_and_export(ws, tmp_path) -> None:
    import json

    from app.organize.dataset_tools import (
        balance_rows, dataset_statistics, export_dataset, merge_datasets, set_balance,
    )
    from app.organize.splits import check_patient_disjoint
    from app.state import Kind, read_state

    LAYOUTS["busi"](tmp_path / "busi")
    LAYOUTS["bone_fracture"](tmp_path / "bone")
    organize(ws, tmp_path / "busi", "busi", workers=1)
    organize(ws, tmp_path / "bone", "bone", workers=1)
    stats = dataset_statistics(ws, "busi")
    assert stats["items"] == 6 and stats["by_modality"] == {"US": 6}
    assert sum(stats["by_class_and_split"]["tumor"].values()) == 4
    assert Path(stats["plot"]).stat().st_size > 1000

    merged = merge_datasets(ws, ["busi", "bone"], "both")
    assert merged.items == 14 and set(merged.classes) == {"normal", "tumor", "fracture"}
    rows = read_rows(ws.organized_path("both") / "labeled.csv")
    check_patient_disjoint(rows)
    with pytest.raises(DatasetError):
        merge_datasets(ws, ["busi"], "alone")

    balanced = balance_rows(rows, "oversample", seed=1)
    counts = {label: sum(r["label"] == label for r in balanced) for label in ("normal", "tumor", "fracture")}
    assert len(set(counts.values())) == 1 and counts["normal"] == 6
    assert len(balance_rows(rows, "undersample")) == 3 * 4
    set_balance(ws, "both", "oversample")
    assert read_state(ws.organized_path("both") / "training_config.json", Kind.TRAINING_CONFIG)["balance"] == "oversample"
    organize(ws, tmp_path / "busi", "busi", workers=1)  # a rescan keeps the choice
    set_balance(ws, "busi", "undersample")
    organize(ws, tmp_path / "busi", "busi", workers=1)
    assert read_state(ws.organized_path("busi") / "training_config.json", Kind.TRAINING_CONFIG)["balance"] == "undersample"

    out = export_dataset(ws, "both", "json", tmp_path / "out" / "both.json")
    assert len(json.loads(out.read_text())["rows"]) == 14
    out = export_dataset(ws, "both", "csv", tmp_path / "out" / "both.csv")
    assert len(out.read_text().strip().splitlines()) == 15


def test_a_held_out_class_is_unknown_in_training_and_present_in_test(demo_ws) -> None:
    from core.errors import DatasetError
    from app.organize.dataset_tools import all_rows, hold_out_class

    result = hold_out_class(demo_ws, "demo", "tumor", "demo-no-tumor")
    meta = demo_ws.dataset_metadata("demo-no-tumor")
    assert "tumor" not in meta["classes"] and meta["held_out_classes"] == ["tumor"]
    assert "tumor" not in result.classes
    rows = all_rows(demo_ws, "demo-no-tumor")
    tumors = [r for r in rows if r["label"] == "tumor"]
    assert tumors and {r["split"] for r in tumors} == {"test"}
    # Everything else is untouched, splits included.
    before = {r["item"]: r["split"] for r in all_rows(demo_ws, "demo") if r["label"] != "tumor"}
    assert {r["item"]: r["split"] for r in rows if r["label"] != "tumor"} == before
    with pytest.raises(DatasetError, match="hold out one of: fracture, hemorrhage"):
        hold_out_class(demo_ws, "demo", "normal", "x")


def test_review_has_a_line_per_series_where_one_folder_holds_several(ws, tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    from tests.app.organize.layouts import dicom

    for patient, study in (("P1", "CHEST"), ("P2", "HEAD")):  # two series, their files side by side
        series = generate_uid()
        for k in range(3):
            dicom(tmp_path / "export" / f"{patient}_{k}.dcm", modality="CT", patient=patient, study=study,
                  series=series, position=float(k))
    organize(ws, tmp_path / "export", "pacs", workers=1)
    groups = review_groups(ws, "pacs")
    assert sorted((g.region, g.items, g.files) for g in groups) == [("brain", 1, 3), ("chest", 1, 3)]
    head = next(g for g in groups if g.region == "brain")
    add_correction(ws, "pacs", head.folder, "label", "hemorrhage")
    organize(ws, tmp_path / "export", "pacs", workers=1, replace=True)
    labels = {g.region: g.label for g in review_groups(ws, "pacs")}
    assert labels == {"brain": "hemorrhage", "chest": "(unlabeled)"}, "the correction is the one series'"


def test_review_counts_conflicting_items(ws, tmp_path: Path) -> None:
    (tmp_path / "d" / "normal").mkdir(parents=True)
    for k in range(2):
        png(tmp_path / "d" / "normal" / f"x{k}.png", value=30 + k)
    (tmp_path / "d" / "labels.csv").write_text("path,label\nnormal/x0.png,tumor\nnormal/x1.png,normal\n")
    organize(ws, tmp_path / "d", "c", workers=1)
    (group,) = review_groups(ws, "c")
    assert (group.items, group.conflicts, group.confidence) == (2, 1, 0.0)
