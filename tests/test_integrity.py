"""Adversarial cases against the workspace: names that try to escape, bad state, bad input.

Every case asserts the documented exit code, one clear message and no traceback, that a
sentinel folder beside the workspace is byte-identical afterwards, and that what the
workspace held before is still there.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from app.workspace import Workspace
from tests.conftest import ROOT, small_dicom


def tree_hash(folder: Path) -> str:
    """One hash of every file's relative path and bytes under ``folder`` (and of the folder list)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode("utf-8", "surrogateescape"))
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def make_images(folder: Path, per_class: int = 8, classes: tuple[str, ...] = ("normal", "pneumonia")) -> Path:
    """A tiny labeled folder: one class subfolder each, small PNGs that differ."""
    rng = np.random.default_rng(0)
    for label in classes:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            pixels = (rng.random((24, 24)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / label / f"img{k:02d}.png")
    return folder


@pytest.fixture
def place(tmp_path: Path):
    """A workspace holding one organized dataset, a source folder, and a sentinel folder beside them."""
    sentinel = tmp_path / "sentinel"
    (sentinel / "inner").mkdir(parents=True)
    (sentinel / "keep.txt").write_text("do not touch")
    (sentinel / "inner" / "metadata.json").write_text('{"mine": true}')
    source = make_images(tmp_path / "source")
    ws = Workspace.open(tmp_path / "ws")
    assert main.main(["organize", str(source), "--name", "first", "--workspace", str(ws.root)]) == 0
    return ws, source, sentinel


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main.main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def state_of(ws: Workspace) -> str:
    return tree_hash(ws.organized_path("first")) + json.dumps(ws.load_index()["first"].get("organized_path"))


BAD_NAMES = [
    "..", "../..", "../sentinel", "../../sentinel", "../../../sentinel", "a/b", "ct/head", "a\\b", ".hidden",
    "x" * 200, "名前", "raw", "cache", "name.partial", "with space", "_under", "",
]


def _bad_commands(name: str, source: Path, sentinel: Path) -> list[list[str]]:
    return [
        ["collect", "local", str(source), "--name", name, "--copy"],
        ["organize", str(source), "--name", name],
        ["train", "--dataset", "first", "--phase", "supervised", "--run-name", name],
        ["evaluate", name],
        ["export", name],
        ["workflow", "--dataset", name, "--yes", "--fast"],
        ["dataset", "review", name],
        ["dataset", "merge", "first", "first", "--name", name],
    ]


@pytest.mark.parametrize("name", BAD_NAMES + ["<sentinel>", "<tmp>"])
def test_a_name_can_never_reach_outside_the_workspace(capsys, place, name: str) -> None:
    ws, source, sentinel = place
    if name == "<sentinel>":
        name = str(sentinel)
    elif name == "<tmp>":
        name = str(sentinel.parent)
    before_sentinel, before_state = tree_hash(sentinel), state_of(ws)
    capsys.readouterr()
    for argv in _bad_commands(name, source, sentinel):
        code, text = run(capsys, *argv, "--workspace", str(ws.root))
        assert code == 2, (argv, text)
        assert "Traceback" not in text
        assert "cannot be a" in text and "Try '" in text, (argv, text)
        assert len(text.strip().splitlines()) == 1, (argv, text)
    assert tree_hash(sentinel) == before_sentinel
    assert state_of(ws) == before_state


def test_every_suggested_name_is_valid() -> None:
    from app.names import problem_with, suggest_name

    for name in BAD_NAMES + ["/abs/path", "Doe^John_19600101", "...", "con", "a.tmp"]:
        assert problem_with(suggest_name(name)) is None, name


def test_a_path_built_inside_the_workspace_cannot_follow_a_link_out(place) -> None:
    from core.errors import WorkspaceError

    ws, _, sentinel = place
    (ws.organized_dir / "linked").symlink_to(sentinel, target_is_directory=True)
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.organized_path("linked")


def test_replacing_a_dataset_that_runs_were_trained_on_needs_replace(capsys, place) -> None:
    ws, source, _ = place
    run_dir = ws.run_dir("r1")
    run_dir.mkdir(parents=True)
    from app.state import Kind, write_state

    write_state(run_dir / "metadata.json", Kind.RUN_METADATA,
                {"run": "r1", "phase": "supervised", "dataset": "first", "status": "complete", "config": {}})
    before = state_of(ws)
    capsys.readouterr()
    smaller = make_images(source.parent / "smaller", per_class=3)
    code, text = run(capsys, "organize", str(smaller), "--name", "first", "--workspace", str(ws.root))
    assert code == 2 and "--replace" in text and "r1" in text and "Traceback" not in text
    assert state_of(ws) == before
    code, text = run(capsys, "organize", str(smaller), "--name", "first", "--replace", "--workspace", str(ws.root))
    assert code == 0, text
    assert ws.dataset_metadata("first")["items"] == 6


def test_a_new_dataset_version_is_swapped_in_whole_and_leaves_no_temporary_files(place) -> None:
    from app.organize.organizer import organize

    ws, source, _ = place
    version = ws.dataset_metadata("first")["version"]
    organize(ws, source, "first")
    assert ws.dataset_metadata("first")["version"] == version  # same rows, same version
    leftovers = [p for p in ws.root.rglob(".*") if p.name not in (".pseudonym_key",)]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("case", ["entry_number", "run_without_config", "history_number", "index_list"])
def test_valid_json_of_the_wrong_shape_is_named_not_a_traceback(capsys, place, case: str) -> None:
    ws, _, sentinel = place
    if case in ("entry_number", "index_list"):
        path = ws.index_path
        doc = json.loads(path.read_text())
        doc["datasets"] = {"first": 5} if case == "entry_number" else [1, 2]
        path.write_text(json.dumps(doc))
        key = "datasets.first" if case == "entry_number" else "datasets"
    else:
        run_dir = ws.runs_dir / "bad"
        run_dir.mkdir()
        doc = {"kind": "run_metadata", "schema_version": 1, "run": "bad", "phase": "supervised",
               "dataset": "first", "status": "complete", "config": {}}
        if case == "run_without_config":
            del doc["config"]
            key = "config"
        else:
            doc["history"] = 5
            key = "history"
        path = run_dir / "metadata.json"
        path.write_text(json.dumps(doc))
    capsys.readouterr()
    code, text = run(capsys, "status", "--workspace", str(ws.root))
    assert code == 2 and "Traceback" not in text
    assert str(path) in text and f"'{key}'" in text


@pytest.mark.parametrize("damage", [("extra", {"model": 5}), ("config", "text"), ("extra", {"temperature": "hot"}),
                                    ("classes", [1, 2]), ("model_state", {"w": "not a tensor"})])
def test_a_checkpoint_of_plain_data_but_the_wrong_structure_is_refused_clearly(tmp_path: Path, damage) -> None:
    import torch

    from app.checkpoints import load_checkpoint, rebuild_phase
    from core.errors import TrainingError
    from models import create_phase

    phase = create_phase("supervised", ["normal", "pneumonia"], image_size=32, pretrained=False)
    payload = {"phase": "supervised", "classes": phase.classes, "model_args": phase.model_args(),
               "config": phase.config_dict(), "model_state": phase.model.state_dict(), "epoch": 1,
               "best_metric": 0.5, "extra": phase.extra()}
    key, value = damage
    payload[key] = value
    path = tmp_path / "best.pt"
    torch.save(payload, path)
    with pytest.raises(TrainingError, match="damaged|not written by this tool|retrain"):
        rebuild_phase(load_checkpoint(path))


def test_a_label_table_with_a_short_row_is_read(tmp_path: Path) -> None:
    from app.organize.tables import read_label_table

    table = tmp_path / "labels.csv"
    table.write_text("image,label,patient\na.png,normal,p1\nb.png\nc.png,tumor\n")
    read = read_label_table(table)
    assert read is not None and read.labels == {"a.png": "normal", "c.png": "tumor"}


def test_declared_sizes_are_checked_before_pixels_are_decoded(tmp_path: Path) -> None:
    from app.organize.scan import scan_file

    root = tmp_path / "in"
    root.mkdir()
    good = small_dicom(root / "good.dcm", 16, 16, bytes(16 * 16 * 2))
    wrong = small_dicom(root / "wrong.dcm", 64, 64, bytes(16 * 16 * 2))  # the header claims 4x the data there
    assert type(scan_file(good, root, b"k")[0]).__name__ == "FileRecord"
    skipped = scan_file(wrong, root, b"k")[0]
    assert type(skipped).__name__ == "Skipped" and "header declares" in skipped.reason

    # A NIfTI whose header claims 1024^3 voxels, and a PNG that claims 12000 x 12000 pixels.
    import nibabel as nib

    from core.errors import DatasetError
    from app.imaging import load_2d

    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    big = root / "big.nii"
    big.write_bytes(header.binaryblock + bytes(4) + bytes(64))
    with pytest.raises(DatasetError, match="over the limit"):
        load_2d(big, "volume")
    assert type(scan_file(big, root, b"k")[0]).__name__ == "Skipped"
    wide = root / "wide.png"
    Image.new("L", (12000, 12000)).save(wide, optimize=True)
    with pytest.raises(DatasetError, match="over the limit"):
        load_2d(wide, "image2d")



@pytest.mark.parametrize("name, why", [
    ("MR_small_padded.dcm", "128 bytes more pixel data than declared: padding, which readers leave aside"),
    ("SC_rgb_jpeg.dcm", "written implicit under an explicit transfer syntax: the check misread the length"),
])
def test_pixel_data_that_readers_decode_is_not_refused(tmp_path: Path, name: str, why: str) -> None:
    """Both of pydicom's own test files decode; the size check refused them as unreadable."""
    import shutil

    from pydicom.data import get_testdata_file

    from app.imaging import read_dicom_2d
    from app.organize.scan import scan_file

    root = tmp_path / "in"
    root.mkdir()
    copy = Path(shutil.copy(get_testdata_file(name), root / name))
    found = scan_file(copy, root, b"k")[0]
    assert type(found).__name__ == "FileRecord", (why, getattr(found, "reason", ""))
    assert read_dicom_2d(copy).ndim == 2


def test_subsampled_colour_ultrasound_is_read_and_its_declared_size_still_checked(tmp_path: Path) -> None:
    """YBR_FULL_422 stores two chroma samples for every two pixels: 2 bytes a pixel, not 3. A real
    elbow ultrasound of dcm4che's test data in this form was once skipped as 'unreadable'."""
    from app.imaging import read_dicom_2d
    from app.organize.scan import scan_file

    root = tmp_path / "in"
    root.mkdir()
    colour = dict(Modality="US", SamplesPerPixel=3, PhotometricInterpretation="YBR_FULL_422", BitsAllocated=8,
                  BitsStored=8, HighBit=7, PlanarConfiguration=0)
    files = {name: small_dicom(root / name, 8, 16, pixel_bytes, **colour)
             for name, pixel_bytes in (("whole.dcm", bytes(range(128)) * 2), ("short.dcm", bytes(128)))}
    record = scan_file(files["whole.dcm"], root, b"k")[0]
    assert type(record).__name__ == "FileRecord" and record.header["Modality"] == "US"
    assert read_dicom_2d(files["whole.dcm"], colour=True).shape == (8, 16, 3)
    skipped = scan_file(files["short.dcm"], root, b"k")[0]  # half of what 8 x 16 pixels need
    assert type(skipped).__name__ == "Skipped" and "header declares 256" in skipped.reason


def test_collect_copy_of_an_unreadable_file_leaves_nothing_behind(capsys, place) -> None:
    ws, source, _ = place
    blocked = source / "normal" / "img00.png"
    if os.geteuid() == 0:
        # root reads any file: stand in an unreadable one by making the copy fail the same way.
        import shutil

        real_copy = shutil.copy2

        def refusing(src, dst, *a, **k):
            if Path(src) == blocked:
                raise PermissionError(13, "Permission denied", str(src))
            return real_copy(src, dst, *a, **k)

        shutil.copy2 = refusing
    else:
        blocked.chmod(0)
    capsys.readouterr()
    try:
        code, text = run(capsys, "collect", "local", str(source), "--name", "copied", "--copy",
                         "--workspace", str(ws.root))
    finally:
        if os.geteuid() == 0:
            shutil.copy2 = real_copy
        else:
            blocked.chmod(0o644)
    assert code == 2 and "permission denied" in text and "nothing was copied" in text
    assert not (ws.raw_dir / "local").exists() or list((ws.raw_dir / "local").iterdir()) == []
    assert "copied" not in ws.load_index()


def test_zip_members_that_are_special_files_or_damaged_are_refused(tmp_path: Path) -> None:
    import zipfile

    from app.collectors.archives import safe_extract
    from core.errors import CollectError

    fifo = tmp_path / "fifo.zip"
    with zipfile.ZipFile(fifo, "w") as zf:
        info = zipfile.ZipInfo("pipe")
        info.external_attr = (0o010644) << 16  # a FIFO
        zf.writestr(info, b"")
    with pytest.raises(CollectError, match="special file"):
        safe_extract(fifo, tmp_path / "out1")
    damaged = tmp_path / "crc.zip"
    with zipfile.ZipFile(damaged, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"hello world " * 100)
    data = bytearray(damaged.read_bytes())
    data[data.index(b"hello") + 3] ^= 0xFF  # flip a byte of the stored content: the CRC no longer matches
    damaged.write_bytes(bytes(data))
    with pytest.raises(CollectError, match="damaged"):
        safe_extract(damaged, tmp_path / "out2")
    clash = tmp_path / "clash.zip"
    with zipfile.ZipFile(clash, "w") as zf:
        zf.writestr("a", b"file")
        zf.writestr("a/b", b"inside a file")
    with pytest.raises(CollectError):
        safe_extract(clash, tmp_path / "out3")
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_prediction_files_are_valid_text_whatever_the_file_names() -> None:
    from app.predict import as_text

    name = os.fsdecode(b"scan_\xff\xfe.png")
    assert as_text(name).encode("utf-8") == "scan_\ufffd\ufffd.png".encode("utf-8")


def test_an_unusable_workspace_is_one_line(capsys, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for where in ("/proc/medanomaly-x", str(tmp_path / "file")):
        code, text = run(capsys, "status", "--workspace", where)
        assert code == 2 and "Traceback" not in text and len(text.strip().splitlines()) == 1, text


def test_an_unexpected_error_prints_one_line_and_the_log_path(capsys, place, monkeypatch) -> None:
    ws, _, _ = place

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("app.status.workspace_status", broken)
    capsys.readouterr()
    code, text = run(capsys, "status", "--workspace", str(ws.root))
    assert code == 1 and "Traceback" not in text and "boom" in text
    assert "workbench.log" in text and "--debug" in text
    assert "Traceback" in (ws.logs_dir / "workbench.log").read_text()


def test_status_answers_on_a_workspace_it_cannot_write(capsys, place, monkeypatch) -> None:
    import logging

    ws, _, _ = place

    def no_log(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(logging, "FileHandler", no_log)
    monkeypatch.setattr(Workspace, "writable", property(lambda self: False))
    code, text = run(capsys, "status", "--workspace", str(ws.root))
    assert code == 0 and "first" in text


def _python(code: str, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_eight_processes_opening_a_new_workspace_make_one_key(tmp_path: Path) -> None:
    where = tmp_path / "new"
    procs = [_python(f"""
        from app.workspace import Workspace
        print(Workspace.open({str(where)!r}).secret().hex())
    """) for _ in range(8)]
    results = [(p.wait(timeout=120), p.stdout.read().strip(), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _, _ in results), results
    assert len({key for _, key, _ in results}) == 1
    assert (where / "data" / ".pseudonym_key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (where / "data").iterdir() if p.name.startswith(".")] == [".pseudonym_key"]


def test_eight_organizes_at_once_all_reach_the_index(tmp_path: Path) -> None:
    source = make_images(tmp_path / "source", per_class=4)
    where = tmp_path / "ws"
    Workspace.open(where)
    procs = [_python(f"""
        import main, sys
        sys.exit(main.main(["organize", {str(source)!r}, "--name", "set{k}", "--workers", "1",
                            "--workspace", {str(where)!r}]))
    """) for k in range(8)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    index = Workspace.open(where).load_index()
    assert {f"set{k}" for k in range(8)} <= set(index)
    assert all(index[f"set{k}"].get("organized_path") for k in range(8))


def test_a_second_training_of_the_same_run_is_refused_clearly(place) -> None:
    ws, _, _ = place
    with ws.lock("run", "dup"):  # as a first training would hold it
        proc = _python(f"""
            import main, sys
            sys.exit(main.main(["train", "--dataset", "first", "--phase", "supervised", "--run-name", "dup",
                                "--epochs", "1", "--workspace", {str(ws.root)!r}]))
        """)
        code = proc.wait(timeout=300)
        err = proc.stderr.read()
    assert code == 2, err
    assert "Busy: run 'dup' is being written by process" in err and str(os.getpid()) in err
    assert "Traceback" not in err
    assert not ws.run_dir("dup").exists()


def test_a_kill_leaves_no_lock_and_its_temporary_files_are_swept(tmp_path: Path) -> None:
    where = tmp_path / "ws"
    ws = Workspace.open(where)
    proc = _python(f"""
        import os, time
        from app.workspace import Workspace
        from app.atomic import temp_sibling
        ws = Workspace.open({str(where)!r})
        with ws.lock("dataset", "held"):
            left = temp_sibling(ws.organized_dir / "held", "new")
            left.mkdir()
            (left / "labeled.csv").write_text("half")
            print("ready", flush=True)
            time.sleep(60)
    """)
    assert proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait()
    with ws.lock("dataset", "held"):  # the kernel released it with the process
        pass
    Workspace.open(where)  # the startup sweep
    assert [p.name for p in ws.organized_dir.iterdir()] == []


def test_a_training_that_fails_is_never_left_marked_running(capsys, place) -> None:
    ws, source, _ = place
    lonely = make_images(source.parent / "lonely", per_class=2, classes=("normal",))
    make_images(lonely / "more", per_class=1, classes=("tumor",))
    assert main.main(["organize", str(lonely), "--name", "tiny", "--workspace", str(ws.root)]) == 0
    capsys.readouterr()
    code, text = run(capsys, "train", "--dataset", "tiny", "--phase", "supervised", "--run-name", "t1",
                     "--epochs", "1", "--workspace", str(ws.root))
    assert code == 2 and "Traceback" not in text and ("validation split" in text or "train split" in text), text
    status = ws.run_metadata("t1")["status"] if (ws.run_dir("t1") / "metadata.json").exists() else "none"
    assert status != "running"


def test_organize_killed_at_seeded_points_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    """A small sample of benchmarks/crash_consistency.py (the full harness kills all four steps 20 times)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import crash_consistency

    out = tmp_path / "crash.json"
    assert crash_consistency.main(["--points", "3", "--ops", "organize", "--per-class", "60", "--seed", "1",
                                   "--json", str(out)]) == 0
    found = json.loads(out.read_text())
    assert found["kill_points"] == 3
    assert (found["inconsistent_states"], found["orphan_processes"], found["leftover_temp_files"]) == (0, 0, 0), \
        found["findings"]


def test_a_folder_an_older_version_named_freely_is_left_out_with_a_way_back(capsys, place, caplog) -> None:
    ws, _, _ = place
    legacy = ws.organized_dir / "my data"
    legacy.mkdir()
    (legacy / "metadata.json").write_text("{}")
    assert ws.organized_datasets() == ["first"]
    assert "Rename the folder to 'my_data'" in caplog.text
    code, text = run(capsys, "status", "--workspace", str(ws.root))
    assert code == 0 and "first" in text
