"""A run's metadata changed by several writers: each section survives the others; and two
threads of one process (a server's jobs) are two holders of a lock, not one."""

from __future__ import annotations

import threading

from app.runs import Run
from app.state import Kind, read_state, write_state


def test_writers_of_different_sections_never_lose_each_other(ws) -> None:
    folder = ws.run_dir("r1")
    folder.mkdir(parents=True)
    write_state(folder / "metadata.json", Kind.RUN_METADATA,
                {"run": "r1", "phase": "supervised", "dataset": "d", "status": "complete", "config": {}})
    stale = Run(ws, "r1")
    assert stale.meta["status"] == "complete"  # read once, before the others write

    def write(k: int) -> None:
        for n in range(5):
            Run(ws, "r1").change(lambda current, k=k, n=n: {"evaluation": {**current.get("evaluation", {}),
                                                                           f"split{k}-{n}": {"accuracy": n}}})

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stale.merge(export={"path": "model.onnx"})  # a writer holding an old copy still merges with what is there now
    meta = read_state(folder / "metadata.json", Kind.RUN_METADATA)
    assert len(meta["evaluation"]) == 20 and meta["export"] == {"path": "model.onnx"} and meta["status"] == "complete"
    assert stale.meta == meta


def test_two_threads_of_one_process_do_not_share_a_lock(ws) -> None:
    import pytest

    from core.errors import BusyError

    held, release = threading.Event(), threading.Event()

    def trainer() -> None:
        with ws.lock("run", "r2"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=trainer)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(BusyError, match="run 'r2'"):
            with ws.lock("run", "r2"):
                pass
        from app.locks import is_held

        assert is_held(ws.lock_path("run", "r2"))
    finally:
        release.set()
        thread.join()
    with ws.lock("run", "r2"), ws.lock("run", "r2"):  # re-entered by the same thread: fine
        pass


def test_a_runs_sections_are_typed_and_a_wrong_type_is_named(ws) -> None:
    import pytest

    from core.errors import DatasetError, StateError

    folder = ws.run_dir("r2")
    folder.mkdir(parents=True)
    write_state(folder / "metadata.json", Kind.RUN_METADATA,
                {"run": "r2", "phase": "supervised", "dataset": "d", "status": "complete", "config": {"epochs": 3},
                 "settings": {"model": {}, "data": {}, "training": {"epochs": 3}, "post_hoc": {}},
                 "setting_sources": {"epochs": "user"}, "ood_gate": {"threshold": 1.5}})
    run = Run.load(ws, "r2")
    record = run.record
    assert record.settings["training"]["epochs"] == 3 and record.setting_sources["epochs"] == "user"
    assert record.ood_gate["threshold"] == 1.5 and record.export is None and record.trials is None
    with pytest.raises(StateError, match="trials"):
        run.merge(trials="not a list")  # a writer's mistake is refused when written...
    assert Run.load(ws, "r2").meta.get("trials") is None  # ...and the file stays as it was
    with pytest.raises(DatasetError):
        Run.load(ws, "no-such-run")
