"""Jobs: every long operation's progress as events anyone can follow, and cancellation at safe points."""

from __future__ import annotations

import threading

import pytest

from app.jobs import Cancelled, Job, Jobs
from core.errors import DatasetError, WorkbenchError


def _counting(steps: int, gate: threading.Event | None = None):
    def work(job: Job) -> int:
        for k in range(1, steps + 1):
            job.progress("Counting", k, steps, value=k * 10)
            if gate is not None and k == 1:
                gate.wait(5)
        return steps

    return work


def test_a_job_reports_its_progress_as_events_to_every_listener_and_keeps_them() -> None:
    heard: list = []
    job = Job("count", _counting(3))
    job.listen(heard.append)
    job.listen(lambda event: 1 / 0)  # a listener that fails never stops the work
    assert job.run() == 3 and job.state == "finished" and job.result == 3
    kinds = [e.kind for e in job.events()]
    assert kinds == ["started", "progress", "progress", "progress", "finished"]
    assert heard == job.events() and [e.seq for e in heard] == [1, 2, 3, 4, 5]
    assert heard[2].task == "Counting" and (heard[2].done, heard[2].total) == (2, 3) and heard[2].info == {"value": 20}
    assert [e.seq for e in job.events(after=3)] == [4, 5], "a late follower asks for what came after its last"
    with pytest.raises(WorkbenchError, match="already run"):
        job.run()


def test_cancelling_stops_work_at_its_next_progress_report() -> None:
    gate = threading.Event()
    job = Job("count", _counting(100, gate))
    job.start()
    while not job.events(after=1):
        pass
    job.cancel()
    gate.set()
    assert job.wait(10) == "cancelled"
    progress = [e for e in job.events() if e.kind == "progress"]
    assert len(progress) == 2, "the report after the cancel is the last"
    assert job.events()[-1].kind == "cancelled" and "during 'Counting' (2 of 100)" in job.events()[-1].message


def test_a_failing_job_says_why_in_one_line() -> None:
    def work(job: Job) -> None:
        job.progress("Reading", 0, 1)
        raise DatasetError("No readable image under /somewhere.\nmore detail")

    job = Job("organize", work)
    with pytest.raises(DatasetError):
        job.run()
    assert job.state == "failed" and job.error == "No readable image under /somewhere."
    assert job.events()[-1].kind == "failed" and job.events()[-1].message == job.error


def test_an_organize_cancelled_mid_scan_leaves_no_dataset_and_runs_again(ws) -> None:
    from app.collectors import collect
    from app.organize.organizer import organize

    collect("demo", ws, scale=1)
    job = Job("organize", lambda job: organize(ws, "demo", "demo", workers=1, progress=job.progress))
    job.listen(lambda event: event.kind == "progress" and event.done >= 1 and job.cancel())
    with pytest.raises(Cancelled):
        job.run()
    assert job.state == "cancelled" and "demo" not in ws.organized_datasets()
    assert organize(ws, "demo", "demo", workers=1).items > 0


def test_a_graceful_training_job_stops_after_its_epoch_and_resumes(ws) -> None:
    from app.collectors import collect
    from app.organize.organizer import organize
    from app.training import train

    collect("demo", ws, scale=1)
    organize(ws, "demo", "demo", workers=1)
    settings = dict(backbone="resnet10t", image_size=32, epochs=4, batch_size=16, pretrained=False)
    job = Job("train", lambda job: train(ws, "demo", "supervised", run="r", progress=job.progress,
                                        should_stop=job.should_stop, **settings), graceful=True)
    job.listen(lambda event: event.kind == "progress" and job.cancel())
    result = job.run()
    assert job.state == "cancelled" and result.status == "stopped" and result.epochs_done == 1
    assert train(ws, "demo", "supervised", run="r", **settings).status == "complete"


def test_jobs_of_a_process_are_found_by_id() -> None:
    jobs = Jobs()
    job = jobs.submit(Job("count", _counting(2)))
    assert job.wait(10) == "finished" and jobs.get(job.id) is job and jobs.all() == [job]
    with pytest.raises(WorkbenchError, match="No job 'nope'"):
        jobs.get("nope")
