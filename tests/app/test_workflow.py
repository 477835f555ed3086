"""The workflow asked to stop: the epoch ends, the step says `stopped`, a rerun resumes it.

Tiny settings (demo scale 1, 32 px, 3 epochs) keep each workflow to seconds; the whole
workflow for real is tests/e2e.
"""

from __future__ import annotations

import pytest

from app import workflow
from app.state import Kind, read_state
from app.workflow import WorkflowOptions, run_workflow, stop_summary, workflow_standing


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(workflow, "DEMO_SCALE", 1)
    monkeypatch.setitem(workflow.FAST, "supervised", {"image_size": 32, "epochs": 3, "batch_size": 16,
                                                      "backbone": "resnet10t"})
    return WorkflowOptions(dataset="demo", fast=True)


def _stop_when(step_name: str):
    """(on_step, should_stop): asked to stop from the moment ``step_name`` starts."""
    started = []

    def on_step(number: int, step: str, status: str) -> None:
        if step == step_name and status == "running":
            started.append(step)

    return on_step, lambda: bool(started)


def test_a_workflow_asked_to_stop_ends_the_epoch_and_resumes_from_it(ws, tiny) -> None:
    assert workflow_standing(ws, tiny) == "new"
    on_step, should_stop = _stop_when("supervised")
    state = run_workflow(ws, tiny, on_step=on_step, should_stop=should_stop)
    record = state["steps"]["supervised"]
    assert state["stopped"] == "supervised" and (record["status"], record["epochs"], record["planned"]) == ("stopped", 1, 3)
    assert "vae" not in state["steps"] and "finished" not in state
    assert ws.run_metadata(record["run"])["status"] == "stopped"
    assert read_state(ws.workflow_path("demo"), Kind.WORKFLOW)["steps"]["supervised"]["status"] == "stopped"
    assert "after epoch 1 of 3" in stop_summary(state) and "again to resume" in stop_summary(state)
    assert workflow_standing(ws, tiny) == "resume"
    assert workflow_standing(ws, WorkflowOptions(dataset="demo", fast=True, seed=1)) == "other options"
    from core.errors import StateError

    with pytest.raises(StateError, match=r"other options \(--seed 0 then, --seed 1 now\)\. Run it again"):
        run_workflow(ws, WorkflowOptions(dataset="demo", fast=True, seed=1))
    with pytest.raises(StateError, match=r"--fast then, without --fast now; --recipe-minutes 0 then, --recipe-minutes 10 now"):
        run_workflow(ws, WorkflowOptions(dataset="demo"))  # a full run now searches for 10 minutes by default

    on_step, should_stop = _stop_when("vae")  # resumes the classifier, stops once the VAE has begun
    again = run_workflow(ws, tiny, on_step=on_step, should_stop=should_stop)
    done = again["steps"]["supervised"]
    assert (done["status"], done["run"], done["resumed_from"], done["epochs"]) == ("done", record["run"], 1, 3)
    assert again["stopped"] == "vae" and again["steps"]["vae"]["status"] == "stopped"


def test_a_second_ctrl_c_marks_the_step_and_the_run_stopped_never_running(ws, tiny) -> None:
    started = []

    def on_step(number: int, step: str, status: str) -> None:
        if step == "supervised" and status == "running":
            started.append(step)

    def second_ctrl_c() -> bool:  # asked after each epoch's checkpoint is saved
        if started:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        run_workflow(ws, tiny, on_step=on_step, should_stop=second_ctrl_c)
    state = read_state(ws.workflow_path("demo"), Kind.WORKFLOW)
    record = state["steps"]["supervised"]
    assert (record["status"], record["error"]) == ("stopped", "stopped by Ctrl-C")
    meta = ws.run_metadata(record["run"])
    assert (meta["status"], meta["error"], meta["epoch"]) == ("stopped", "stopped by Ctrl-C", 1)
    assert workflow_standing(ws, tiny) == "resume"


def test_a_phase_that_cannot_train_is_refused_before_its_run_exists(ws, tmp_path) -> None:
    from core.errors import DatasetError
    from app.organize.organizer import organize
    from app.readiness import phase_problem
    from app.training import train
    from tests.app.organize.layouts import png

    for k in range(12):
        png(tmp_path / "scans" / f"img{k}.png", value=20 + 15 * k)
    organize(ws, tmp_path / "scans", "unlabeled", workers=1)
    assert "needs labeled images; this dataset has none" in phase_problem(ws, "unlabeled", "supervised")
    assert "needs 3D volumes" in phase_problem(ws, "unlabeled", "cube3d")
    assert phase_problem(ws, "unlabeled", "vae") is None
    with pytest.raises(DatasetError, match="cannot train on 'unlabeled': it needs labeled images"):
        train(ws, "unlabeled", "supervised", run="never", epochs=1)
    assert not ws.run_dir("never").exists() and ws.runs() == []


