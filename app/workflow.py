"""The one-click workflow: collect -> organize -> train all phases -> evaluate -> export.

Progress is saved after every step in ``data/workflows/<dataset>.json``. Run it
again after an interruption (Ctrl-C, kill -9, power cut) and it skips finished
steps and resumes an interrupted training run from its last epoch. Asked to stop
(``should_stop``, the menus' first Ctrl-C), a training step finishes its epoch and
the workflow ends there, its step marked ``stopped``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from app.collectors import collect
from core.errors import DatasetError, StateError
from app.evaluate import evaluate_run
from app.bundle import export_bundle
from app.organize.organizer import organize
from app.progress import Progress
from app.state import Kind, read_state, read_state_or, write_state
from app.training import new_run_name, train
from app.workspace import Workspace, now_iso

log = logging.getLogger(__name__)

STEPS = ("collect", "organize", "supervised", "vae", "hybrid", "evaluate", "export")
TITLES = {
    "collect": "Collect data", "organize": "Organize dataset", "supervised": "Train supervised classifier",
    "vae": "Train VAE (normality)", "hybrid": "Fit hybrid ensemble", "evaluate": "Evaluate on the test split",
    "export": "Export ONNX bundles",
}
DEMO_SCALE = 3

# Training settings. --fast: small images and few epochs (3 to 7 minutes on 2 CPU cores).
# The fast classifier is ResNet-10-T: trained from scratch for 15 epochs at 64 px it reached
# test macro AUC 1.000 / 0.998 (seeds 0 / 1) with every class found and calibrated ECE
# 0.04 / 0.06, where EfficientNet-B0 reached 0.861, never predicted 'normal' and its
# calibration failed (session 15, docs/benchmarks.md).
FAST = {"supervised": {"image_size": 64, "epochs": 15, "batch_size": 16, "backbone": "resnet10t"},
        "vae": {"image_size": 64, "epochs": 15, "batch_size": 16}}
# The VAE's 64 px in both: on the demo its anomaly AUROC was 0.951 at 64 px (two full runs),
# 0.891 at 32 and 0.847 at the dataset's 128 (one each, session 24; docs/benchmarks.md).
FULL = {"supervised": {"epochs": 30, "batch_size": 16}, "vae": {"image_size": 64, "epochs": 40, "batch_size": 16}}
# Full runs let the tool choose the classifier's recipe on validation (app/recipes.py) within
# this many minutes: FULL's fixed recipe has no time limit, and on a CPU 30 epochs of
# EfficientNet-B0 at 128 px on a few thousand images take hours. Fast runs keep FAST.
DEFAULT_RECIPE_MINUTES = 10.0


@dataclass
class WorkflowOptions:
    dataset: str = "demo"
    source: str | None = None  # a local folder; None: the demo collector (or an already collected dataset)
    fast: bool = False
    seed: int = 0
    # > 0: the supervised step is the recipe search (app/recipes.py) for this long; 0: the fixed
    # recipe; None: DEFAULT_RECIPE_MINUTES in full runs, the fixed FAST recipe in fast ones
    recipe_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.recipe_minutes is None:
            self.recipe_minutes = 0.0 if self.fast else DEFAULT_RECIPE_MINUTES


def workflow_state(ws: Workspace, dataset: str) -> dict[str, Any]:
    return read_state_or(ws.workflow_path(dataset), Kind.WORKFLOW, {"dataset": dataset, "steps": {}})


def workflow_standing(ws: Workspace, options: WorkflowOptions) -> str:
    """Where the saved progress of ``options.dataset`` stands for these options: "new" (none, or
    a finished one with other options), "resume" (unfinished, same options), "other options"
    (unfinished, started with others: only a restart runs these) or "finished"."""
    state = workflow_state(ws, options.dataset)
    same = state.get("options") == _stored(ws, options)
    if all(state["steps"].get(step, {}).get("status") == "done" for step in STEPS):
        return "finished" if same else "new"  # other options after a finished one: a new workflow
    if not state["steps"]:
        return "new"
    return "resume" if same else "other options"


def run_workflow(
    ws: Workspace,
    options: WorkflowOptions,
    *,
    restart: bool = False,
    progress: Progress | None = None,
    on_step: Callable[[int, str, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every step; returns the final workflow state (with ``stopped``, the
    step it stopped at, when ``should_stop()`` turned true: run it again to resume).

    ``on_step(number, step, status)`` is called as each step starts ("running"),
    is skipped ("done before") or ends ("done", or "stopped").

    Raises:
        StateError: the saved progress was made with other options (say which,
            and how to restart).
        WorkbenchError: any step's own error, after its progress is saved.
    """
    with ws.lock("workflow", options.dataset):
        return _run_workflow(ws, options, restart, progress, on_step, should_stop)


