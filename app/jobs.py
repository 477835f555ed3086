"""Long operations as jobs: progress events anyone can follow, and cancellation at safe points.

Every long operation in app takes ``progress`` (app.progress) and, where it can stop
cleanly in the middle (training after an epoch, the workflow after a step),
``should_stop``. A Job runs one such call and turns its progress reports into Events
that any number of listeners follow (the command line's progress bars, the menus', a
web page's event stream); the last EVENTS_KEPT stay readable, by sequence number, for
whoever comes late.

Cancelling asks the work to stop at its next safe point. Work that takes ``should_stop``
(``graceful``) finishes its step and returns: a stopped run resumes where it stopped.
Other work is stopped at its next progress report by ``Cancelled``, which these
operations are built to survive, as they survive Ctrl-C or kill -9: datasets and
bundles are swapped in whole, downloads resume, nothing half-written is left as if done.

    job = Job("organize", lambda job: organize(ws, path, name, progress=job.progress))
    job.listen(print)
    result = job.run()            # here; or job.start() in a thread, job.cancel() from another
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from core.errors import WorkbenchError

T = TypeVar("T")
log = logging.getLogger(__name__)

EVENTS_KEPT = 2000
STATES = ("pending", "running", "finished", "failed", "cancelled")


@dataclass(frozen=True)
class Event:
    job: str  # the job's id
    seq: int  # 1, 2, ... within the job
    kind: str  # started | progress | finished | failed | cancelled
    task: str = ""  # progress: what is being done ("Training", "Scanning files")
    done: int = 0
    total: int | None = None
    info: dict[str, Any] = field(default_factory=dict)  # progress: what the work adds (loss, val AUC, ...)
    message: str = ""  # failed: the error in one line; cancelled: where it stopped
    at: float = 0.0  # time.time()


class Cancelled(WorkbenchError):
    """The job was asked to stop and stopped at a safe point."""


class Job(Generic[T]):
    def __init__(self, name: str, work: Callable[[Job[T]], T], *, graceful: bool = False) -> None:
        """``work(job)`` does the operation, passing ``job.progress`` (and, when ``graceful``,
        ``job.should_stop``) to it."""
        self.id = uuid.uuid4().hex[:12]
        self.name, self.graceful = name, graceful
        self.state = "pending"
        self.result: T | None = None
        self.error = ""
        self._work = work
        self._events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self._listeners: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._seq = 0

    # -- following ---------------------------------------------------------------------------------
    def listen(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` for every event from now on (in the job's thread)."""
        with self._lock:
            self._listeners.append(listener)

    def events(self, after: int = 0) -> list[Event]:
        """The kept events with a sequence number above ``after``."""
        with self._lock:
            return [e for e in self._events if e.seq > after]

    def _emit(self, kind: str, **fields: Any) -> None:
        with self._lock:
            self._seq += 1
            event = Event(self.id, self._seq, kind, at=time.time(), **fields)
            self._events.append(event)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a listener that fails (a closed page) never stops the work
                log.exception("A listener of job %s failed", self.id)

    # -- what the work calls -----------------------------------------------------------------------
    def progress(self, task: str, done: int, total: int | None, **info: Any) -> None:
        """app.progress's callback: an event, and the safe point where a non-graceful job stops."""
        self._emit("progress", task=task, done=done, total=total, info=info)
        if self._cancel.is_set() and not self.graceful:
            raise Cancelled(f"{self.name} was cancelled during {task!r} ({done} of {total or '?'}).")

    def should_stop(self) -> bool:
        return self._cancel.is_set()

    # -- steering -----------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the work to stop at its next safe point (returns at once)."""
        self._cancel.set()

    def run(self) -> T:
        """Do the work in this thread; its result, or its error raised again."""
        with self._lock:
            if self.state != "pending":
                raise WorkbenchError(f"Job {self.name} ({self.id}) has already run.")
            self.state = "running"
        self._emit("started")
        try:
            result = self._work(self)
        except Cancelled as stopped:
            self._end("cancelled", message=str(stopped))
            raise
        except KeyboardInterrupt:
            self._end("cancelled", message="stopped by Ctrl-C")
            raise
        except BaseException as err:
            self.error = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
            self._end("failed", message=self.error)
            raise
        self.result = result
        self._end("cancelled" if self._cancel.is_set() else "finished",
                  message="stopped cleanly when asked" if self._cancel.is_set() else "")
        return result

    def _end(self, state: str, message: str = "") -> None:
        self.state = state
        self._emit(state, message=message)
        self._done.set()

    def start(self) -> threading.Thread:
        """Do the work in a background thread; follow it by its events, ``wait`` for its end."""

        def body() -> None:
            try:
                self.run()
            except BaseException:  # nobody to raise it to: the job's state and last event say it
                log.info("Job %s (%s) ended %s: %s", self.name, self.id, self.state, self.error or "cancelled")

        thread = threading.Thread(target=body, name=f"job-{self.name}-{self.id}", daemon=True)
        thread.start()
        return thread

    def wait(self, timeout: float | None = None) -> str:
        """Wait for the job's end (or ``timeout`` seconds); its state."""
        self._done.wait(timeout)
        return self.state


class Jobs:
    """The jobs of one process (a server's), by id: started, listed, found again."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job[Any]] = {}
        self._lock = threading.Lock()

    def submit(self, job: Job[Any]) -> Job[Any]:
        with self._lock:
            self._jobs[job.id] = job
        job.start()
        return job

    def get(self, job_id: str) -> Job[Any]:
        with self._lock:
            if job_id not in self._jobs:
                raise WorkbenchError(f"No job {job_id!r} in this process.")
            return self._jobs[job_id]

    def all(self) -> list[Job[Any]]:
        with self._lock:
            return list(self._jobs.values())
