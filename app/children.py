"""Worker processes that never outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Pool initializer: ask the kernel to kill this worker when its parent dies (kill -9 included).

    On systems without prctl (not Linux) the worker still ends when the pool's pipes close.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            libc = None  # no prctl here: the worker ends when the pool's pipes close instead
    if os.getppid() != parent:  # the parent died before the request above took hold
        os._exit(1)
