"""Backup and restore: a round trip equal by hashes, and every kind of bad archive refused
before anything is replaced."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from app import backup as backups
from app.workspace import Workspace
from core.errors import BackupError
from tests.conftest import copy_of_demo


@pytest.fixture
def full_ws(demo_ws: Workspace, tmp_path: Path) -> Workspace:
    """A copy of the demo workspace with a run, a bundle, a workflow and settings of its own."""
    ws = copy_of_demo(demo_ws, tmp_path / "ws")
    run = ws.run_dir("demo-run")
    run.mkdir(parents=True)
    (run / "metadata.json").write_text(json.dumps({"run": "demo-run", "status": "complete"}))
    (run / "best.pt").write_bytes(bytes(range(256)) * 64)
    ws.export_dir("demo-run").mkdir(parents=True)
    (ws.export_dir("demo-run") / "model.onnx").write_bytes(b"\x08\x01" * 500)
    (ws.data_dir / "workflows").mkdir(exist_ok=True)
    (ws.data_dir / "workflows" / "demo.json").write_text("{}")
    ws.settings_path.write_text(json.dumps({"theme": "plain"}))
    ws.secret()  # the pseudonym key
    return ws


def _members(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


def _rewrite(archive: Path, change) -> Path:
    """A copy of ``archive`` with each member passed through ``change(info, data) -> (info, data) | None``."""
    out = archive.with_name("medanomaly-backup-changed.tar")
    with tarfile.open(archive) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for info in src:
            data = src.extractfile(info).read() if info.isfile() else b""
            kept = change(info, data)
            if kept is None:
                continue
            info, data = kept
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out


def test_a_damaged_workspace_is_restored_equal_by_hashes_and_the_damage_is_kept_aside(full_ws: Workspace) -> None:
    seen: list[tuple[int, int | None]] = []
    made = backups.backup(full_ws, progress=lambda task, done, total, **_: seen.append((done, total)))
    before = backups.tree_hashes(full_ws)  # the signing key included: the backup made it, to sign with
    assert made.archive.parent == full_ws.root / "backups" and made.archive.stat().st_mode & 0o077 == 0
    assert seen[-1] == (made.bytes, made.bytes) and made.files == len(before)
    assert {"checkpoints", "exports", "data/organized", "data/.pseudonym_key"} <= set(made.entries)
    # damage: a checkpoint deleted, a dataset file changed, a run that was not there, the key broken
    (full_ws.run_dir("demo-run") / "best.pt").unlink()
    [some_file] = sorted(p for p in full_ws.organized_path("demo").rglob("*") if p.is_file())[:1]
    some_file.write_bytes(b"garbage")
    full_ws.run_dir("later-run").mkdir()
    (full_ws.run_dir("later-run") / "metadata.json").write_text("{}")
    (full_ws.data_dir / ".pseudonym_key").write_text("not hex")
    assert backups.tree_hashes(full_ws) != before

    done = backups.restore(full_ws, made.archive)

    assert backups.tree_hashes(full_ws) == before
    assert done.replaced is not None and (done.replaced / "checkpoints" / "later-run" / "metadata.json").exists()
    assert (done.replaced / "data" / ".pseudonym_key").read_text() == "not hex"
    assert (full_ws.data_dir / ".pseudonym_key").stat().st_mode & 0o077 == 0
    assert not list(full_ws.root.glob(".restore-*"))
    full_ws.secret()  # the restored key reads


def test_a_backup_without_raw_holds_no_raw_file_and_no_map_to_them(full_ws: Workspace) -> None:
    names = _members(backups.backup(full_ws).archive)
    assert not [n for n in names if n.startswith("data/raw") or n == "data/private/items.json"]
    raw_names = {p.name for p in full_ws.raw_dir.rglob("*") if p.is_file()}
    assert not raw_names & {Path(n).name for n in names}
    with_raw = _members(backups.backup(full_ws, raw=True).archive)
    assert "data/private/items.json" in with_raw and any(n.startswith("data/raw/") for n in with_raw)
    assert [b["name"] for b in backups.list_backups(full_ws)][0].startswith("medanomaly-backup-")


def _workspace_unchanged(ws: Workspace, archive: Path) -> None:
    before = backups.tree_hashes(ws)
    with pytest.raises(BackupError) as refused:
        backups.restore(ws, archive)
    assert backups.tree_hashes(ws) == before and not list(ws.root.glob(".restore-*"))
    assert not list((ws.root / "backups").glob("replaced-*"))
    return str(refused.value)


def test_an_archive_with_a_changed_file_is_refused_before_anything_is_replaced(full_ws: Workspace) -> None:
    made = backups.backup(full_ws)
    (full_ws.run_dir("demo-run") / "best.pt").write_bytes(b"changed since")  # the state the refusal must keep
    tampered = _rewrite(made.archive, lambda info, data: (info, data[:-1] + b"X")
                        if info.name == "checkpoints/demo-run/best.pt" else (info, data))
    message = _workspace_unchanged(full_ws, tampered)
    assert "checkpoints/demo-run/best.pt" in message and "SHA-256" in message


def test_a_manifest_rewritten_to_match_a_change_fails_its_signature(full_ws: Workspace) -> None:
    import hashlib

    made = backups.backup(full_ws)
    new = b"swapped model"

    def change(info: tarfile.TarInfo, data: bytes):
        if info.name == "checkpoints/demo-run/best.pt":
            return info, new
        if info.name == backups.MANIFEST:
            manifest = json.loads(data)
            manifest["files"]["checkpoints/demo-run/best.pt"] = {"size": len(new),
                                                                 "sha256": hashlib.sha256(new).hexdigest()}
            return info, json.dumps(manifest).encode()
        return info, data

    assert "signature" in _workspace_unchanged(full_ws, _rewrite(made.archive, change))


@pytest.mark.parametrize("bad", ["../outside.txt", "/etc/evil", "run.sh", "data/raw/x.dcm", "link", "extra"])
def test_members_that_leave_the_workspace_or_the_manifest_are_refused(full_ws: Workspace, bad: str) -> None:
    made = backups.backup(full_ws)
    with tarfile.open(made.archive) as src:
        members = [(info, src.extractfile(info).read() if info.isfile() else b"") for info in src]
    out = made.archive.with_name("medanomaly-backup-bad.tar")
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        extra = tarfile.TarInfo("checkpoints/demo-run/extra.pt" if bad == "extra" else bad)
        if bad == "link":
            extra = tarfile.TarInfo("checkpoints/demo-run/link")
            extra.type, extra.linkname = tarfile.SYMTYPE, "/etc/passwd"
            dst.addfile(extra)
        else:
            extra.size = 3
            dst.addfile(extra, io.BytesIO(b"bad"))
        for info, data in members:
            dst.addfile(info, io.BytesIO(data) if info.isfile() else None)
    message = _workspace_unchanged(full_ws, out)
    assert "Refused" in message
    assert not (full_ws.root.parent / "outside.txt").exists()


def test_a_cut_short_or_foreign_archive_is_refused(full_ws: Workspace, tmp_path: Path) -> None:
    made = backups.backup(full_ws)
    cut = made.archive.with_name("medanomaly-backup-cut.tar")
    cut.write_bytes(made.archive.read_bytes()[: made.archive.stat().st_size // 2])
    assert "not a readable backup" in _workspace_unchanged(full_ws, cut)
    missing = _rewrite(made.archive, lambda info, data: None if info.name.endswith("best.pt") else (info, data))
    assert "signature" in _workspace_unchanged(full_ws, missing) or "lacks" in _workspace_unchanged(full_ws, missing)
    other = Workspace.open(tmp_path / "other")
    foreign = backups.backup(other).archive
    assert "does not trust" in _workspace_unchanged(full_ws, foreign)
    # an empty workspace takes any well-formed, intact backup (it has no key to compare)
    fresh = Workspace.open(tmp_path / "fresh")
    backups.restore(fresh, made.archive)
    assert backups.tree_hashes(fresh) == backups.tree_hashes(full_ws)


def test_a_backup_is_refused_while_another_process_writes_a_run(full_ws: Workspace) -> None:
    with full_ws.lock("run", "demo-run"):
        # another process holding the lock is what matters; this one holding it is re-entrant, so
        # the check goes through a child process
        import subprocess
        import sys

        code = ("import sys; sys.path.insert(0, %r)\n"
                "from app.workspace import Workspace\nfrom app.backup import backup\n"
                "from core.errors import BusyError\n"
                "try:\n    backup(Workspace.open(%r))\nexcept BusyError as err:\n    print(err); sys.exit(3)\n")
        done = subprocess.run([sys.executable, "-c", code % (str(Path(__file__).parents[2]), str(full_ws.root))],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and "run 'demo-run'" in done.stdout, done.stdout + done.stderr
    assert not list((full_ws.root / "backups").glob("*.tar"))


def test_the_command_line_backs_up_lists_and_restores(full_ws: Workspace, capsys: pytest.CaptureFixture) -> None:
    from menus.cli import main

    assert main(["backup", "--workspace", str(full_ws.root)]) == 0
    said = capsys.readouterr().out
    assert "Backup written" in said and "SHA-256" in said
    [archive] = (full_ws.root / "backups").glob("*.tar")
    assert main(["backup", "--list", "--workspace", str(full_ws.root)]) == 0
    assert archive.name[:30] in capsys.readouterr().out
    (full_ws.run_dir("demo-run") / "best.pt").unlink()
    assert main(["restore", archive.name, "--yes", "--workspace", str(full_ws.root)]) == 0
    assert "Restored" in capsys.readouterr().out and (full_ws.run_dir("demo-run") / "best.pt").exists()
    assert main(["restore", "../../etc/passwd", "--yes", "--workspace", str(full_ws.root)]) == 2
    assert "Error:" in capsys.readouterr().err