def _run_workflow(
    ws: Workspace, options: WorkflowOptions, restart: bool, progress: Progress | None,
    on_step: Callable[[int, str, str], None] | None, should_stop: Callable[[], bool] | None,
) -> dict[str, Any]:
    path = ws.workflow_path(options.dataset)
    state = {"dataset": options.dataset, "steps": {}} if restart else workflow_state(ws, options.dataset)
    saved, given = state.get("options"), _stored(ws, options)
    if saved and saved != given and not all(s.get("status") == "done" for s in state["steps"].values()):
        raise StateError(
            f"An unfinished workflow for {options.dataset!r} was started with other options "
            f"({_differences(saved, given)}). Run it again with those options to resume, or restart it (--restart)."
        )
    if saved != given or restart:
        state = {"dataset": options.dataset, "steps": {}, "options": given, "started": now_iso()}
    state.pop("stopped", None)
    steps: dict[str, Any] = state["steps"]
    for number, step in enumerate(STEPS, 1):
        record = steps.get(step, {})
        if record.get("status") == "done":
            if on_step:
                on_step(number, step, "done before")
            continue
        if on_step:
            on_step(number, step, "running")
        record = {**record, "status": "running", "started": now_iso()}
        if step in ("supervised", "vae", "hybrid"):
            # The run's name is saved before training starts, so a rerun resumes it.
            record.setdefault("run", new_run_name(options.dataset, step))
        steps[step] = record
        write_state(path, Kind.WORKFLOW, state)
        try:
            result = _STEP_FUNCTIONS[step](ws, options, steps, progress, should_stop)
        except BaseException as err:  # the step's record says how it ended, never "running"
            ended = "stopped" if isinstance(err, KeyboardInterrupt) else "failed"
            steps[step] = {**record, "status": ended, "error": _why(err), "finished": now_iso()}
            write_state(path, Kind.WORKFLOW, state)
            raise
        status = "stopped" if result.pop("stopped", False) else "done"
        steps[step] = {**record, **result, "status": status, "finished": now_iso()}
        asked = status == "stopped" or (should_stop is not None and should_stop() and number < len(STEPS))
        if asked:  # a training step stopped after an epoch, or another step finished first
            state["stopped"] = step
        write_state(path, Kind.WORKFLOW, state)
        if on_step:
            on_step(number, step, status)
        if asked:
            return state
    state["finished"] = now_iso()
    write_state(path, Kind.WORKFLOW, state)
    return state


def stop_summary(state: dict[str, Any]) -> str | None:
    """What a workflow that was asked to stop did, and how to go on (None: it was not stopped)."""
    step = state.get("stopped")
    if not step:
        return None
    record = state["steps"].get(step, {})
    if record.get("status") == "stopped" and record.get("screening"):
        return (f"Stopped in '{TITLES[step]}' while screening recipes. Run the workflow again to go on from "
                "there (finished screening runs are kept).")
    if record.get("status") == "stopped":
        return (f"Stopped in '{TITLES[step]}' after epoch {record.get('epochs', '?')} of {record.get('planned', '?')}. "
                "Run the workflow again to resume from there.")
    return f"Stopped after '{TITLES[step]}'. Run the workflow again to go on from the next step."


