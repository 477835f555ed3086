"""Organize: scan a folder, review and correct, statistics, balancing, merging, export."""

from __future__ import annotations

from pathlib import Path

import questionary
from rich.table import Table

from app.organize.dataset_tools import (
    BALANCE_METHODS, dataset_statistics, export_dataset, hold_out_class, merge_datasets, set_balance,
)
from app.names import problem_with, suggest_name
from app.organize.organizer import organize, trained_runs
from app.organize.review import FIELDS, add_correction, review_groups
from app.state import Kind, read_state
from menus import render
from menus.ask import ask_choice, ask_confirm, ask_path, ask_text
from menus.console import as_job, console, progress_bars


def organize_menu(s) -> None:
    has_data = bool(s.ws.organized_datasets())
    reason = None if has_data else "Organize a dataset first"
    action = ask_choice("Organize", [
        questionary.Choice("Organize a collected dataset or a folder", value=scan_screen),
        questionary.Choice("Cut 3D cubes around findings in volumes", value=cubes_screen),
        questionary.Choice("Review and correct what was detected", value=review_screen, disabled=reason),
        questionary.Choice("Statistics (table and plot)", value=statistics_screen, disabled=reason),
        questionary.Choice("Class balancing for training", value=balance_screen, disabled=reason),
        questionary.Choice("Merge datasets", value=merge_screen,
                           disabled=None if len(s.ws.organized_datasets()) > 1 else "Organize two datasets first"),
        questionary.Choice("Hold out an anomaly class (open-set test)", value=holdout_screen, disabled=reason),
        questionary.Choice("Export a dataset (CSV, JSON, or a de-identified copy)", value=export_screen,
                           disabled=reason),
    ])
    if action:
        action(s)


def _pick_dataset(s, message: str) -> str | None:
    return ask_choice(message, [questionary.Choice(d, value=d) for d in s.ws.organized_datasets()])


def scan_screen(s) -> None:
    choices = [questionary.Choice(f"{n} ({e.get('files', '?')} files)", value=n) for n, e in s.ws.raw_datasets().items()]
    choices.append(questionary.Choice("Another folder...", value="__folder__"))
    source = ask_choice("Organize which data?", choices)
    if source is None:
        return
    if source == "__folder__":
        source = ask_path("Folder to organize:")
        if not source:
            return
    default = source if source in s.ws.raw_datasets() else suggest_name(Path(source).name)
    name = ask_text("Name of the organized dataset:", default=default,
                    validate=lambda t: problem_with(t.strip()) is None or f"Not a valid name: {problem_with(t.strip())}")
    if not name:
        return
    name = name.strip()
    runs = trained_runs(s.ws, name) if name in s.ws.organized_datasets() else []
    if runs and not ask_confirm(f"{name!r} exists and {len(runs)} run(s) were trained on it ({', '.join(runs[:3])}). "
                                "Replace it? (the runs keep their models; evaluating them will say the data changed)",
                                default=False):
        return
    with progress_bars() as bar:
        result = as_job("organize", bar, lambda job: organize(
            s.ws, source, name, seed=s.settings.seed, workers=s.settings.workers, replace=bool(runs),
            progress=job.progress))
    console.print(render.metrics_table(f"Organized {result.name}", {
        "items": result.items, "labeled": result.labeled, "unlabeled": result.unlabeled,
        "skipped files (see scan_report.json)": result.skipped, **{f"class {k}": v for k, v in result.classes.items()},
        **{f"split {k}": v for k, v in result.split_counts.items()},
    }))
    if result.skip_reasons or result.duplicates:
        console.print(render.metrics_table("Scan report (details in scan_report.json)", {
            **{f"skipped: {reason}": n for reason, n in result.skip_reasons.items()},
            "groups of identical files": result.duplicates,
        }))
    for line in render.label_lines(result):
        console.print(line)
    console.print(f"Files written to {result.path}. Review them: Organize -> Review and correct.")


