"""The one Console, and the bridge from app progress callbacks to rich progress bars."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from rich.console import Console

from app.jobs import Job

T = TypeVar("T")
from rich.table import Column
from rich.text import Text
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
    TimeRemainingColumn,
)

# soft_wrap: long paths stay on one line (copyable); tables still fit the width.
console = Console(soft_wrap=True)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


QUIET_WHEN_DONE = ("Batches",)  # one epoch's batches: the Epochs row and the log line say the rest


def _elapsed(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def as_job(name: str, bar: Callable[..., None], work: Callable[[Job[T]], T], graceful: bool = False) -> T:
    """Run ``work(job)`` as an app.jobs.Job whose progress events draw ``bar``: the command
    line follows the same events a web page does."""
    job: Job[T] = Job(name, work, graceful=graceful)
    job.listen(lambda event: bar(event.task, event.done, event.total, **event.info) if event.kind == "progress"
               else None)
    return job.run()


@contextlib.contextmanager
def progress_bars() -> Iterator[Any]:
    """Yield a callback ``(task, done, total, **info)`` that draws one bar per task.

    A task that reaches its total leaves the live rows and is printed once above them (its
    count, time and last details), so the rows stay few and fit any terminal; the same task
    reported again later (the VAE's "Loading train images" after the classifier's) starts a
    new row with its own clock. Columns have fixed widths, so a long details text is cut with
    an ellipsis instead of squeezing the bar out.
    """
    bars = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}", table_column=Column(width=22, no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=16), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta", table_column=Column(no_wrap=True)), TimeRemainingColumn(),
        TextColumn("{task.fields[info]}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
        console=console, transient=False, expand=True,
    )
    tasks: dict[str, Any] = {}
    ended: dict[str, tuple[int, int]] = {}

    def update(task: str, done: int, total: int | None, **info: Any) -> None:
        if info.pop("unit", None) == "bytes":  # downloads: size and speed (the bar's eta column gives the ETA)
            speed = _row(task).speed if task in tasks else None
            info = {"size": f"{_mb(done)}/{_mb(total) if total else '?'} MB",
                    **({"speed": f"{_mb(speed)} MB/s"} if speed else {})}
        text = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        if task not in tasks and ended.get(task) == (done, total):
            return  # the same end reported twice (a loop's last step, then its closing report)
        ended.pop(task, None)
        if task not in tasks:
            tasks[task] = bars.add_task(task, total=total, info=text)
        bars.update(tasks[task], completed=done, total=total, info=text)
        if total is not None and done >= total:
            ended[task] = (done, total)
            _close(task, ("✓ ", "green"), "")

    def _row(task: str) -> Any:
        """The live row of ``task`` (rows are found by id: ended ones leave, so positions move)."""
        return next(t for t in bars.tasks if t.id == tasks[task])

    def _close(task: str, mark: tuple[str, str], note: str) -> None:
        """Take ``task``'s row out of the live rows and print it once, as it ended."""
        row = _row(task)
        bars.remove_task(tasks.pop(task))
        bars.refresh()  # the live rows without it, before the line goes above them
        if task in QUIET_WHEN_DONE and not note:
            return
        count = f"{int(row.completed)}/{int(row.total)}" if row.total is not None else f"{int(row.completed)}"
        info = row.fields.get("info", "")
        line = Text.assemble(mark, (task, "bold"), f"  {count}  {_elapsed(row.elapsed)}", note, f"  {info}" if info else "")
        line.truncate(console.width, overflow="ellipsis")
        bars.console.print(line, soft_wrap=False)

    with bars:
        try:
            yield update
        finally:  # rows left unfinished (stopped, or an error) say so instead of a stale eta
            for task in list(tasks):
                _close(task, ("- ", "yellow"), "" if task in QUIET_WHEN_DONE else "  (not finished)")
