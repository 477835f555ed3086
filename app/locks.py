"""Locks between processes that share one workspace (``filelock``: fcntl on Unix).

An OS lock is released by the kernel when its process dies, kill -9 included, so
a crash never leaves a stale lock behind. Beside each lock an ``.owner`` file
says which process holds it and since when, for the "busy" message.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from core.errors import BusyError

_local = threading.local()  # per thread: the locks it holds, with how many blocks hold each


def _held() -> dict[Path, int]:
    """This thread's locks. Another thread of the same process (a server's jobs) is another
    holder: its own open of the lock file conflicts with ours (flock), so two jobs of one
    server never write the same run at once."""
    if not hasattr(_local, "held"):
        _local.held = {}
    return _local.held


def _owner(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"process {int(info['pid'])} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def hold(lock_path: Path, what: str, *, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock at ``lock_path`` for the block.

    ``what`` names the thing locked for the message ("dataset 'chest'"). With
    ``wait_s`` 0 a lock held elsewhere is refused at once; else waited for.

    Raises:
        BusyError: another process, or another thread of this one, holds the lock (after ``wait_s``).
    """
    lock_path = lock_path.absolute()
    mine = _held()
    if mine.get(lock_path):  # already this thread's (an outer block): re-entering is fine
        mine[lock_path] += 1
        try:
            yield
        finally:
            mine[lock_path] -= 1
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    owner = lock_path.with_name(lock_path.name + ".owner")
    lock = FileLock(lock_path, is_singleton=False, thread_local=False)
    try:
        lock.acquire(timeout=wait_s, poll_interval=0.05)
    except Timeout:
        raise BusyError(
            f"Busy: {what} is being written by {_owner(owner)}. "
            "Wait for it to finish (or stop it), then run this again."
        ) from None
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        tmp = owner.with_name(f".{owner.name}.tmp.{os.getpid()}-{id(lock):x}")
        tmp.write_text(json.dumps({"pid": os.getpid(), "since": since}), encoding="utf-8")
        os.replace(tmp, owner)
        mine[lock_path] = 1
        yield
    finally:
        mine.pop(lock_path, None)
        owner.unlink(missing_ok=True)
        lock.release()


def is_held(lock_path: Path) -> bool:
    """Whether some process (this one included) holds the lock now."""
    if _held().get(lock_path.absolute()):
        return True
    if not lock_path.exists():
        return False
    lock = FileLock(lock_path, is_singleton=False, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:  # a read-only workspace: nobody can be writing it
        return False
    lock.release()
    return False
