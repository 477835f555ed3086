"""Turn app results (plain data) into rich tables."""

from __future__ import annotations

import math
from typing import Any

from rich.markup import escape
from rich.table import Table

from app.status import WorkspaceStatus


def _num(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def status_tables(status: WorkspaceStatus) -> list[Table]:
    tables = []
    data = Table(title="Datasets", title_justify="left", expand=False)
    for col in ("name", "collected files", "organized items", "labeled", "classes", "splits"):
        data.add_column(col)
    names = sorted(set(status.collected) | set(status.organized))
    for name in names:
        raw, org = status.collected.get(name, {}), status.organized.get(name, {})
        splits = org.get("by_split", {})
        data.add_row(name, _num(raw.get("files", "-")), _num(org.get("items", "-")), _num(org.get("labeled", "-")),
                     ", ".join(org.get("classes", [])) or "-",
                     "/".join(str(splits.get(s, 0)) for s in ("train", "val", "test")) if splits else "-")
    if not names:
        data.add_row("(none yet)", "", "", "", "Collect the demo data or a folder to begin", "")
    tables.append(data)
    runs = Table(title="Training runs", title_justify="left")
    for col in ("run", "phase", "status", "epochs", "test AUROC", "test bal. acc.", "verdict", "ONNX"):
        # Folded, never cut: a run's name is what `evaluate RUN` and `export RUN` need.
        runs.add_column(col, overflow="fold")
    for run in status.runs[:8]:
        test = run["test"]
        runs.add_row(run["run"], run["phase"], run["status"], _num(run["epochs"]),
                     _num(test.get("anomaly_auroc", test.get("roc_auc_ovr", "-"))),
                     _num(test.get("balanced_accuracy", "-")), verdict_text(run["verdict"]),
                     "yes" if run["exported"] else "-")
    if not status.runs:
        runs.add_row("(none yet)", "", "", "", "", "", "", "")
    tables.append(runs)
    return tables


def metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if not isinstance(value, (list, dict)):
            table.add_row(key, _num(value))
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


def predictions_table(predictions: list[Any]) -> Table:
    """One line per predicted item: what it is, which model answered, and its answer."""
    table = Table(title="Predictions", title_justify="left")
    for name in ("input", "modality / region", "model", "class", "confidence", "anomaly score", "anomaly?"):
        table.add_column(name, justify="right" if name in ("confidence", "anomaly score") else "left")
    for p in predictions:
        verdict = "" if p.is_anomaly is None else ("[red]yes[/]" if p.is_anomaly else "[green]no[/]")
        if p.outside:
            verdict = f"[yellow]outside[/]{' ' + verdict if verdict else ''}"
        model = (f"{p.run} [{VERDICT_STYLE.get(p.model_verdict, '')}]({p.model_verdict})[/]"
                 if p.run and p.model_verdict not in ("", "fit") else p.run)
        table.add_row(p.input[-40:], f"{p.modality} / {p.region}", model or f"[yellow]{p.note}[/]",
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


def catalog_table(entries: Any) -> Table:
    table = Table(title="Recommended public datasets (collect catalog KEY to download one)")
    table.add_column("key", no_wrap=True)
    for column in ("dataset", "size", "modality", "region", "good for"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(e.key, e.title, e.size, e.modality, e.region, e.good_for)
    return table


def catalog_details(e: Any) -> str:
    return (f"[bold]{e.title}[/] ({e.collector})\n  size: {e.size}\n  labels: {e.labels}\n  licence: {e.licence}\n"
            f"  good for: {e.good_for}\n  page: {e.page}")
