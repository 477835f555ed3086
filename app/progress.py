"""How app functions report progress without knowing about any screen.

A long-running function takes ``progress: Progress | None``; it calls
``progress(task, done, total)`` as work advances. menus/ turns these calls into
rich progress bars; tests pass a list's append or nothing at all.
"""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    def __call__(self, task: str, done: int, total: int | None, **info: Any) -> None: ...


def report(progress: Progress | None, task: str, done: int, total: int | None, **info: Any) -> None:
    if progress is not None:
        progress(task, done, total, **info)
