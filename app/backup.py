"""A project backup: one dated archive of the workspace's state, models and organized
datasets, with a manifest of SHA-256 hashes; a restore that checks every hash before it
replaces anything.

What goes in (paths under the workspace root; each one an *entry*, restored whole):

    data/datasets.json, data/settings.json, data/workflows/   the state files
    data/organized/                                          the organized datasets
    data/.pseudonym_key, data/private/signing_key.pem,       the keys (without them patients
    data/signing_key.pub.pem, data/trusted_keys/             cannot be matched to new scans,
    data/private/identifiers.json                            and bundles cannot be signed)
    checkpoints/, exports/, predictions/                     runs, bundles, predictions
    data/raw/ and data/private/items.json                    only with raw=True: the collected
                                                             files and the map to their places

The archive is a plain tar (``backups/medanomaly-backup-YYYYMMDD-HHMMSS.tar``, mode 0600:
it holds the keys), whose last two members are ``MANIFEST.json`` (every file's size and
SHA-256, every folder, the entries) and ``MANIFEST.sig.json`` (an Ed25519 signature of the
manifest by the workspace's signing key). Without ``raw`` it holds no file names of the
user's own and no identifiers: the state files name items by pseudonymous ids.

``restore`` reads the whole archive into a folder of its own inside the workspace,
refusing it at the first member that is not a plain file or folder, lies outside the
entries, is missing from the manifest or does not match its hash, and a manifest whose
signature does not verify; only then does it move each entry's present version aside
(``backups/replaced-YYYYMMDD-HHMMSS/``: nothing is deleted) and the restored one in.
Cut short, running the same restore again finishes it. Both hold every lock of the
workspace, so neither runs beside a training, an organize or another backup.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tarfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from app.locks import hold
from app.progress import Progress, report
from app.workspace import Workspace, now_iso
from core.errors import BackupError

FORMAT = "medanomaly-backup"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
SIGNATURE = "MANIFEST.sig.json"
ENTRIES = ("data/datasets.json", "data/settings.json", "data/workflows", "data/organized",
           "data/.pseudonym_key", "data/private/signing_key.pem", "data/signing_key.pub.pem",
           "data/trusted_keys", "data/private/identifiers.json", "checkpoints", "exports", "predictions")
RAW_ENTRIES = ("data/raw", "data/private/items.json")
CHUNK = 1 << 20


@dataclass(frozen=True)
class BackupResult:
    archive: Path
    files: int
    bytes: int
    entries: list[str]


@dataclass(frozen=True)
class RestoreResult:
    archive: Path
    files: int
    entries: list[str]
    replaced: Path | None  # where the versions it replaced were moved (None: nothing was there)
    signed_by: str


def backups_dir(ws: Workspace) -> Path:
    return ws.root / "backups"


def list_backups(ws: Workspace) -> list[dict[str, Any]]:
    """The archives in ``backups/``, newest first: name, size, and what their manifest says."""
    found = []
    folder = backups_dir(ws)
    for path in sorted(folder.glob("medanomaly-backup-*.tar"), reverse=True) if folder.is_dir() else []:
        try:
            manifest = _read_manifest(path)[0]
        except BackupError as err:
            found.append({"name": path.name, "size": path.stat().st_size, "problem": str(err)})
            continue
        found.append({"name": path.name, "size": path.stat().st_size, "created": manifest.get("created"),
                      "files": len(manifest["files"]), "raw": manifest.get("raw", False),
                      "entries": manifest["entries"]})
    return found


def backup_path(ws: Workspace, name: str) -> Path:
    """The archive ``name`` in ``backups/`` (a bare file name: no folders, no '..').

    Raises:
        BackupError: not such a name, or no such archive.
    """
    if "/" in name or "\\" in name or not name.startswith("medanomaly-backup-") or not name.endswith(".tar"):
        raise BackupError(f"{name!r} is not a backup's name: give one of backups/medanomaly-backup-*.tar.")
    path = ws.inside(backups_dir(ws) / name)
    if not path.is_file():
        raise BackupError(f"No backup named {name!r} in {backups_dir(ws)}.")
    return path


@contextmanager
def _whole_workspace(ws: Workspace) -> Iterator[None]:
    """Hold every lock the workspace has used (so no training, organize or export runs meanwhile)."""
    with ExitStack() as stack:
        stack.enter_context(hold(ws.locks_dir / "backup.lock", "a backup or restore of this workspace"))
        stack.enter_context(ws.index_lock())
        for lock in sorted(ws.locks_dir.glob("*.lock")):
            kind, _, name = lock.stem.partition("-")
            if kind in ("dataset", "run", "export", "workflow") and name:
                stack.enter_context(ws.lock(kind, name))
            elif lock.name not in ("backup.lock", "index.lock"):
                stack.enter_context(hold(lock, lock.stem))
        yield


def _files_of(ws: Workspace, entries: tuple[str, ...]) -> tuple[list[str], list[str], list[str]]:
    """(entries present, folders, files) as paths relative to the root; links and sockets are skipped."""
    present, folders, files = [], [], []
    for entry in entries:
        path = ws.root / entry
        if path.is_symlink() or not path.exists():
            continue
        present.append(entry)
        if path.is_file():
            files.append(entry)
            continue
        for here, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not Path(here, d).is_symlink())
            rel = Path(here).relative_to(ws.root).as_posix()
            folders.append(rel)
            for name in sorted(names):
                full = Path(here, name)
                if full.is_file() and not full.is_symlink() and not _is_temporary(name):
                    files.append(f"{rel}/{name}")
    return present, folders, files


def _is_temporary(name: str) -> bool:
    """Half-written files of other processes (app.atomic's names) and lock files."""
    return (name.startswith(".") and any(f".{tag}." in name for tag in ("tmp", "new", "old", "partial"))) \
        or name.endswith((".lock", ".lock.owner"))


class _Hashing:
    """A file reader that hashes what it hands out (tarfile reads each member once)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.sha = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.sha.update(chunk)
        return chunk


def backup(ws: Workspace, *, raw: bool = False, to: Path | None = None,
           progress: Progress | None = None) -> BackupResult:
    """Write a backup archive of ``ws`` (see the module's text); returns where and what.

    Raises:
        BusyError: something else writes to the workspace now.
        BackupError: the folder for it cannot be written, or the disk is too full.
    """
    from app.atomic import temp_sibling
    from app.signing import public_pem, sign_bytes

    folder = Path(to) if to is not None else backups_dir(ws)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BackupError(f"Cannot write backups to {folder} ({err.strerror or err}).") from None
    entries = ENTRIES + (RAW_ENTRIES if raw else ())
    with _whole_workspace(ws):
        public_pem(ws.data_dir)  # the signing key, made now if new, so that the archive holds it
        present, folders, files = _files_of(ws, entries)
        sizes = {rel: (ws.root / rel).stat().st_size for rel in files}
        total = sum(sizes.values())
        free = shutil.disk_usage(folder).free
        if total > free:
            raise BackupError(f"The backup needs {total / 1e9:.1f} GB and {folder} has {free / 1e9:.1f} GB free: "
                              "free some space or write it elsewhere (--to DIR).")
        archive = _unused(folder / f"medanomaly-backup-{time.strftime('%Y%m%d-%H%M%S')}.tar")
        tmp = temp_sibling(archive)
        hashes: dict[str, dict[str, Any]] = {}
        done = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for rel in folders:
                    tar.addfile(_member(rel, tarfile.DIRTYPE, 0))
                report(progress, "backup", 0, total)
                for rel in files:
                    with open(ws.root / rel, "rb") as handle:
                        size = os.fstat(handle.fileno()).st_size
                        reader = _Hashing(handle)
                        tar.addfile(_member(rel, tarfile.REGTYPE, size), reader)  # type: ignore[arg-type]
                    hashes[rel] = {"size": size, "sha256": reader.sha.hexdigest()}
                    done += size
                    report(progress, "backup", done, total)
                manifest = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "created": now_iso(),
                                       "raw": raw, "entries": present, "folders": folders, "files": hashes},
                                      indent=1).encode()
                _add_bytes(tar, MANIFEST, manifest)
                _add_bytes(tar, SIGNATURE, json.dumps(sign_bytes(ws.data_dir, manifest), indent=1).encode())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, archive)
        except OSError as err:
            raise BackupError(f"Writing the backup to {folder} failed ({err.strerror or err}); nothing was "
                              "kept. Free some space or write it elsewhere (--to DIR).") from None
        finally:
            tmp.unlink(missing_ok=True)
    return BackupResult(archive=archive, files=len(files), bytes=total, entries=present)


def _unused(path: Path) -> Path:
    n = 1
    while path.exists():
        n += 1
        path = path.with_name(f"{path.stem.split('~')[0]}~{n}.tar")
    return path


def _member(name: str, kind: bytes, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, size, int(time.time())
    info.mode = 0o700 if kind == tarfile.DIRTYPE else 0o600
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    tar.addfile(_member(name, tarfile.REGTYPE, len(data)), io.BytesIO(data))


# -- restore ------------------------------------------------------------------------------
def _read_manifest(archive: Path) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """(manifest, signature document, the manifest's bytes) of an archive, checked for form."""
    try:
        with tarfile.open(archive, mode="r:") as tar:
            manifest_bytes = _member_bytes(tar, MANIFEST)
            signature = json.loads(_member_bytes(tar, SIGNATURE))
        manifest = json.loads(manifest_bytes)
    except (tarfile.TarError, OSError, ValueError, KeyError) as err:
        raise BackupError(f"{archive.name} is not a readable backup ({err}): it is damaged or not one "
                          "of this tool's archives.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("entries"), list):
        raise BackupError(f"{archive.name} is not one of this tool's backups (no manifest of its kind).")
    if manifest.get("version") != FORMAT_VERSION:
        raise BackupError(f"{archive.name} is a backup of format version {manifest.get('version')}; this "
                          f"tool reads version {FORMAT_VERSION}. Restore it with the version that wrote it.")
    return manifest, signature, manifest_bytes


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    handle = tar.extractfile(tar.getmember(name))
    if handle is None:
        raise KeyError(name)
    return handle.read()


def _checked_name(name: str, entries: list[str]) -> str:
    """``name`` when it is a plain relative path inside one of ``entries``; else a BackupError."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or not path.parts:
        raise BackupError(f"Refused: the archive holds {name!r}, a path that would leave the workspace.")
    allowed = set(ENTRIES) | set(RAW_ENTRIES)
    if not any(entry in allowed and (name == entry or name.startswith(entry + "/")) for entry in entries):
        raise BackupError(f"Refused: the archive holds {name!r}, outside what a backup holds.")
    return path.as_posix()


def verify_archive(ws: Workspace, archive: Path, into: Path | None = None,
                   progress: Progress | None = None) -> tuple[dict[str, Any], str]:
    """Check every member of ``archive`` against its manifest and the manifest's signature;
    with ``into``, write the members there as they are read. Returns (manifest, signed by).

    Raises:
        BackupError: naming the first thing that does not match.
    """
    manifest, signature, manifest_bytes = _read_manifest(archive)
    signed_by = _check_signature(ws, manifest_bytes, signature, archive.name)
    entries = [str(e) for e in manifest["entries"]]
    for entry in entries:
        _checked_name(entry, entries)
    expected: dict[str, dict[str, Any]] = manifest["files"]
    folders = set(manifest.get("folders", []))
    total = sum(int(f.get("size", 0)) for f in expected.values())
    seen: set[str] = set()
    done = 0
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                if member.name in (MANIFEST, SIGNATURE):
                    continue
                name = _checked_name(member.name, entries)
                if member.isdir():
                    if name not in folders:
                        raise BackupError(f"Refused: the folder {name!r} is in the archive but not in its manifest.")
                    if into is not None:
                        (into / name).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise BackupError(f"Refused: {name!r} in the archive is a link or a device, which a backup "
                                      "never holds.")
                if name not in expected:
                    raise BackupError(f"Refused: {name!r} is in the archive but not in its manifest (added later?).")
                if name in seen:
                    raise BackupError(f"Refused: {name!r} is in the archive twice.")
                seen.add(name)
                sha = hashlib.sha256()
                source = tar.extractfile(member)
                assert source is not None
                with ExitStack() as stack:
                    out = None
                    if into is not None:
                        (into / name).parent.mkdir(parents=True, exist_ok=True)
                        out = stack.enter_context(open(into / name, "wb"))
                    while chunk := source.read(CHUNK):
                        sha.update(chunk)
                        if out is not None:
                            out.write(chunk)
                        done += len(chunk)
                        report(progress, "verify", done, total)
                if sha.hexdigest() != expected[name].get("sha256") or member.size != expected[name].get("size"):
                    raise BackupError(f"Refused: {name} in {archive.name} does not match its SHA-256 in the "
                                      "manifest: the archive is damaged or was changed. Nothing was replaced.")
    except tarfile.TarError as err:
        raise BackupError(f"{archive.name} is damaged ({err}); nothing was replaced.") from None
    missing = sorted(set(expected) - seen)
    if missing:
        raise BackupError(f"Refused: {archive.name} lacks {len(missing)} file(s) its manifest lists "
                          f"(first: {missing[0]}); it is cut short or damaged. Nothing was replaced.")
    return manifest, signed_by


def _check_signature(ws: Workspace, manifest_bytes: bytes, signature: dict[str, Any], archive: str) -> str:
    """Which key signed the manifest; refuses a signature that does not verify, and an archive
    of another workspace's key where this workspace has a key of its own that is not that one."""
    from app.signing import has_signing_key, trusted_raw_keys, verify_bytes
    from core.errors import ExportError

    try:
        key = base64.b64decode(str(signature.get("public_key", "")), validate=True)
    except ValueError:
        key = b""
    if not verify_bytes(key, manifest_bytes, str(signature.get("signature", ""))):
        raise BackupError(f"Refused: the manifest of {archive} does not match its signature: it was changed "
                          "after the backup was made. Nothing was replaced.")
    key_id = hashlib.sha256(key).hexdigest()[:16]
    if not has_signing_key(ws.data_dir):
        return f"{key_id} (the archive's own key: this workspace has none to compare)"
    try:
        trusted = trusted_raw_keys(ws.data_dir)
    except ExportError:  # this workspace's key is damaged: exactly what a restore may mend
        return f"{key_id} (this workspace's own key is damaged and is replaced by the archive's)"
    if key_id not in trusted:
        raise BackupError(f"Refused: {archive} was signed by key {key_id}, which this workspace does not trust "
                          "(another workstation's backup?). Add that workstation's data/signing_key.pub.pem "
                          "to data/trusted_keys/, or restore into an empty workspace.")
    return key_id


def restore(ws: Workspace, archive: Path, progress: Progress | None = None) -> RestoreResult:
    """Restore the workspace from ``archive`` (see the module's text).

    Raises:
        BackupError: the archive is damaged, changed, or not a backup; nothing was replaced.
        BusyError: something else writes to the workspace now.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise BackupError(f"No backup at {archive}.")
    backups_dir(ws).mkdir(parents=True, exist_ok=True)
    with _whole_workspace(ws):
        staging = ws.root / f".restore-{uuid.uuid4().hex[:12]}"
        staging.mkdir(mode=0o700)
        try:
            manifest, signed_by = _checked_space(ws, archive, staging, progress)
            entries = [str(e) for e in manifest["entries"]]
            lacking = [entry for entry in entries if not (staging / entry).exists()]
            if lacking:
                raise BackupError(f"Refused: {archive.name} names {lacking[0]!r} but holds nothing of it. "
                                  "Nothing was replaced.")
            replaced = backups_dir(ws) / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
            moved_any = False
            for entry in entries:  # everything checked: now each entry is moved aside and the new one in
                current, new = ws.root / entry, staging / entry
                if current.exists() or current.is_symlink():
                    replaced.mkdir(mode=0o700, exist_ok=True)
                    (replaced / entry).parent.mkdir(parents=True, exist_ok=True)
                    os.rename(current, replaced / entry)
                    moved_any = True
                current.parent.mkdir(parents=True, exist_ok=True)
                os.rename(new, current)
            for secret in ("data/.pseudonym_key", "data/private/signing_key.pem", "data/private/items.json"):
                if secret in entries:
                    os.chmod(ws.root / secret, 0o600)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(archive=archive, files=len(manifest["files"]), entries=entries,
                         replaced=replaced if moved_any else None, signed_by=signed_by)


def _checked_space(ws: Workspace, archive: Path, staging: Path,
                   progress: Progress | None) -> tuple[dict[str, Any], str]:
    manifest = _read_manifest(archive)[0]
    need = sum(int(f.get("size", 0)) for f in manifest["files"].values())
    free = shutil.disk_usage(ws.root).free
    if need > free:
        raise BackupError(f"Restoring needs {need / 1e9:.1f} GB free in {ws.root} and {free / 1e9:.1f} GB is: "
                          "free some space first. Nothing was replaced.")
    return verify_archive(ws, archive, into=staging, progress=progress)


def tree_hashes(ws: Workspace, raw: bool = False) -> dict[str, str]:
    """SHA-256 of every file a backup would hold, by path: what "equal by hashes" compares."""
    found = {}
    for rel in _files_of(ws, ENTRIES + (RAW_ENTRIES if raw else ()))[2]:
        sha = hashlib.sha256()
        with open(ws.root / rel, "rb") as handle:
            while chunk := handle.read(CHUNK):
                sha.update(chunk)
        found[rel] = sha.hexdigest()
    return found