def _why(err: BaseException) -> str:
    return "stopped by Ctrl-C" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {str(err)[:300]}"


def _stored(ws: Workspace, options: WorkflowOptions) -> dict[str, Any]:
    """The options as the state file keeps them: a source folder by its source id (app.private)."""
    from pathlib import Path

    stored = asdict(options)
    if not stored.get("recipe_minutes"):
        stored.pop("recipe_minutes")  # as versions before the option stored them: their workflows still resume
    if options.source:
        stored["source"] = ws.private.store_source(Path(options.source).expanduser())
    return stored


def _differences(saved: dict[str, Any], given: dict[str, Any]) -> str:
    """What differs between two stored option sets, as flags ("--seed 0 then, --seed 1 now";
    "--fast then, without --fast now")."""
    def value(options: dict[str, Any], key: str) -> Any:
        return options.get(key, 0 if key == "recipe_minutes" else None)  # stored only when not 0

    def said(key: str, v: Any) -> str:
        flag = f"--{key.replace('_', '-')}"
        if isinstance(v, bool):
            return flag if v else f"without {flag}"
        return f"{flag} {v:g}" if isinstance(v, float) else f"{flag} {v}"

    return "; ".join(f"{said(key, value(saved, key))} then, {said(key, value(given, key))} now"
                     for key in sorted(set(saved) | set(given)) if value(saved, key) != value(given, key))