def test_the_workflow_can_let_the_tool_choose_the_recipe_and_resumes_the_search(ws, tiny, monkeypatch) -> None:
    import app.recipes
    from app.recipes import Recipe

    monkeypatch.setattr(app.recipes, "RECIPES_2D", (Recipe("a", "resnet10t", 32, "none"),
                                                    Recipe("b", "resnet10t", 32, "none", lr=1e-3)))
    options = WorkflowOptions(dataset="demo", fast=True, recipe_minutes=0.3)
    started, asked = [], []

    def on_step(number: int, step: str, status: str) -> None:
        if step == "supervised" and status == "running":
            started.append(step)

    def stop_at_the_second_ask() -> bool:  # asked after each screening epoch but a run's last, and between steps
        if started:
            asked.append(1)
        return len(asked) >= 2

    state = run_workflow(ws, options, on_step=on_step, should_stop=stop_at_the_second_ask)
    record = state["steps"]["supervised"]
    assert state["stopped"] == "supervised" and record["status"] == "stopped" and record["screening"]
    assert "while screening recipes" in stop_summary(state)
    cut = ws.run_metadata(record["screening"])  # the screening run that was stopped
    assert cut["status"] == "stopped" and cut["trial_of"] == record["run"]
    on_step, should_stop = _stop_when("vae")
    again = run_workflow(ws, options, on_step=on_step, should_stop=should_stop)
    done = again["steps"]["supervised"]
    assert done["status"] == "done" and done["recipe"] in ("a", "b") and done["run"] == record["run"]
    meta = ws.run_metadata(done["run"])
    assert meta["recipe"]["name"] == done["recipe"] and [t["recipe"] for t in meta["trials"]] == ["a", "b"]
    went_on = ws.run_metadata(record["screening"])
    assert went_on["status"] == "complete" and went_on["history"][: len(cut["history"])] == cut["history"], \
        "the stopped screening run resumed from its epoch"
    assert workflow_standing(ws, WorkflowOptions(dataset="demo", fast=True)) == "other options"

    # The search chose 32 px; the VAE keeps its own 64 px (a multiple: the hybrid averages its
    # input down for the classifier), and the hybrid is fitted (it failed on the two sizes
    # before); stopped once the hybrid is fitted.
    monkeypatch.setitem(workflow.FAST, "vae", {"image_size": 64, "epochs": 2, "batch_size": 16})
    on_step, should_stop = _stop_when("evaluate")
    last = run_workflow(ws, options, on_step=on_step, should_stop=should_stop)
    assert last["steps"]["vae"]["status"] == last["steps"]["hybrid"]["status"] == "done", last
    vae_size = ws.run_metadata(last["steps"]["vae"]["run"])["config"]["image_size"]
    assert (meta["config"]["image_size"], vae_size) == (32, 64)
    assert ws.run_metadata(last["steps"]["hybrid"]["run"])["config"]["image_size"] == 64


def test_the_vae_keeps_its_own_size_where_the_classifiers_divides_it(ws, monkeypatch) -> None:
    for classifier, own, expected in ((32, 64, 64), (64, 64, 64), (48, 64, 48), (128, 64, 128)):
        monkeypatch.setattr(type(ws), "run_metadata", lambda self, run, c=classifier: {"config": {"image_size": c}})
        assert workflow._vae_size(ws, "d", {"supervised": {"run": "r"}}, own) == expected, (classifier, own)


def test_full_runs_choose_the_classifiers_recipe_and_fast_runs_keep_the_fixed_one() -> None:
    assert WorkflowOptions(dataset="d").recipe_minutes == workflow.DEFAULT_RECIPE_MINUTES
    assert WorkflowOptions(dataset="d", fast=True).recipe_minutes == 0
    assert WorkflowOptions(dataset="d", recipe_minutes=0).recipe_minutes == 0, "asked for: the fixed recipe"
    assert WorkflowOptions(dataset="d", fast=True, recipe_minutes=3).recipe_minutes == 3
