"""Safe unpacking of downloaded archives (zip, tar, tar.gz/bz2/xz).

Nothing may land outside the target: absolute names, ``..`` parts, links and device
files are refused (tar through the standard library's ``data`` filter, PEP 706; zip by
checking every name), and an archive that would unpack past a size limit (an archive
bomb) is refused before anything is written, and stopped if it lies about its sizes.
Everything is unpacked into ``TARGET.partial`` first and renamed when whole, so a
refused or interrupted archive leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tarfile
import zlib
import zipfile
from pathlib import Path, PurePosixPath

from app.atomic import swap_in, temp_sibling
from app.collectors.http import check_disk
from core.errors import CollectError
from app.progress import Progress, report

MAX_RATIO = 200  # unpacked bytes per archive byte beyond which an archive counts as a bomb
CHUNK = 1 << 20


def is_archive(path: Path) -> bool:
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def safe_extract(archive: Path, target: Path, *, max_bytes: int | None = None,
                 progress: Progress | None = None) -> int:
    """Unpack ``archive`` into ``target`` (made or replaced whole); the number of files.

    ``max_bytes`` defaults to MAX_RATIO times the archive's size.

    Raises:
        CollectError: not an archive, an unsafe member, or too large once unpacked.
    """
    archive, target = Path(archive), Path(target)
    limit = max_bytes if max_bytes is not None else MAX_RATIO * max(archive.stat().st_size, 1)
    partial = temp_sibling(target, "partial")
    partial.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            count = _unzip(archive, partial, limit, progress)
        elif tarfile.is_tarfile(archive):
            count = _untar(archive, partial, limit, progress)
        else:
            raise CollectError(f"{archive.name} is not a zip or tar archive.")
        swap_in(partial, target)
    except (zipfile.BadZipFile, zlib.error, tarfile.TarError, EOFError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise _refuse(archive, f"it is damaged ({type(err).__name__}: {err})") from err
    except (IsADirectoryError, FileExistsError, NotADirectoryError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise _refuse(archive, f"two members claim the same place ({Path(err.filename or '').name or err})") from err
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return count


def _refuse(archive: Path, reason: str) -> CollectError:
    return CollectError(f"Refused {archive.name}: {reason}. Nothing was unpacked; the archive may be damaged "
                        "or malicious: get it again from the official source.")


def _unzip(archive: Path, target: Path, limit: int, progress: Progress | None) -> int:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        declared = sum(m.file_size for m in members)
        if declared > limit:
            raise _refuse(archive, f"it would unpack to {declared:,} bytes, over the limit of {limit:,}")
        check_disk(target, declared)
        for m in members:
            name = PurePosixPath(m.filename.replace("\\", "/"))
            kind = (m.external_attr >> 16) & 0o170000
            if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
                raise _refuse(archive, f"member {m.filename!r} would land outside the target folder")
            if kind == 0o120000:
                raise _refuse(archive, f"member {m.filename!r} is a symbolic link")
            if kind not in (0, 0o100000, 0o040000):  # fifo, device, socket
                raise _refuse(archive, f"member {m.filename!r} is a device or special file")
        written, files = 0, 0
        for k, m in enumerate(members):
            out = target / PurePosixPath(m.filename.replace("\\", "/"))
            if out.resolve() != target.resolve() and target.resolve() not in out.resolve().parents:
                raise _refuse(archive, f"member {m.filename!r} would land outside the target folder")
            if m.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as source, open(out, "wb") as sink:
                for chunk in iter(lambda: source.read(CHUNK), b""):
                    written += len(chunk)
                    if written > limit:  # sizes in the headers can lie
                        raise _refuse(archive, f"it unpacks past the limit of {limit:,} bytes")
                    sink.write(chunk)
            files += 1
            report(progress, f"Unpacking {archive.name}", k + 1, len(members))
    return files


def _untar(archive: Path, target: Path, limit: int, progress: Progress | None) -> int:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        declared = sum(m.size for m in members if m.isfile())
        if declared > limit:
            raise _refuse(archive, f"it would unpack to {declared:,} bytes, over the limit of {limit:,}")
        check_disk(target, declared)
        for m in members:
            name = PurePosixPath(m.name)
            if name.is_absolute() or ".." in name.parts:
                raise _refuse(archive, f"member {m.name!r} would land outside the target folder")
            if m.issym() or m.islnk():
                raise _refuse(archive, f"member {m.name!r} is a link")
            if not (m.isfile() or m.isdir()):
                raise _refuse(archive, f"member {m.name!r} is a device or special file")
        files = 0
        for k, m in enumerate(members):
            try:
                tf.extract(m, target, filter="data")  # refuses absolute paths and '..' (PEP 706)
            except tarfile.FilterError as err:
                raise _refuse(archive, f"member {m.name!r}: {err}") from err
            files += m.isfile()
            report(progress, f"Unpacking {archive.name}", k + 1, len(members))
    return files
