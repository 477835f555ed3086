"""Turn app results (plain data) into rich tables."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from core.metrics import metric_label
from app.laterality import flips_sentence
from app.status import WorkspaceStatus


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"  # "test-time augmentation (mirror): no", not "False"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def status_tables(status: WorkspaceStatus) -> list[Table | Text]:
    """The datasets and runs tables; a line each instead where there is nothing yet (an
    empty table at 80 x 24 pushes the menu's header off the screen)."""
    tables: list[Table | Text] = []
    # Sized for an 80-column terminal: no inner rules, figures never wrapped, and the names
    # (which commands need) folded rather than cut.
    data = Table(title="Datasets (files collected, items organized)", title_justify="left", box=box.SIMPLE_HEAD,
                 show_edge=False, padding=(0, 1), pad_edge=False, collapse_padding=True)
    data.add_column("name", overflow="fold", ratio=2)
    for col in ("files", "items", "labeled"):
        data.add_column(col, justify="right", no_wrap=True)
    data.add_column("classes", ratio=3)
    data.add_column("train/val/test", no_wrap=True)
    names = sorted(set(status.collected) | set(status.organized))
    for name in names:
        raw, org = status.collected.get(name, {}), status.organized.get(name, {})
        splits = org.get("by_split", {})
        data.add_row(name, _num(raw.get("files", "-")), _num(org.get("items", "-")), _num(org.get("labeled", "-")),
                     escape(", ".join(org.get("classes", []))) or "-",  # a folder's name, as it was written
                     "/".join(str(splits.get(s, 0)) for s in ("train", "val", "test")) if splits else "-")
    tables.append(data if names else Text("Datasets: none yet. Collect the demo data or a folder to begin."))
    runs = Table(title="Training runs (figures on the test split)", title_justify="left", box=box.SIMPLE_HEAD,
                 show_edge=False, padding=(0, 1), pad_edge=False, collapse_padding=True)
    # Folded, never cut: a run's name is what `evaluate RUN` and `export RUN` need.
    runs.add_column("run", overflow="fold")
    for col in ("phase", "status"):
        runs.add_column(col, no_wrap=True)
    for col in ("epochs", "AUROC", "bal. acc."):
        runs.add_column(col, justify="right", no_wrap=True)
    runs.add_column("verdict", no_wrap=True)  # the level; its reasons go under the table, whole
    runs.add_column("ONNX", no_wrap=True)
    notes = []
    for run in status.runs[:8]:
        test, verdict = run["test"], run["verdict"]
        evaluated = verdict.level != "unknown"
        runs.add_row(run["run"], run["phase"], run["status"], _num(run["epochs"]),
                     _num(test.get("anomaly_auroc", test.get("roc_auc_ovr", "-"))),
                     _num(test.get("balanced_accuracy", "-")),
                     f"[{VERDICT_STYLE.get(verdict.level, '')}]{escape(verdict.level if evaluated else '-')}[/]",
                     "yes" if run["exported"] else "-")
        if verdict.reasons and evaluated:
            notes.append(f"{escape(run['run'])}: {verdict_text(verdict)}")
    if any(run["verdict"].level == "unknown" for run in status.runs[:8]):
        notes.insert(0, "verdict -: not evaluated on the test split yet (Evaluate gives its figures and verdict)")
    if status.trials:
        notes.append(f"and {status.trials} hidden run(s) of recipe searches (trials, members), not listed "
                     "(checkpoints/<run>-trialN, -memberN)")
    if notes:
        runs.caption, runs.caption_justify = "\n".join(notes), "left"
    tables.append(runs if status.runs else Text("Training runs: none yet."))
    return tables


def metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    several = "exact_match" in metrics  # findings, each its own probability: the figures are means
    for key, value in metrics.items():
        if not isinstance(value, (list, dict)):
            table.add_row(metric_label(key, several), _num(value))
    return table


def confusion_table(matrix: list[list[int]], classes: list[str]) -> Table:
    table = Table(title="Confusion matrix (rows: true, columns: predicted)", title_justify="left")
    table.add_column("")
    for name in classes:
        table.add_column(name, justify="right")
    for name, row in zip(classes, matrix):
        table.add_row(name, *map(str, row))
    return table


def workflow_table(state: dict[str, Any]) -> Table:
    from app.workflow import STEPS, TITLES

    table = Table(title=f"One-click workflow: {state['dataset']}", title_justify="left")
    for col in ("step", "status", "details"):
        table.add_column(col)
    for step in STEPS:
        record = state["steps"].get(step, {})
        details = record.get("run") or record.get("note") or ""
        if step == "organize" and "items" in record:
            details = f"{record['items']} items, {record['labeled']} labeled"
        elif record.get("status") == "stopped" and "planned" in record:
            details = f"{details} (epoch {record['epochs']} of {record['planned']})"
        elif record.get("status") in ("stopped", "failed") and record.get("error"):
            details = f"{details} ({record['error']})" if details else record["error"]
        table.add_row(TITLES[step], record.get("status", "to do"), str(details))
    return table


VERDICT_STYLE = {"fit": "green", "weak": "yellow", "unfit": "bold red", "unknown": "dim"}


def verdict_text(verdict: Any) -> str:
    """A verdict (app.verdict.Verdict) in its colour, with its reasons."""
    return f"[{VERDICT_STYLE.get(verdict.level, '')}]{escape(verdict.text)}[/]"


def outside_line(outside: int, total: int, allowed: bool) -> str:
    """The summary of the out-of-distribution gate under a predictions table."""
    then = ("answered anyway (--allow-ood): read those answers with care" if allowed
            else "no answer was given for them (--allow-ood answers anyway)")
    return f"[yellow]{outside} of {total} item(s) are outside what the models were trained on: {then}.[/]"


def holds_names_line(folder: Any) -> str:
    return (f"[yellow]{escape(str(folder))} holds the files' own names, which can identify patients: keep it "
            "inside the hospital (HOLDS_IDENTIFIERS.txt says so beside it).[/]")


def predictions_table(predictions: list[Any]) -> Table:
    """One line per predicted item: its item id (and file name, when asked for), what it is,
    which model answered, and its answer. Fits 80 columns: the item id is never cut; a
    model's verdict other than fit is marked * (its line follows the table)."""
    names = any(p.name for p in predictions)
    notes = Counter(p.note for p in predictions if not p.run and p.note)
    table = Table(title="Predictions" + (" [yellow](file names shown: they can identify patients)[/]" if names else ""),
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, caption_justify="left",
                  caption="\n".join(f"[yellow]no model: {escape(note)}[/] ({n} item{'s' if n > 1 else ''})"
                                     for note, n in notes.items()) or None)
    table.add_column("item", no_wrap=True, min_width=13)
    if names:
        table.add_column("name", overflow="ellipsis", max_width=18)
    table.add_column("image")
    table.add_column("model", overflow="fold")
    table.add_column("class", no_wrap=True)
    table.add_column("conf.", justify="right")
    table.add_column("score", justify="right")
    table.add_column("anomaly?")
    for p in predictions:
        verdict = "" if p.is_anomaly is None else ("[red]yes[/]" if p.is_anomaly else "[green]no[/]")
        if p.outside:
            verdict = f"[yellow]outside[/]{' ' + verdict if verdict else ''}"
        model = (f"{escape(p.run)}[{VERDICT_STYLE.get(p.model_verdict, '')}]*[/]"
                 if p.run and p.model_verdict not in ("", "fit") else escape(p.run))
        table.add_row(p.item, *([escape(p.name)] if names else []), f"{p.modality} {p.region}",
                      model or "[yellow]none[/]",
                      p.predicted_class, _num(p.confidence) if p.confidence is not None else "",
                      _num(p.anomaly_score) if p.anomaly_score is not None else "", verdict)
    return table


def kaggle_table(found: list[dict[str, Any]]) -> Table:
    table = Table(title="Kaggle datasets (collect kaggle OWNER/DATASET to download)")
    for column in ("OWNER/DATASET", "title", "size", "licence"):
        table.add_column(column)
    for item in found:
        table.add_row(item["ref"], item["title"], f"{item['bytes'] / 1e6:,.0f} MB" if item["bytes"] else "?",
                      item["licence"])
    if not found:
        table.add_row("(nothing found)", "", "", "")
    return table


def plain_list(title: str, names: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("name")
    for name in names:
        table.add_row(name)
    return table


def catalog_table(entries: Any) -> Any:
    """The catalog as one block per dataset: words wrap whole at any width (a table of six
    columns split them at 80: "ultrasoun d"), and labels and licence have room."""
    from rich.console import Group
    from rich.padding import Padding
    from rich.text import Text

    blocks: list[Any] = [Text("Recommended public datasets (collect catalog KEY to download one)", style="bold")]
    for e in entries:
        blocks.append(Text.assemble("\n", (e.key, "bold cyan"), "  ", e.title))
        facts = [("", f"{e.modality} · {e.region} · {e.size}"), ("labels: ", e.labels), ("licence: ", e.licence),
                 ("good for: ", e.good_for)]
        for name, value in facts:
            if value:
                blocks.append(Padding(Text.assemble((name, "dim"), value), (0, 0, 0, 2), expand=False))
    return Group(*blocks)


def catalog_details(e: Any) -> str:
    return (f"[bold]{e.title}[/] ({e.collector})\n  size: {e.size}\n  labels: {e.labels}\n  licence: {e.licence}\n"
            f"  good for: {e.good_for}\n  page: {e.page}")


def audit_lines(result: Any, limit: int = 40) -> list[Any]:
    """A privacy audit: the findings as a table (masked), and one line that sums it up."""
    out: list[Any] = []
    if result.findings:
        table = Table(title=f"Possible identifiers in {escape(str(result.root))}", title_justify="left")
        for column in ("file", "where", "what", "seen as"):
            table.add_column(column)
        for f in result.findings[:limit]:
            table.add_row(escape(f.path), escape(f.where), f.kind, escape(f.excerpt))
        out.append(table)
        if len(result.findings) > limit:
            out.append(f"... and {len(result.findings) - limit} more.")
    left_out = f"; left out by design: {', '.join(result.excluded)}" if result.excluded else ""
    known = (f"{result.known_identifiers} identifier token(s) the scans met, and patterns" if result.known_identifiers
             else "patterns only (no identifier the scans met is known here)")
    verdict = (f"[red]{len(result.findings)} possible identifier(s)[/] in" if result.findings
               else "[green]No identifier found[/] in")
    out.append(f"{verdict} {result.files} file(s), searched for {known}{left_out}.")
    if result.skipped:
        out.append(f"[yellow]Too large to read (names checked only): {escape(', '.join(result.skipped[:5]))}[/]")
    return out


def share_line(result: Any) -> str:
    """What a de-identified export wrote, and what it left out."""
    line = (f"De-identified copy written: {escape(str(result.path))} ({result.items} items, "
            f"{result.dicom_files} DICOM files). Run the privacy audit on it before it leaves the hospital.")
    if result.refused:
        line += (f"\n[yellow]Left out: {len(result.refused)} item(s) whose DICOM says text is burned into the "
                 f"pixels (BurnedInAnnotation YES): {', '.join(result.refused[:10])}.[/]")
    return line


def label_lines(result: Any) -> list[str]:
    """What an organize says of its labels beyond the counts: conflicts and each label table's use."""
    lines = []
    if result.conflicts:
        lines.append(f"[yellow]{result.conflicts} item(s) where a label table and the class folder disagree[/]: left "
                     "unlabeled (listed in scan_report.json); set their label in Organize -> Review and correct.")
    lines += [f"Label table {escape(note)}" for note in result.table_notes]
    if result.mask_note:
        lines.append(f"Masks: {escape(result.mask_note)}")
    if getattr(result, "class_note", ""):
        lines.append(f"Classes {escape(result.class_note)}.")
    found = getattr(result, "findings", ())
    if found:
        lines.append(f"Several findings per image ({len(found)}: {escape(', '.join(found))}): supervised and transfer "
                     "runs give each finding its own probability.")
    return lines


def review_places(folders: list[str]) -> tuple[str, list[str]]:
    """The folders of a review, shown under their common folder: (that folder, each place in it,
    'series S…' added where one folder holds several). Plain text: the menu's choices show it too."""
    import os

    from app.organize.review import SERIES_MARK

    places = [f.partition(SERIES_MARK)[0] for f in folders]
    base = os.path.commonpath(places) if places else ""
    if len(set(places)) == 1:
        base = os.path.dirname(base)
    shown = []
    for folder, place in zip(folders, places):
        series = folder.partition(SERIES_MARK)[2]
        inside = os.path.relpath(place, base) if base else place
        shown.append(inside + (f" (series {series})" if series else ""))
    return base, shown


def trial_lines(trials: list[dict[str, Any]]) -> list[str]:
    """One line per screening trial, under its round of successive halving when there were
    several: the recipe's best validation figure (AUC; balanced accuracy where AUC is
    undefined), epochs and seconds. Short enough for 80 columns."""
    rounds = any(t.get("round") for t in trials)
    lines: list[str] = []
    for k, t in enumerate(trials):
        if rounds and (k == 0 or t.get("round", 0) != trials[k - 1].get("round", 0)):
            lines.append(f"  round {t.get('round', 0)}:")
        lines.append(("    " if rounds else "  ") + f"{t['recipe']}: {t['val_monitor']:.4f} after {t['epochs']} epochs "
                     f"({t['seconds']:.0f} s" + (f", {t['epoch_images']} images an epoch" if t.get("epoch_images") else "")
                     + ")")
    return lines


def recipe_summary(record: dict[str, Any], result: Any, flips: dict[str, Any] | None = None) -> str:
    """What a recipe search did, for the end of `train --recipe auto` (``flips``: the run's
    record of its left-right flips, app/laterality.py)."""
    lines = trial_lines(record["trials"])
    if record.get("stopped"):
        return "\n".join([f"Stopped while screening recipes (in {result.run}); no recipe was chosen. "
                          "Train again to start the search anew.", "Screened so far:", *lines])
    state = " (stopped: train --run " + result.run + " resumes it)" if result.status == "stopped" else ""
    found = record.get("ensemble") or {}
    kept = [m for m in found.get("members", []) if m["kept"]]
    members = [f"Members trained in the time left: {len(found['members'])}, kept {len(kept)}"
               + (f"; the run averages {len(kept) + 1} models (validation AUC {found['val_auc_alone']:.4f} "
                  f"alone, {found['val_auc']:.4f} averaged)." if kept else ".")] if found.get("members") else []
    if found.get("failed"):
        members.append(f"Training a member failed ({found['failed']}); the models before it stand.")
    if found.get("average_failed"):
        members.append(f"Writing the average into the run failed ({found['average_failed']}): it is the winner alone.")
    if found.get("mirror"):
        from app.evaluate import mirror_sentence

        members.append(mirror_sentence(found["mirror"]))
    if flips_sentence(flips):
        members.append(flips_sentence(flips))
    return "\n".join([f"Run {result.run}: recipe {record['recipe']['name']}, chosen on the validation split, "
                      f"{result.epochs_done} epochs{state}.", "Recipes screened (their best validation figure):", *lines, *members])


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def backups_table(found: list[dict[str, Any]]) -> Table | Text:
    if not found:
        return Text("No backups yet in backups/ (python main.py backup makes one).")
    table = Table(title="Backups (named by when they were made)", box=box.SIMPLE)
    table.add_column("archive", no_wrap=True)
    for heading in ("files", "size", "raw data"):
        table.add_column(heading)
    for entry in found:
        if "problem" in entry:
            table.add_row(escape(entry["name"]), "", _size(entry["size"]), f"[red]{escape(entry['problem'])}[/]")
            continue
        table.add_row(escape(entry["name"]), str(entry["files"]), _size(entry["size"]), "yes" if entry["raw"] else "no")
    return table


def backup_line(made: Any) -> str:
    raw = "with" if "data/raw" in made.entries else "without"
    return (f"Backup written: {escape(str(made.archive))} ({made.files} files, {_size(made.bytes)}, {raw} raw data), "
            "signed, with the SHA-256 of every file. It holds the workspace's keys: keep it as you keep the "
            "workspace. Restore: python main.py restore " + escape(made.archive.name))


def restore_line(done: Any) -> str:
    aside = f" What it replaced is in {escape(str(done.replaced))}." if done.replaced else ""
    return (f"Restored {done.files} files from {escape(done.archive.name)}, every one matching its SHA-256 "
            f"(signed by {escape(done.signed_by)}).{aside}")