def review_screen(s) -> None:
    dataset = _pick_dataset(s, "Review which dataset?")
    if dataset is None:
        return
    while True:
        groups = review_groups(s.ws, dataset)
        base, shown = render.review_places([g.folder for g in groups])
        wide = console.width >= 120  # the rules that fired fit beside the rest only on a wide terminal
        table = Table(title=f"Detected in {dataset}, per folder under {base}", title_justify="left")
        for col in ("#", "folder", "items", "modality", "region", "label"):
            table.add_column(col, overflow="fold")
        if wide:
            table.add_column("rules (modality / region / label)", overflow="fold")
        table.add_column("conf.")
        for k, (g, place) in enumerate(zip(groups, shown), 1):
            style = "yellow" if g.confidence < 0.5 or g.conflicts else None
            label = g.label + (f" ({g.conflicts} conflicting)" if g.conflicts else "")
            table.add_row(str(k), place, str(g.items), g.modality, g.region, label, *([g.rules] if wide else []),
                          f"{g.confidence:.2f}", style=style)
        console.print(table)
        if not wide:
            console.print(f"[dim]The rules that fired: a wider terminal, or `dataset review {dataset}`.[/]",
                          soft_wrap=False)
        if any(g.conflicts for g in groups):
            console.print("[yellow]Conflicting[/]: a label table and the class folder disagree on these items; they "
                          "are left unlabeled until you set their label here.", soft_wrap=False)
        folder = ask_choice("Correct which folder? (yellow: low confidence)",
                            [questionary.Choice(f"{k}. {place}", value=g.folder)
                             for k, (g, place) in enumerate(zip(groups, shown), 1)])
        if folder is None:
            return
        field = ask_choice("Which field?", [questionary.Choice(f, value=f) for f in FIELDS])
        if field is None:
            continue
        place = shown[[g.folder for g in groups].index(folder)]
        value = ask_text(f"New {field} for every item in {place}:", validate=lambda t: bool(t.strip()) or "Give a value")
        if not value:
            continue
        add_correction(s.ws, dataset, folder, field, value)
        meta = s.ws.dataset_metadata(dataset)
        with progress_bars() as bar:  # unchanged files come from the scan cache: quick
            as_job("organize", bar, lambda job: organize(  # the user's own correction
                s.ws, s.ws.private.source(meta["source_dataset"]), dataset, seed=meta.get("seed", 0),
                workers=s.settings.workers, replace=True, progress=job.progress))
        console.print(f"[green]Saved[/] and applied: {field} = {value} under {folder} (kept on every rescan).")


def statistics_screen(s) -> None:
    dataset = _pick_dataset(s, "Statistics of which dataset?")
    if dataset is None:
        return
    stats = dataset_statistics(s.ws, dataset)
    table = Table(title=f"{dataset}: {stats['items']} items, {stats['patients']} patients", title_justify="left")
    for col in ("class", "train", "val", "test"):
        table.add_column(col)
    for label, splits in stats["by_class_and_split"].items():
        table.add_row(label, *(str(splits[k]) for k in ("train", "val", "test")))
    console.print(table)
    console.print(render.metrics_table("By modality", stats["by_modality"]))
    console.print(render.metrics_table("By region", stats["by_region"]))
    console.print(f"Plot: {stats['plot']}")


def balance_screen(s) -> None:
    dataset = _pick_dataset(s, "Balance which dataset?")
    if dataset is None:
        return
    current = read_state(s.ws.organized_path(dataset) / "training_config.json", Kind.TRAINING_CONFIG).get("balance")
    method = ask_choice(f"Class balancing for training (now: {current})", [
        questionary.Choice("class weights in the loss (default)", value="class_weights"),
        questionary.Choice("oversample smaller classes", value="oversample"),
        questionary.Choice("undersample larger classes", value="undersample"),
        questionary.Choice("none", value="none"),
    ])
    if method in BALANCE_METHODS:
        set_balance(s.ws, dataset, method)
        console.print(f"Saved: {dataset} trains with {method}.")


