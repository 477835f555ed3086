"""The one Console, and the bridge from app progress callbacks to rich progress bars."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
    TimeRemainingColumn,
)

# soft_wrap: long paths stay on one line (copyable); tables still fit the width.
console = Console(soft_wrap=True)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


@contextlib.contextmanager
def progress_bars() -> Iterator[Any]:
    """Yield a callback ``(task, done, total, **info)`` that draws one bar per task."""
    bars = Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, transient=False,
    )
    tasks: dict[str, Any] = {}

    def update(task: str, done: int, total: int | None, **info: Any) -> None:
        if info.pop("unit", None) == "bytes":  # downloads: size and speed (the bar's eta column gives the ETA)
            speed = bars.tasks[tasks[task]].speed if task in tasks else None
            info = {"size": f"{_mb(done)}/{_mb(total) if total else '?'} MB",
                    **({"speed": f"{_mb(speed)} MB/s"} if speed else {})}
        text = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        if task not in tasks:
            tasks[task] = bars.add_task(task, total=total, info=text)
        bars.update(tasks[task], completed=done, total=total, info=text)

    with bars:
        yield update
