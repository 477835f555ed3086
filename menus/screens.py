"""The submenus. Each asks, calls one app function, shows the result; errors go up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import questionary
from rich.markup import escape
from rich.markdown import Markdown
from rich.panel import Panel
from rich.padding import Padding

from app.evaluate import ensemble_partners, evaluate_ensemble, evaluate_run, is_classifier_run
from app.bundle import export_bundle
from app.laterality import flips_sentence
from core.errors import ExportError
from app.organize.organizer import MAX_WORKERS
from app.readiness import phase_problem
from app.training import resumable_runs, train
from app.workflow import (STEPS, TITLES, WorkflowOptions, run_workflow, stop_summary, workflow_standing,
                          workflow_state)
from app.verdict import Verdict, model_verdict
from app.workspace import Workspace
from menus import render
from menus.ask import ask_checkbox, ask_choice, ask_confirm, ask_int, ask_path, ask_text
from menus.stopping import clean_stop
from menus.console import as_job, console, progress_bars
from menus.settings import Settings


@dataclass
class Session:
    ws: Workspace
    settings: Settings
    debug: bool = False


# -- train ---------------------------------------------------------------------------------
# The Train menu names no phase: each declares its questions (models.configs.Question).
def train_menu(s: Session) -> None:
    from models import get_phase_class, list_phases

    datasets = s.ws.organized_datasets()
    dataset = ask_choice("Dataset", [questionary.Choice(d, value=d) for d in datasets])
    if dataset is None:
        return
    resumable = resumable_runs(s.ws, dataset)
    if resumable:
        run = ask_choice("Resume a stopped run, or train a new one?", [
            *[questionary.Choice(f"Resume {m['run']} (epoch {m.get('epoch') or 0} of {m['config'].get('epochs', '?')})",
                                 value=m) for m in resumable],
            questionary.Choice("Train a new run", value="new")])
        if run is None:
            return
        if run != "new":
            _train_with_progress(s, dataset, run["phase"], run=run["run"])
            return
    runs = {m["phase"]: m["run"] for m in reversed(s.ws.runs())
            if m["dataset"] == dataset and m["status"] == "complete" and not m.get("trial_of")}
    choices, reasons = [], []
    for spec in list_phases():
        missing = [c for c in spec.components if c not in runs]
        problem = phase_problem(s.ws, dataset, spec.name)
        short = spec.title.split(" (")[0]
        if missing:
            choices.append(questionary.Choice(short, value=spec.name, disabled=f"train {', '.join(missing)} first"))
        elif problem:  # the whole sentence above the list, wrapped; the entry only points to it
            reasons.append(f"[bold]{short}[/] {problem}")
            choices.append(questionary.Choice(short, value=spec.name, disabled="not on this dataset, see above"))
        else:
            choices.append(questionary.Choice(spec.title, value=spec.name))
    if reasons:
        console.print(f"Not possible on {dataset}:")
        for reason in reasons:
            console.print(Padding(reason, (0, 0, 0, 2)), soft_wrap=False)  # wrapped, not cut
    phase = ask_choice("Phase", choices)
    if phase is None:
        return
    cls = get_phase_class(phase)
    overrides: dict[str, Any] = {"seed": s.settings.seed}
    if cls.spec.searchable:
        how = ask_choice("Recipe (backbone, image size, augmentation, regularization)", [
            questionary.Choice("Let the tool choose (recommended): 4 recipes tried on validation", value="auto"),
            questionary.Choice("Set it myself", value="flags")])
        if how is None:
            return
        if how == "auto":
            minutes = ask_int("Minutes in all (screening takes about a third):", default=3 if s.settings.fast else 10,
                              low=1, high=24 * 60)
            if minutes is not None:
                _search_with_progress(s, dataset, minutes, **overrides)
            return
    overrides.update({f"{c}_run": runs[c] for c in cls.spec.components})
    asked = _asked_questions(s, dataset, cls)
    if asked is None:
        return
    _train_with_progress(s, dataset, phase, **{**overrides, **cls.menu_settings, **asked})


def _asked_questions(s: Session, dataset: str, cls: type) -> dict[str, Any] | None:
    """A phase's Train-menu questions in order (Phase.questions; a phase that declares none is
    asked one question per setting); the settings the answers make. None when the user backs out."""
    from models.configs import generated_questions

    facts = {"graded": _graded(s.ws, dataset)}
    questions = cls.questions if cls.questions is not None else generated_questions(cls.spec.name, cls.Config)
    chosen: dict[str, Any] = {}
    for question in questions:
        if question.when and not facts.get(question.when):
            continue
        offered = question.offered(cls.Config, s.settings.fast)
        if question.kind == "choice":
            answer = ask_choice(question.text, [questionary.Choice(label, value=value)
                                                for label, value in question.choices])
        elif question.kind == "confirm":
            answer = ask_confirm(question.text, default=bool(offered))
        elif question.kind == "int":
            answer = ask_int(question.text, default=int(offered or 0), low=question.low, high=question.high)
        elif question.kind == "float":
            text = ask_text(question.text, default="" if offered is None else f"{offered:g}",
                            validate=lambda t: _is_number(t) or "A number, e.g. 0.5")
            answer = None if text is None else float(text)
        else:
            answer = ask_text(question.text, default=str(offered or ""))
        if answer is None:
            return None
        chosen.update(question.answer(answer))
    return chosen


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _train_with_progress(s: Session, dataset: str, phase: str, run: str | None = None, **overrides: Any) -> None:
    console.print("Training: Ctrl-C stops after the current epoch (twice: at once); "
                  "Train -> Resume goes on from there.", soft_wrap=False)
    with clean_stop() as should_stop, progress_bars() as bar:
        result = as_job("train", bar, lambda job: train(
            s.ws, dataset, phase, run=run, progress=job.progress,
            should_stop=lambda: should_stop() or job.should_stop(), **overrides), graceful=True)
    if result.status == "stopped":
        console.print(f"[yellow]Stopped[/] run [bold]{result.run}[/] after epoch {result.epochs_done}. "
                      "Train -> Resume goes on from there.", soft_wrap=False)
    else:
        console.print(f"[green]Finished[/] run [bold]{result.run}[/] ({result.epochs_done} epochs).")
    if flips_sentence(s.ws.run_metadata(result.run).get("flips")):
        console.print(flips_sentence(s.ws.run_metadata(result.run).get("flips")), soft_wrap=False, markup=False)
    console.print(render.metrics_table("Validation", result.metrics))


def _graded(ws: Workspace, dataset: str) -> bool:
    from app.state import Kind, read_state_or

    return bool(read_state_or(ws.organized_path(dataset) / "training_config.json", Kind.TRAINING_CONFIG,
                              {}).get("ordinal"))


def _search_with_progress(s: Session, dataset: str, minutes: int, **overrides: Any) -> None:
    from app.recipes import search_and_train
    from app.training import new_run_name

    console.print(f"Screening recipes, then training the best for the rest of {minutes} minutes. Ctrl-C stops after "
                  "the current epoch (twice: at once).", soft_wrap=False)
    with clean_stop() as should_stop, progress_bars() as bar:
        result, record = as_job("train", bar, lambda job: search_and_train(
            s.ws, dataset, minutes * 60.0, run=new_run_name(dataset, "supervised"), progress=job.progress,
            should_stop=lambda: should_stop() or job.should_stop(), **overrides), graceful=True)
    console.print(render.recipe_summary(record, result, s.ws.run_metadata(result.run).get("flips")), soft_wrap=False,
                  markup=False)
    if not record.get("stopped"):
        console.print(render.metrics_table("Validation", result.metrics))


def _pick_run(s: Session, message: str) -> str | None:
    runs = [m for m in s.ws.runs() if m["status"] in ("complete", "stopped")]
    return ask_choice(message, [questionary.Choice(f"{m['run']}  ({m['phase']}, {m['dataset']})", value=m["run"]) for m in runs])


# -- evaluate ------------------------------------------------------------------------------
def evaluate_menu(s: Session) -> None:
    run = _pick_run(s, "Evaluate which run?")
    if run is None:
        return
    partners, others = ensemble_partners(s.ws, run), []
    if partners:
        others = ask_checkbox("Average with other runs of this dataset (an ensemble, e.g. other seeds)?",
                              [questionary.Choice(name, value=name) for name in partners])
        if others is None:
            return
    tta = False
    if is_classifier_run(s.ws.run_metadata(run)):
        tta = ask_confirm("Test-time augmentation: average each prediction with the mirrored image's? "
                          "(twice the time; it often helps a little)", default=False)
        if tta is None:
            return
    if others:
        console.print("Averaging the runs' calibrated probabilities (shown, nothing written)...")
        metrics = evaluate_ensemble(s.ws, [run, *others], "test", tta=tta)
        show_evaluation(metrics, s.ws.run_metadata(run).get("classes", []), " + ".join(metrics["runs"]))
        return
    with progress_bars() as bar:
        result = as_job("evaluate", bar, lambda job: evaluate_run(s.ws, run, "test", progress=job.progress, tta=tta))
    show_evaluation(result.metrics, s.ws.run_metadata(run).get("classes", []), result.run)
    console.print(f"Report: {result.report}")
    for plot in result.plots:
        console.print(f"Plot: {plot}")


def show_evaluation(metrics: dict[str, Any], classes: list[str], run: str) -> None:
    console.print(render.metrics_table(f"{run}: test split", metrics))
    if "confusion_matrix" in metrics:
        console.print(render.confusion_table(metrics["confusion_matrix"], classes))
    if metrics.get("verdict"):
        show_verdict(run, Verdict(metrics["verdict"]["level"], metrics["verdict"]["reasons"]))


def show_verdict(run: str, verdict: Verdict) -> None:
    """How far to trust a model, in one line (docs: Reading the verdicts)."""
    console.print(f"Verdict on {escape(run)}: {render.verdict_text(verdict)}")


# -- export and predict ----------------------------------------------------------------------
def export_predict_menu(s: Session) -> None:
    action = ask_choice("Export & predict", [
        questionary.Choice("Export a run as an ONNX bundle", value=export_menu),
        questionary.Choice("Predict on new images (a file, a DICOM series or a folder)", value=predict_menu),
    ])
    if action is not None:
        action(s)


def predict_menu(s: Session) -> None:
    from app.predict import candidate_runs, predict

    path = ask_path("Image file or folder:", files=True)
    if not path:
        return
    runs = candidate_runs(s.ws)
    run = ask_choice("Which model?", [
        questionary.Choice("Choose for each image by its modality and region (router)", value="__auto__"),
        *[questionary.Choice(r, value=r) for r in runs],
    ])
    if run is None:
        return
    names = ask_confirm("Show the files' own names too? They can identify patients; without them items are "
                        "named by item id.", default=False)
    if names is None:
        return
    with progress_bars() as bar:
        result = as_job("predict", bar, lambda job: predict(
            s.ws, Path(path), run=None if run == "__auto__" else run, show_names=names, progress=job.progress))
    console.print(render.predictions_table(result.predictions))
    for used, text in result.verdicts.items():
        console.print(f"Model {escape(used)}: {escape(text)}")
    if result.outside:
        console.print(render.outside_line(result.outside, len(result.predictions), False))
    if result.holds_names:
        console.print(render.holds_names_line(result.folder))
    console.print(f"Saved: {result.csv}, {result.json}" + "".join(f", {p}" for p in result.overlays))


def export_menu(s: Session) -> None:
    run = _pick_run(s, "Export which run to ONNX?")
    if run is None:
        return
    int8 = ask_confirm("Also an INT8 copy (faster on CPU; its metric change on validation is measured)?",
                       default=False)
    if int8 is None:
        return
    try:
        with progress_bars() as bar:
            result = as_job("export", bar, lambda job: export_bundle(s.ws, run, int8=int8, progress=job.progress))
    except ExportError as err:
        if not int8 or "INT8 lowers" not in str(err):
            raise
        console.print(f"[yellow]{str(err).split(': nothing was exported')[0]}.[/]")
        if not ask_confirm("Export the INT8 copy anyway (the drop is written in the model card)?", default=False):
            return
        with progress_bars() as bar:
            result = as_job("export", bar, lambda job: export_bundle(s.ws, run, int8=int8, accept_int8_drop=True,
                                                                     progress=job.progress))
    console.print(f"[green]Exported[/] bundle {result.path}\n"
                  f"  ONNX Runtime vs PyTorch, max abs difference: {result.max_abs_diff:.2e} (limit 1e-4)\n"
                  f"  model card: {result.path / 'metadata.json'}; README: {result.path / 'README.md'}\n"
                  f"  signed: {result.path / 'signature.json'} (public key {result.path / 'signing_key.pub.pem'})")
    if result.int8:
        q = result.int8
        console.print(f"  INT8: {q['metric']} {q['fp32']:.4f} -> {q['int8']:.4f} ({q['change']:+.4f})")


# -- workflow ------------------------------------------------------------------------------
def workflow_menu(s: Session) -> None:
    datasets = sorted(set(s.ws.raw_datasets()) | {"demo"})
    choices = [questionary.Choice(d + (" (built-in demo data)" if d == "demo" else ""), value=d) for d in datasets]
    choices.append(questionary.Choice("A local folder...", value="__folder__"))
    dataset = ask_choice("Run the whole workflow on", choices)
    if dataset is None:
        return
    source = None
    if dataset == "__folder__":
        source = ask_path("Folder with the images:")
        if not source:
            return
        dataset = ask_text("Name for this dataset:", validate=lambda t: bool(t.strip()) or "Give a name")
        if not dataset:
            return
    fast = ask_confirm("Fast mode (small images, few epochs: 3 to 7 minutes on 2 cores)?", default=s.settings.fast)
    if fast is None:
        return
    options = WorkflowOptions(dataset=dataset.strip(), source=source, fast=fast, seed=s.settings.seed,
                              recipe_minutes=0 if fast else s.settings.recipe_minutes)
    restart = _resume_or_restart(s.ws, options)
    if restart is None:
        return
    console.print("Ctrl-C stops after the current epoch (twice: at once); "
                  "running the workflow again resumes it.", soft_wrap=False)
    final = run_workflow_with_progress(s.ws, options, restart=restart)
    console.print(render.workflow_table(final))
    show_workflow_results(final, s.ws)


def _resume_or_restart(ws: Workspace, options: WorkflowOptions) -> bool | None:
    """Ask how to go on from the saved progress: False resumes, True restarts, None goes back."""
    standing = workflow_standing(ws, options)
    if standing == "new":
        return False if ask_confirm("Start (finished steps are skipped, an interrupted run resumes)?") else None
    console.print(render.workflow_table(workflow_state(ws, options.dataset)))
    restart = questionary.Choice("Restart from the beginning (the runs made so far are kept)", value=True)
    if standing == "other options":
        console.print("[yellow]This workflow was started with other options[/] (another folder, fast mode, "
                      "seed or recipe minutes) and is unfinished. It can be restarted with these.", soft_wrap=False)
        return ask_choice("How to go on?", [restart])
    first = (questionary.Choice("Resume: skip the finished steps, go on from the last epoch", value=False)
             if standing == "resume" else questionary.Choice("Show its results again (nothing is retrained)", value=False))
    return ask_choice("How to go on?", [first, restart])


def run_workflow_with_progress(ws: Workspace, options: WorkflowOptions, restart: bool = False) -> dict[str, Any]:
    def on_step(number: int, step: str, status: str) -> None:
        if status == "running":
            console.rule(f"Step {number}/{len(STEPS)}: {TITLES[step]}")
        elif status == "done before":
            console.print(f"[dim]Step {number}/{len(STEPS)}: {TITLES[step]}: done before, skipped[/]")

    with clean_stop() as should_stop, progress_bars() as bar:
        final = as_job("workflow", bar, lambda job: run_workflow(
            ws, options, restart=restart, progress=job.progress, on_step=on_step,
            should_stop=lambda: should_stop() or job.should_stop()), graceful=True)
    summary = stop_summary(final)
    if summary:
        console.print(f"[yellow]{summary}[/]", soft_wrap=False)
    return final


def show_workflow_results(state: dict[str, Any], ws: Workspace | None = None) -> None:
    for step, record in state["steps"].items():  # a step this dataset cannot take (a hybrid of findings)
        if record.get("skipped"):
            console.print(f"[yellow]{TITLES[step]}: skipped: {escape(record['skipped'])}.[/]")
    for run, metrics in state["steps"].get("evaluate", {}).get("metrics", {}).items():
        console.print(render.metrics_table(f"{run}: test split", metrics))
    if ws is not None:  # the verdicts last: what to trust of all the above
        for run in state["steps"].get("evaluate", {}).get("metrics", {}):
            show_verdict(run, model_verdict(ws.run_metadata(run)))
    for run, info in state["steps"].get("export", {}).get("exports", {}).items():
        console.print(f"ONNX bundle: {info['path']} (max abs difference to PyTorch {info['max_abs_diff']:.1e})")


# -- settings and help ---------------------------------------------------------------------
def settings_menu(s: Session) -> None:
    console.print(f"Workspace: [bold]{s.ws.root}[/] (change with --workspace DIR or MEDANOMALY_WORKSPACE)")
    key = ask_choice("Change which setting?", [
        *[questionary.Choice(f"{k} = {v}", value=k) for k, v in s.settings.items().items()],
        questionary.Choice("Privacy audit: look for patient identifiers in the workspace or a folder",
                           value="__audit__"),
        questionary.Choice(f"Serve the REST API on this machine (port {API_PORT}; Ctrl-C stops)", value="__serve__"),
        questionary.Choice("Back up the workspace, or restore it from a backup", value="__backup__"),
    ])
    if key is None:
        return
    if key == "__backup__":
        backup_menu(s)
        return
    if key == "__audit__":
        privacy_audit(s)
        return
    if key == "__serve__":
        serve_api(s)
        return
    current = getattr(s.settings, key)
    if isinstance(current, bool):
        value = ask_confirm(f"{key}?", default=current)
    else:
        value = ask_int(f"{key}:", default=current, low=0 if key in ("seed", "recipe_minutes") else 1,
                        high=MAX_WORKERS if key == "workers" else 10**6)
    if value is None:
        return
    setattr(s.settings, key, value)
    s.settings.save(s.ws)
    console.print(f"Saved: {key} = {value}")


API_PORT = 8765


def serve_api(s: Session, port: int | None = None) -> None:
    """The REST API on 127.0.0.1 until Ctrl-C, then back to the menu (main.py serve is the same)."""
    from web.server import check_port, serve

    port = port or API_PORT
    check_port("127.0.0.1", port)
    console.print(f"Serving the API on http://127.0.0.1:{port}/api/v1 (this machine only; its schema is readable "
                  f"at /api/v1/docs). Ctrl-C stops it and comes back here.", soft_wrap=False)
    serve(s.ws, "127.0.0.1", port)
    console.print("The API server stopped.")


def backup_menu(s: Session) -> None:
    """Back up (a dated, signed archive with SHA-256 hashes) or restore (every hash checked first)."""
    from app import backup as backups

    found = backups.list_backups(s.ws)
    console.print(render.backups_table(found))
    choices = [questionary.Choice("Back up now (state, keys, runs, bundles, organized datasets)", value="backup"),
               questionary.Choice("Back up now, with the raw data (can identify patients)", value="raw")]
    choices += [questionary.Choice(f"Restore {entry['name']}", value=entry["name"])
                for entry in found if "problem" not in entry]
    chosen = ask_choice("Backup:", choices)
    if chosen is None:
        return
    with progress_bars() as bar:
        if chosen in ("backup", "raw"):
            made = as_job("backup", bar, lambda job: backups.backup(s.ws, raw=chosen == "raw", progress=job.progress))
            message = render.backup_line(made)
        else:
            if not ask_confirm(f"Replace this workspace's state, runs, bundles and datasets with {chosen}? What is "
                               "replaced is moved to backups/replaced-..., not deleted.", default=False):
                return
            archive = backups.backup_path(s.ws, chosen)
            done = as_job("restore", bar, lambda job: backups.restore(s.ws, archive, progress=job.progress))
            message = render.restore_line(done)
    console.print(message)


def privacy_audit(s: Session) -> None:
    from app.audit import audit_workspace

    where = ask_path("Audit which folder (a dataset export, a bundle)? Leave empty for the workspace:",
                     empty_ok=True)
    if where is None:
        return
    result = audit_workspace(s.ws, Path(where) if where else None)
    for line in render.audit_lines(result):
        console.print(line)


HELP = """\
# MedAnomaly Workbench

Work from top to bottom: **Collect** data, **Organize** it (modality, region, label,
patient-level splits), **Train** phases, **Evaluate & explain**, **Export & predict**.
**One-click workflow** runs every step; run it again after an interruption and it resumes.

Arrow keys move, Enter chooses, Ctrl-C or Esc goes back. Every action has a command-line twin:
`python main.py --help`. The user guide is `docs/user_guide.md`.
"""


def help_menu(s: Session) -> None:
    console.print(Panel(Markdown(HELP), title="Help"), soft_wrap=False)  # wrapped inside the frame, not cut
