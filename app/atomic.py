"""All-or-nothing writes: temporary names that say whose they are, swaps, and the sweep.

Every temporary file or folder the app makes is named ``.<final name>.<tag>.<pid>-<id>``
beside its final place, so that a later process can tell leftovers of a dead process
from work in progress (``sweep``). Folders that span several files (an organized
dataset, a bundle) are written whole under such a name and swapped into place.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import secrets
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

TAGS = ("tmp", "new", "old", "partial")
_TEMP = re.compile(r"^\.(?P<final>.+)\.(?P<tag>tmp|new|old|partial)\.(?P<pid>\d+)-[0-9a-f]+$")


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A fresh temporary name beside ``path`` that records this process."""
    assert tag in TAGS
    return path.with_name(f".{path.name}.{tag}.{os.getpid()}-{secrets.token_hex(3)}")


def create_once(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` holding ``data``, whole, unless it exists: written under a temporary
    name, then hard-linked into place, so that of several processes making it at once one
    wins and the others find its complete content."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made it first: its content stands
            return
    finally:
        tmp.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_in(new: Path, final: Path) -> None:
    """Put the finished folder ``new`` at ``final``; the previous ``final`` (if any) is removed.

    Readers see either the whole old folder or the whole new one. Where the
    kernel cannot exchange two names at once, the old folder is first renamed
    aside (a crash in between is repaired by ``sweep``, which puts it back).
    """
    if not final.exists():
        os.rename(new, final)
        return
    if _exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # it now holds the previous version
        return
    old = temp_sibling(final, "old")
    os.rename(final, old)
    os.rename(new, final)
    shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(folders: list[Path], depth: int = 2) -> list[Path]:
    """Remove temporary files and folders of processes that no longer run; return what went.

    A previous version renamed aside (``.old``) whose final place is empty is put
    back instead: the swap that moved it was cut short.
    """
    removed: list[Path] = []
    for folder in folders:
        removed += _sweep_folder(folder, depth)
    return removed


def _sweep_folder(folder: Path, depth: int) -> list[Path]:
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        path = Path(entry.path)
        if match and not _alive(int(match["pid"])):
            final = path.with_name(match["final"])
            try:
                if match["tag"] == "old" and not final.exists():
                    os.rename(path, final)
                    log.info("Put back %s: a replacement was cut short", final.name)
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
            except OSError as err:  # a read-only workspace: leave it
                log.debug("Could not remove %s: %s", path, err)
        elif depth > 1 and entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            removed += _sweep_folder(path, depth - 1)
    return removed