def _collect(ws: Workspace, options: WorkflowOptions, steps: dict, progress: Progress | None,
             should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    if options.source:
        result = collect("local", ws, path=options.source, name=options.dataset, progress=progress)
    elif options.dataset in ws.raw_datasets():
        return {"note": "already collected", "files": ws.raw_datasets()[options.dataset].get("files", 0)}
    elif options.dataset == "demo":
        result = collect("demo", ws, name="demo", scale=DEMO_SCALE, seed=options.seed, progress=progress)
    else:
        raise DatasetError(
            f"No collected dataset named {options.dataset!r}. Give its folder (--source PATH), "
            "collect it first, or use --dataset demo."
        )
    return {"files": result.files}


def _organize(ws: Workspace, options: WorkflowOptions, steps: dict, progress: Progress | None,
              should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    # The workflow's dataset is its own: organizing it again (a restart) replaces it.
    result = organize(ws, options.dataset, options.dataset, seed=options.seed, replace=True, progress=progress)
    return {"items": result.items, "labeled": result.labeled, "classes": result.classes}


def _vae_size(ws: Workspace, dataset: str, steps: dict, own: int | None) -> int:
    """The VAE's image size: its own (FAST and FULL: 64 px; the dataset's where a recipe names
    none) where the classifier's divides it, since the hybrid averages the VAE's input down
    for the classifier; else the classifier's. A search may choose 32 px for the classifier,
    and a VAE at 32 px finds less (demo: anomaly AUROC 0.891 at 32 px, 0.951 at 64)."""
    classifier = int(ws.run_metadata(steps["supervised"]["run"])["config"]["image_size"])
    if own is None:
        own = int(read_state(ws.organized_path(dataset) / "training_config.json", Kind.TRAINING_CONFIG)["image_size"])
    return own if own >= classifier and own % classifier == 0 else classifier


def _no_normal(ws: Workspace, dataset: str) -> str:
    """Why the dataset cannot train the VAE and the hybrid ("" when it can): single-label
    classes none of which is normal (ISIC's benign and malignant, a MedMNIST file's codes)."""
    config = read_state(ws.organized_path(dataset) / "training_config.json", Kind.TRAINING_CONFIG)
    if config.get("findings") or config.get("normal_class") or "normal" in config.get("classes", []):
        return ""
    return (f"the dataset has no 'normal' class (its classes: {', '.join(config.get('classes', []))}): the VAE "
            "learns what normal images look like and the hybrid weighs the classifier against it, so the "
            "classifier is trained alone")


def _trainer(phase: str) -> Callable[..., dict[str, Any]]:
    def step(ws: Workspace, options: WorkflowOptions, steps: dict, progress: Progress | None,
             should_stop: Callable[[], bool] | None) -> dict[str, Any]:
        settings = dict((FAST if options.fast else FULL)[phase])
        if phase == "vae" and _no_normal(ws, options.dataset):
            return {"skipped": _no_normal(ws, options.dataset)}
        if phase == "vae":
            settings["image_size"] = _vae_size(ws, options.dataset, steps, settings.get("image_size"))
        result = train(ws, options.dataset, phase, run=steps[phase]["run"], seed=options.seed,
                       progress=progress, should_stop=should_stop, **settings)
        return {"epochs": result.epochs_done, "planned": settings["epochs"], "resumed_from": result.resumed_from,
                "stopped": result.status == "stopped"}

    return step


def _supervised(ws: Workspace, options: WorkflowOptions, steps: dict, progress: Progress | None,
                should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    """The fixed recipe (FAST or FULL), or with ``recipe_minutes`` the recipe search. A search
    resumes as its parts do: finished screening runs return at once, a stopped one goes on,
    and a final run that was stopped resumes with the recipe it was given."""
    if not options.recipe_minutes:
        return _trainer("supervised")(ws, options, steps, progress, should_stop)
    from app.recipes import search_and_train

    run = steps["supervised"]["run"]
    if (ws.run_dir(run) / "last.pt").exists():
        result = train(ws, options.dataset, "supervised", run=run, progress=progress, should_stop=should_stop)
    else:
        result, record = search_and_train(ws, options.dataset, options.recipe_minutes * 60, run=run,
                                          seed=options.seed, progress=progress, should_stop=should_stop)
        if record.get("stopped"):
            return {"epochs": 0, "planned": "?", "resumed_from": 0, "stopped": True, "screening": result.run}
    meta = ws.run_metadata(run)
    return {"epochs": result.epochs_done, "planned": meta["config"]["epochs"], "resumed_from": result.resumed_from,
            "stopped": result.status == "stopped", "recipe": (meta.get("recipe") or {}).get("name")}


def _hybrid(ws: Workspace, options: WorkflowOptions, steps: dict, progress: Progress | None,
            should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    if _no_normal(ws, options.dataset):
        return {"skipped": _no_normal(ws, options.dataset)}
    if ws.run_metadata(steps["supervised"]["run"]).get("config", {}).get("multilabel"):
        # Several findings per image: the classifier has no "normal" class for the hybrid to weigh.
        return {"skipped": "the dataset gives several findings per image, so its classifier gives each finding its "
                           "own probability and has no 'normal' class to weigh against the VAE"}
    result = train(ws, options.dataset, "hybrid", run=steps["hybrid"]["run"], seed=options.seed,
                   supervised_run=steps["supervised"]["run"], vae_run=steps["vae"]["run"], progress=progress)
    return {"weight": result.metrics.get("weight"), "val_auroc": result.metrics.get("val_auroc")}


def _runs(steps: dict) -> list[str]:
    """The runs the workflow trained (a skipped step's run was never made)."""
    return [steps[p]["run"] for p in ("supervised", "vae", "hybrid") if not steps[p].get("skipped")]


def _evaluate(ws: Workspace, options: WorkflowOptions, steps: dict, progress: Progress | None,
              should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    results = {}
    for run in _runs(steps):
        metrics = evaluate_run(ws, run, "test", progress).metrics
        results[run] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
    return {"metrics": results}


def _export(ws: Workspace, options: WorkflowOptions, steps: dict, progress: Progress | None,
            should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    exported = {}
    for run in _runs(steps):
        result = export_bundle(ws, run, progress=progress)
        exported[run] = {"path": ws.relative(result.path), "max_abs_diff": result.max_abs_diff}
    return {"exports": exported}


_STEP_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "collect": _collect, "organize": _organize, "supervised": _supervised,
    "vae": _trainer("vae"), "hybrid": _hybrid, "evaluate": _evaluate, "export": _export,
}
