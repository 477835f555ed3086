import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.errors import DatasetError
from app.organize.organizer import organize, read_rows
from app.state import Kind, read_state
from tests.conftest import placed, planted_phi, shared, skipped_places


def _all_rows(ws, name: str) -> list[dict]:
    out = ws.organized_path(name)
    return placed(ws, read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv"))


def test_demo_is_organized_into_the_documented_files(demo_ws) -> None:
    out = demo_ws.organized_path("demo")
    for name in ("metadata.json", "training_config.json", "labeled.csv", "unlabeled.csv",
                 "splits/train.csv", "splits/val.csv", "splits/test.csv"):
        assert (out / name).exists(), name
    meta = read_state(out / "metadata.json", Kind.DATASET_METADATA)
    assert meta["classes"][0] == "normal"
    assert set(meta["classes"]) == {"normal", "infection", "fracture", "hemorrhage", "tumor"}
    config = read_state(out / "training_config.json", Kind.TRAINING_CONFIG)
    assert config["classes"] == meta["classes"] and config["normal_class"] == "normal"


def test_demo_detection_is_right_for_every_item(demo_ws) -> None:
    rows = _all_rows(demo_ws, "demo")
    expected = {  # top folder -> (modality, region)
        "chest_xray": ("XR", "chest"), "bone_xray": ("XR", "bone"), "CT_HEAD": ("CT", "brain"),
        "MR_BRAIN": ("MR", "brain"), "nifti_brain": ("MR", "brain"), "unlabeled": ("XR", "chest"),
    }
    for row in rows:
        top = Path(row["path"]).relative_to("data/raw/demo/demo").parts[0]
        assert (row["modality"], row["region"]) == expected[top], row["path"]
        assert row["labeled"] == (top != "unlabeled")
    # Half the CT series carry no BodyPartExamined: their region comes from the description.
    ct_rules = Counter(r["region_rule"] for r in rows if r["modality"] == "CT")
    assert ct_rules["dicom_body_part"] > 0 and ct_rules["dicom_description"] > 0


def test_dicom_slices_are_grouped_into_ordered_series(demo_ws) -> None:
    import pydicom

    from app.organize.rows import series_files

    assert not (demo_ws.organized_path("demo") / "series.json").exists(), "file lists live in the private map"
    rows = [r for r in _all_rows(demo_ws, "demo") if r["kind"] == "dicom_series"]
    assert rows and all(r["n_files"] == 12 for r in rows)
    assert all(len(series_files(demo_ws, r)) == 12 for r in rows)
    for files in [series_files(demo_ws, r) for r in rows[:4]]:
        z = [float(pydicom.dcmread(demo_ws.resolve(f), stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
        assert z == sorted(z), "slices ordered by position, not by file name"
        assert len({Path(f).parent for f in files}) == 1


def test_splits_are_patient_disjoint_and_near_70_15_15(demo_ws) -> None:
    rows = _all_rows(demo_ws, "demo")
    splits_of: dict[str, set[str]] = {}
    for row in rows:
        splits_of.setdefault(row["patient_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    counts = Counter(r["split"] for r in rows)
    assert 0.6 < counts["train"] / len(rows) < 0.8
    assert counts["val"] > 0 and counts["test"] > 0
    for split in ("train", "val", "test"):  # the split files agree with the rows
        with open(demo_ws.organized_path("demo") / "splits" / f"{split}.csv") as handle:
            assert sum(1 for _ in csv.DictReader(handle)) == counts[split]


def test_every_class_reaches_the_test_split(demo_ws) -> None:
    rows = read_rows(demo_ws.organized_path("demo") / "splits" / "test.csv")
    assert {r["label"] for r in rows if r["labeled"]} == {"normal", "infection", "fracture", "hemorrhage", "tumor"}


def test_no_planted_phi_in_organized_output(demo_ws) -> None:
    phi = planted_phi(demo_ws.raw_dir)
    assert len(phi) > 20
    for path in demo_ws.organized_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            leaked = [v for v in phi if v in text]
            assert not leaked, f"{path} holds {leaked[:3]}"


def test_pseudonyms_are_stable_within_a_workspace(demo_ws, tmp_path) -> None:
    again = organize(demo_ws, "demo", "demo_again", workers=2)
    first = {r["path"]: r["patient_id"] for r in _all_rows(demo_ws, "demo")}
    second = {r["path"]: r["patient_id"] for r in _all_rows(demo_ws, again.name)}
    assert first == second


def test_bad_files_are_skipped_with_a_reason(ws, tmp_path) -> None:
    from PIL import Image

    tree = tmp_path / "messy"
    (tree / "NORMAL").mkdir(parents=True)
    Image.new("L", (16, 16), 80).save(tree / "NORMAL" / "good.png")
    (tree / "NORMAL" / "empty.png").write_bytes(b"")
    (tree / "notes.txt").write_text("hello")
    (tree / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    (tree / "dangling.png").symlink_to(tree / "missing.png")
    result = organize(ws, tree, "messy", workers=1)
    assert result.items == 1 and result.skipped == 4
    report = json.loads((ws.organized_path("messy") / "scan_report.json").read_text())
    reasons = skipped_places(ws, report, tree)
    assert reasons["NORMAL/empty.png"] == "empty file"
    assert reasons["dangling.png"] == "broken symbolic link"
    assert reasons["notes.txt"].startswith("not an image")
    assert reasons["broken.dcm"].startswith("unreadable")


def test_a_bids_sidecar_and_dataset_description_say_modality_and_region(ws, tmp_path) -> None:
    """NIfTI carries no modality or region; dcm2niix writes the DICOM fields beside it
    (sub-01_T1w.json), and a BIDS dataset_description.json names the dataset. Neither is an
    item; a sidecar's identifiers (written without anonymizing) go no further than a hash."""
    import nibabel as nib

    from app.audit import audit

    root = tmp_path / "ds004"  # a dataset folder whose name says nothing
    for subject in ("sub-01", "sub-02"):
        (root / subject / "anat").mkdir(parents=True)
        volume = np.zeros((24, 24, 12), np.int16)
        volume[6:18, 6:18, 3:9] = 300
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(root / subject / "anat" / f"{subject}_dwi.nii.gz"))
    (root / "dataset_description.json").write_text(json.dumps({"Name": "Prostate cancer cohort", "BIDSVersion": "1.8"}))
    (root / "sub-01" / "anat" / "sub-01_dwi.json").write_text(json.dumps({
        "Modality": "MR", "BodyPartExamined": "ABDOMEN", "SeriesDescription": "ep2d_diff Zebediah",
        "PatientName": "Zebediah^Quux", "ImageType": ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]}))
    (root / "notes.json").write_text('{"reviewed": true}')
    result = organize(ws, root, "bids", workers=1)
    rows = {Path(r["path"]).name: r for r in placed(ws, read_rows(ws.organized_path("bids") / "unlabeled.csv"))}
    assert result.items == 2 and set(rows) == {"sub-01_dwi.nii.gz", "sub-02_dwi.nii.gz"}
    first, second = rows["sub-01_dwi.nii.gz"], rows["sub-02_dwi.nii.gz"]
    assert (first["modality"], first["modality_rule"]) == ("MR", "dicom_modality_tag")
    assert (first["region"], first["region_rule"]) == ("abdomen", "dicom_body_part"), "its own sidecar first"
    assert (second["region"], second["region_rule"]) == ("pelvis", "folder_or_file_name"), "the dataset's name"
    report = json.loads((ws.organized_path("bids") / "scan_report.json").read_text())
    assert list(skipped_places(ws, report, root)) == ["notes.json"], "sidecars and descriptions are read, not skipped"
    written = [p for p in ws.root.rglob("*") if p.is_file() and "private" not in p.parts and "raw" not in p.parts]
    assert not any("zebediah" in p.read_bytes().decode("latin-1").lower() for p in written)
    leak = tmp_path / "leak" / "note.txt"
    leak.parent.mkdir()
    leak.write_text("seen: ZEBEDIAH")
    assert audit(leak.parent, ws.secret(), ws.private.identifier_hashes()).findings, "its hash is known to the audit"


def test_label_maps_of_volumes_are_set_aside_not_organized_as_images(ws, tmp_path) -> None:
    """The public 3D sets keep their label maps beside the images: MSD labelsTr/ (the same
    file names as imagesTr/), KiTS segmentation.nii.gz, BraTS *_seg, BIDS derivatives
    *_seg-manual. Read as images they became items of their own, label maps trained on as
    scans. An organ's map (MSD spleen, no dataset.json naming its values) labels nothing: it
    and a lesion's look alike. KiTS's tumour (2) and BraTS's map are known to be lesions."""
    import nibabel as nib

    def volume(path: Path, value: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.zeros((20, 20, 10), np.int16)
        data[5:15, 5:15, 3:7] = value
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))

    root = tmp_path / "volumes"
    for name in ("spleen_2", "spleen_3"):
        volume(root / "Task09_Spleen" / "imagesTr" / f"{name}.nii.gz", 60)
        volume(root / "Task09_Spleen" / "labelsTr" / f"{name}.nii.gz", 1)
    volume(root / "kits19" / "case_00000" / "imaging.nii.gz", 40)
    volume(root / "kits19" / "case_00000" / "segmentation.nii.gz", 2)
    volume(root / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz", 500)
    volume(root / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz", 4)
    volume(root / "derivatives" / "labels" / "sub-01" / "anat" / "sub-01_T2w_seg-manual.nii.gz", 1)
    result = organize(ws, root, "volumes", workers=1)
    rows = placed(ws, read_rows(ws.organized_path("volumes") / "unlabeled.csv"))
    assert sorted(Path(r["path"]).name for r in rows) == ["spleen_2.nii.gz", "spleen_3.nii.gz"]
    assert all("imagesTr" in r["path"] for r in rows)
    labeled = placed(ws, read_rows(ws.organized_path("volumes") / "labeled.csv"))
    assert sorted((Path(r["path"]).name, r["label"], r["label_rule"]) for r in labeled) == [
        ("BraTS2021_00000_flair.nii.gz", "tumor", "label_map"), ("imaging.nii.gz", "tumor", "label_map")]
    assert result.labeled == 2 and result.skipped == 0
    assert "5 segmentation volume(s)" in result.mask_note and "2 volume(s) labeled from them" in result.mask_note


def test_the_sequences_of_one_case_folder_are_one_patient(ws, tmp_path) -> None:
    """BraTS keeps a patient's FLAIR, T1, T1ce and T2 in a folder named after the case; each
    was its own 'patient', so one patient's FLAIR could train while their T2 was tested."""
    import nibabel as nib

    root = tmp_path / "BraTS2021_Training_Data"
    for case in range(6):
        folder = root / f"BraTS2021_{case:05d}"
        folder.mkdir(parents=True)
        for sequence in ("flair", "t1", "t1ce", "t2"):
            data = np.full((16, 16, 8), case * 10 + len(sequence), np.int16)  # no two files alike
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(folder / f"{folder.name}_{sequence}.nii.gz"))
    organize(ws, root, "brats", workers=1)
    rows = placed(ws, read_rows(ws.organized_path("brats") / "unlabeled.csv"))
    by_case: dict[str, set] = {}
    for row in rows:
        by_case.setdefault(Path(row["path"]).parent.name, set()).add((row["patient_id"], row["split"]))
    assert len(rows) == 24 and all(len(pairs) == 1 for pairs in by_case.values()), by_case
    assert len({pairs.pop()[0] for pairs in by_case.values()}) == 6


def test_detached_headers_are_items_and_their_voxel_files_read_through_them(ws, tmp_path) -> None:
    """LUNA16 keeps CT in MetaImage .mhd + .raw (names full of dots), OASIS-1 in Analyze .hdr +
    .img. The voxel files were skipped as 'not an image format', the .hdr not read at all, and
    two scans of one protocol have byte-identical headers: they must not pass for one file."""
    import nibabel as nib
    import SimpleITK as sitk

    from app.imaging import load_2d

    root = tmp_path / "detached"
    (root / "subset0").mkdir(parents=True)
    (root / "disc1").mkdir()
    for k in range(3):
        volume = np.full((12, 16, 16), -1000, np.int16)
        volume[:, 4:12, 4:12] = 30 * k
        sitk.WriteImage(sitk.GetImageFromArray(volume), str(root / "subset0" / f"1.3.6.1.4.1.14519.5.2.1.{k}.mhd"))
    for k in range(2):
        data = np.zeros((16, 16, 8), np.int16)
        data[4:12, 4:12, 2:6] = 100 + k
        nib.save(nib.AnalyzeImage(data, np.eye(4)), str(root / "disc1" / f"scan{k}_anon.hdr"))
    assert (root / "disc1" / "scan0_anon.hdr").read_bytes() == (root / "disc1" / "scan1_anon.hdr").read_bytes()
    (root / "subset0" / "1.3.6.1.4.1.14519.5.2.1.2.raw").unlink()  # a header without its voxels
    result = organize(ws, root, "detached", workers=1)
    rows = placed(ws, read_rows(ws.organized_path("detached") / "unlabeled.csv"))
    assert sorted(Path(r["path"]).name for r in rows) == [
        "1.3.6.1.4.1.14519.5.2.1.0.mhd", "1.3.6.1.4.1.14519.5.2.1.1.mhd", "scan0_anon.hdr", "scan1_anon.hdr"]
    report = json.loads((ws.organized_path("detached") / "scan_report.json").read_text())
    reasons = skipped_places(ws, report, root)
    assert list(reasons) == ["subset0/1.3.6.1.4.1.14519.5.2.1.2.mhd"] and "missing" in reasons[
        "subset0/1.3.6.1.4.1.14519.5.2.1.2.mhd"]
    assert result.duplicates == 0 and len({r["patient_id"] for r in rows}) == 4, "alike headers, different scans"
    for row in rows:
        assert load_2d(Path(row["path"]), "volume").std() > 0


def test_a_folder_without_images_is_a_clear_error(ws, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="No readable image"):
        organize(ws, tmp_path / "empty", "nothing")
    with pytest.raises(DatasetError, match="neither a folder nor a collected dataset"):
        organize(ws, tmp_path / "absent", "nothing")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not an image")
    (tmp_path / "notes" / "b.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"2 file\(s\) skipped: 1 (empty file|not an image[^;]*); 1 (empty file|not an image)"):
        organize(ws, tmp_path / "notes", "nothing")


# -- real data in ../shared/data -------------------------------------------------------------
@pytest.fixture(scope="module")
def real_rows(tmp_path_factory) -> dict[str, dict]:
    from app.workspace import Workspace

    data = shared("dicom")
    ws = Workspace.open(tmp_path_factory.mktemp("real"))
    organize(ws, data.parent, "real", workers=2)
    rows = _all_rows(ws, "real")
    return {Path(r["path"]).name: r for r in rows}


@pytest.mark.parametrize(
    "name, modality, region",
    [
        ("A046441_19010101-23.dcm", "CT", "chest"),  # BodyPartExamined CHEST
        ("A048383_19001231-30.dcm", "CT", "chest"),  # region only in the descriptions
        ("A002304_19010112-135.dcm", "CT", "chest"),  # "CT CHEST PULMONARY ANGIO"
        ("gdcm-CR-MONO1-10-chest.dcm", "XR", "chest"),  # CR -> XR
        ("osirix-goudurix.dcm", "CT", "cardiac"),  # BodyPartExamined HEART
        ("00000001_000.png", "XR", "chest"),  # NIH ChestX-ray14 name in a chest folder
    ],
)
def test_real_files_get_the_right_modality_and_region(real_rows, name, modality, region) -> None:
    row = real_rows[name]
    assert (row["modality"], row["region"]) == (modality, region)


def test_real_series_are_grouped(real_rows) -> None:
    by_count = {r["n_files"] for r in real_rows.values() if "mr_brain_t1w_series" in r["path"]}
    assert by_count == {96}, "the 96-slice MR series is one item"
    mr = [r for r in real_rows.values() if "mr_brain_t1w_series" in r["path"]][0]
    assert (mr["modality"], mr["region"]) == ("MR", "brain")
    mixed = [r for r in real_rows.values() if "mixed_cta_cr_mr" in r["path"]]
    assert sorted(r["n_files"] for r in mixed) == [1, 1, 2, 6], "CTA pair, CR, CTA single, 6 MR slices"
    jpeg = [r for r in real_rows.values() if "ct_head_jpeg" in r["path"]][0]
    assert (jpeg["modality"], jpeg["region"], jpeg["n_files"]) == ("CT", "brain", 2)


def test_a_corpus_of_broken_files_is_skipped_and_nothing_else_lost(ws, demo_ws, tmp_path) -> None:
    import os
    import shutil

    from tests.app.organize.layouts import png

    tree = tmp_path / "broken"
    png(tree / "NORMAL" / "ok.png")
    png(tree / "NORMAL" / "whole.png")
    data = (tree / "NORMAL" / "whole.png").read_bytes()
    (tree / "NORMAL" / "cut.png").write_bytes(data[: len(data) // 2])
    (tree / "NORMAL" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 50)
    series = sorted((demo_ws.raw_dir / "demo" / "demo" / "CT_HEAD" / "normal" / "S0001").iterdir())
    shutil.copy(series[0], tree / "ct_ok.dcm")
    raw = series[1].read_bytes()
    (tree / "ct_cut.dcm").write_bytes(raw[: len(raw) - 1000])
    (tree / "noext_garbage").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(64))
    (tree / "brain.nii").write_bytes(b"not a nifti at all" * 30)
    (tree / "zero.dcm").write_bytes(b"")
    (tree / "link.png").symlink_to(tree / "gone.png")
    name = os.fsdecode(b"caf\xe9_scan.png")  # not UTF-8 on disk
    png(tree / "NORMAL" / name)
    result = organize(ws, tree, "broken", workers=2)
    report = json.loads((ws.organized_path("broken") / "scan_report.json").read_text())
    reasons = skipped_places(ws, report, tree)
    assert "truncated DICOM" in reasons["ct_cut.dcm"]
    assert "unreadable" in reasons["NORMAL/cut.png"] and "truncated JPEG" in reasons["NORMAL/cut.jpg"]
    assert reasons["noext_garbage"].startswith("unreadable") and reasons["brain.nii"].startswith("unreadable")
    assert reasons["zero.dcm"] == "empty file" and reasons["link.png"] == "broken symbolic link"
    assert result.items == 4 and result.skipped == 7  # ok.png, whole.png, the odd name, ct_ok.dcm
    assert result.skip_reasons["unreadable"] == 5 and result.skip_reasons["empty file"] == 1
    assert result.duplicates == 1, "ok.png and whole.png (and the odd name) hold the same bytes"
    rows = _all_rows(ws, "broken")
    odd = next(r for r in rows if "_scan.png" in r["path"])
    from app.imaging import load_2d

    assert load_2d(ws.resolve(odd["path"]), odd["kind"]).shape == (16, 16), "the odd name still loads"


def _dcmread_values(path: Path) -> dict[str, str | None]:
    import pydicom

    from app.organize.scan import READ_TAGS

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out = {}
    for keyword in READ_TAGS:
        value = ds.get(keyword)
        if value is None or value == "":
            out[keyword] = None
        elif keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
            out[keyword] = [float(v) for v in value]
        elif isinstance(value, pydicom.multival.MultiValue):  # ImageType: as stored, values split by a backslash
            out[keyword] = "\\".join(str(v) for v in value)
        else:
            out[keyword] = str(value).strip()
    return out


def test_the_fast_header_reader_agrees_with_dcmread_on_every_real_file(tmp_path) -> None:
    """The scanner walks elements itself for speed; it must read what pydicom reads."""
    import io

    from app.organize import scan

    files = sorted(p for p in shared("dicom").rglob("*") if p.is_file() and scan.file_format(p) == "dicom")
    assert len(files) > 100
    for path in files:
        data = path.read_bytes()
        scan._read_dicom(io.BytesIO(data), len(data))  # fills the tag table
        handle = io.BytesIO(data)
        raw, _ = scan._raw_elements(handle) or scan._raw_elements_dcmread(handle)
        ours = {k: scan._text(raw, k) for k in scan.READ_TAGS}
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
            ours[keyword] = scan._numbers(ours[keyword])
        assert ours == _dcmread_values(path), path.name


def test_files_without_a_preamble_are_read_by_the_dcmread_fallback(tmp_path) -> None:
    import io

    import pydicom

    from app.organize import scan

    source = next(p for p in sorted(shared("dicom").rglob("*.dcm")) if "mr_brain" in str(p))
    ds = pydicom.dcmread(source)
    bare = tmp_path / "no_preamble"
    del ds.file_meta  # a bare data set, as old scanners wrote: no preamble, no meta group
    ds.preamble = None
    ds.save_as(bare, implicit_vr=True, little_endian=True)
    data = bare.read_bytes()
    assert data[128:132] != b"DICM"
    assert scan._raw_elements(io.BytesIO(data)) is None
    header, patient, series, position, _ = scan._read_dicom(io.BytesIO(data), len(data))
    assert header["Modality"] == "MR" and series == str(ds.SeriesInstanceUID) and position is not None


def test_the_same_files_and_seed_give_the_same_splits_in_any_workspace(demo_ws, tmp_path) -> None:
    from app.workspace import Workspace

    other = Workspace.open(tmp_path / "other")  # another secret key, other pseudonyms
    organize(other, demo_ws.raw_dir / "demo" / "demo", "again", workers=1)
    first = {Path(r["path"]).name + r["sha256"]: r["split"] for r in _all_rows(demo_ws, "demo")}
    second = {Path(r["path"]).name + r["sha256"]: r["split"] for r in _all_rows(other, "again")}
    assert first == second


def test_minc2_is_a_volume_and_minc1_cifti_and_surfaces_say_what_they_are(ws, tmp_path) -> None:
    """nibabel's own test files: a MINC2 volume is read (ITK reads it); a MINC1 one, a CIFTI
    connectivity matrix (a .nii that is no image: it was organized as an MR volume), a GIFTI
    surface and a tractography file are skipped, each with what it is."""
    import shutil

    import nibabel

    data = Path(nibabel.__file__).parent / "tests" / "data"
    if not (data / "small.mnc").exists():
        pytest.skip("nibabel's test data is not installed")
    root = tmp_path / "neuro"
    root.mkdir()
    for name in ("small.mnc", "minc1_1_scale.mnc", "row_major.dconn.nii", "simple.trk", "anatomical.nii"):
        shutil.copy(data / name, root / name)
    (root / "lh.white.surf.gii").write_bytes(b"<?xml version='1.0'?><GIFTI></GIFTI>")
    result = organize(ws, root, "neuro", workers=1)
    assert result.items == 2
    report = json.loads((ws.organized_path("neuro") / "scan_report.json").read_text())
    reasons = sorted(s["reason"] for s in report["skipped"])
    assert any(r.startswith("a CIFTI file") for r in reasons)
    assert any("a MINC1 file" in r for r in reasons)
    assert "a GIFTI surface, not an image" in reasons and "a tractography file (streamlines), not an image" in reasons


def test_luna16_lung_masks_and_kits23_instance_outlines_are_no_scans(ws, tmp_path) -> None:
    """LUNA16's seg-lungs-LUNA16/ holds lung masks under the scans' own names, and KiTS23 keeps
    every annotator's outline of every instance in instances/: both were organized as CT scans."""
    import nibabel as nib

    from app.imaging import simpleitk

    sitk = simpleitk()
    root = tmp_path / "public"
    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860"
    for folder, value in (("subset0", 300), ("seg-lungs-LUNA16", 3)):
        (root / "luna16" / folder).mkdir(parents=True)
        image = sitk.GetImageFromArray(np.full((8, 16, 16), value, np.int16))
        sitk.WriteImage(image, str(root / "luna16" / folder / f"{uid}.mhd"))

    def volume(path: Path, data: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))

    case = root / "kits23" / "dataset" / "case_00000"
    scan = np.full((20, 20, 10), 40, np.int16)
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[5:15, 5:15, 3:7], labels[8:11, 8:11, 4:6] = 1, 2  # kidney, tumour
    volume(case / "imaging.nii.gz", scan)
    volume(case / "segmentation.nii.gz", labels)
    volume(case / "instances" / "kidney_instance-1_annotation-1.nii.gz", (labels == 1).astype(np.uint8))
    volume(case / "instances" / "tumor_instance-1_annotation-2.nii.gz", (labels == 2).astype(np.uint8))
    result = organize(ws, root, "public", workers=1)
    out = ws.organized_path("public")
    rows = placed(ws, read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv"))
    assert sorted(Path(r["path"]).name for r in rows) == [f"{uid}.mhd", "imaging.nii.gz"]
    assert {Path(r["path"]).name: r["label"] for r in rows}["imaging.nii.gz"] == "tumor"
    assert result.skipped == 0
