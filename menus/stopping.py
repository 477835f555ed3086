"""Stop long work cleanly: the first Ctrl-C asks to stop after the current epoch,
a second one stops at once (the run still resumes from its last finished epoch)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from menus.console import console


@contextmanager
def clean_stop(what: str = "epoch") -> Iterator[Callable[[], bool]]:
    """Yield ``should_stop()``; while inside, Ctrl-C sets it instead of interrupting."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False  # signals reach the main thread only
        return
    asked = threading.Event()

    def on_interrupt(signum: int, frame: object) -> None:
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()
        console.print(f"[yellow]Stopping after this {what}[/] (Ctrl-C again to stop at once).")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield asked.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