def merge_screen(s) -> None:
    names = questionary.checkbox("Datasets to merge (space to tick):",
                                 choices=s.ws.organized_datasets()).ask()
    if not names:
        return
    name = ask_text("Name of the merged dataset:", validate=lambda t: bool(t.strip()) or "Give a name")
    if not name:
        return
    result = merge_datasets(s.ws, names, name.strip(), seed=s.settings.seed)
    console.print(f"[green]Merged[/] {', '.join(names)} into {result.name}: {result.items} items, splits {result.split_counts}.")


def cubes_screen(s) -> None:
    from app.cubes import build_cube_dataset

    folder = ask_path("Folder of volumes (NIfTI/MHA/NRRD files or DICOM series):")
    if not folder:
        return
    modality = ask_choice("Modality", [questionary.Choice("CT", value="CT"), questionary.Choice("MR", value="MR")])
    if modality is None:
        return
    points = ask_text("Annotation CSV (empty: use *_mask volumes beside each volume):", default="")
    name = ask_text("Name of the cube dataset:", default=f"{Path(folder).name}-cubes",
                    validate=lambda t: bool(t.strip()) or "Give a name")
    if points is None or name is None:
        return
    store = ask_choice("Store the cubes as", [
        questionary.Choice("one .npz file, read whole (small and medium datasets)", value="npz"),
        questionary.Choice("a chunked HDF5 store, read a batch at a time (larger than memory)", value="h5"),
    ])
    if store is None:
        return
    with progress_bars() as bar:
        result = as_job("cubes", bar, lambda job: build_cube_dataset(
            s.ws, Path(folder), name.strip(), modality, store=store, progress=job.progress,
            annotations=Path(points).expanduser() if points.strip() else None))
    classes = ", ".join(f"{name} {n}" for name, n in result.classes.items())
    splits = ", ".join(f"{name} {n}" for name, n in result.split_counts.items())
    console.print(f"[green]{result.name}[/]: {result.items} cubes; classes: {classes}; splits: {splits}. "
                  "Train it with the 3D CNN phase.")


def holdout_screen(s) -> None:
    dataset = _pick_dataset(s, "Dataset")
    if dataset is None:
        return
    anomalies = [c for c in s.ws.dataset_metadata(dataset)["classes"] if c != "normal"]
    label = ask_choice("Which class should stay unknown in training?", [questionary.Choice(c, value=c) for c in anomalies])
    if label is None:
        return
    name = ask_text("Name of the copy:", default=f"{dataset}-without-{label}",
                    validate=lambda t: bool(t.strip()) or "Give a name")
    if name is None:
        return
    result = hold_out_class(s.ws, dataset, label, name.strip())
    console.print(f"[green]{result.name}[/]: {label!r} is in the test split only; train supervised, VAE and "
                  "hybrid on it and compare how each scores it (benchmarks/open_set.py does all of this).")


def export_screen(s) -> None:
    dataset = _pick_dataset(s, "Export which dataset?")
    if dataset is None:
        return
    fmt = ask_choice("Format", [
        questionary.Choice("CSV (the rows, by item id)", value="csv"),
        questionary.Choice("JSON (the rows and the dataset's metadata)", value="json"),
        questionary.Choice("A de-identified copy to share (images and tables; DICOM per PS3.15 Annex E)",
                           value="deidentify"),
    ])
    if fmt is None:
        return
    if fmt == "deidentify":
        from app.organize.share import export_deidentified

        target = ask_text("Write into the new folder:", default=str(s.ws.data_dir / "exports" / f"{dataset}-shared"))
        if target:
            with progress_bars() as bar:
                result = as_job("share", bar, lambda job: export_deidentified(s.ws, dataset, Path(target),
                                                                             progress=job.progress))
            console.print(render.share_line(result))
        return
    default = str(s.ws.data_dir / "exports" / f"{dataset}.{fmt}")
    target = ask_text("Write to:", default=default)
    if target:
        console.print(f"Written: {export_dataset(s.ws, dataset, fmt, Path(target).expanduser())}")
