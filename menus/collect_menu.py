"""Collect: the demo, a local folder, the catalog, and each public source or a PACS.

The list of sources and their questions come from the collectors' registry and their
options (app.collectors.option); the catalog and Kaggle's search have screens of their own.
"""

from __future__ import annotations

from typing import Any

import questionary

from app.collectors import collect, list_collectors, option_specs
from menus import render
from menus.ask import ask_choice, ask_confirm, ask_int, ask_path, ask_text
from menus.console import as_job, console, progress_bars


CATALOG_CHOICE = questionary.Choice("Recommended public datasets (catalog)", value="catalog")


def collect_menu(s: Any) -> None:
    choices = [questionary.Choice(c.title, value=c.name) for c in list_collectors()]
    choices.insert(min(2, len(choices)), CATALOG_CHOICE)  # after what works offline
    source = ask_choice("Collect from", choices)
    options = _options(s, source) if source else None
    if options is None:
        return
    if source == "catalog":
        from app.collectors.catalog import collect_entry

        with progress_bars() as bar:
            key = options.pop("key")
            result = as_job("collect", bar, lambda job: collect_entry(s.ws, key, progress=job.progress))
    else:
        with progress_bars() as bar:
            result = as_job("collect", bar, lambda job: collect(source, s.ws, progress=job.progress, **options))
    console.print(f"[green]Collected[/] {result.files} files as dataset [bold]{result.dataset}[/] "
                  f"in {result.path} {result.note}")


def _options(s: Any, source: str) -> dict[str, Any] | None:
    """The chosen source's questions; None when the user backs out."""
    if source == "catalog":
        from app.collectors.catalog import CATALOG

        console.print(render.catalog_table(CATALOG), soft_wrap=False)  # wrapped to the terminal, not cut
        entry = ask_choice("Download which?", [questionary.Choice(f"{e.key}: {e.title}", value=e) for e in CATALOG])
        if entry is None:
            return None
        console.print(render.catalog_details(entry))
        go = ask_confirm("Start the download?", default=True)
        return {"key": entry.key} if go else None
    if source == "kaggle":
        term = ask_text("Search Kaggle for (empty: type OWNER/DATASET directly):", default="")
        if term is None:
            return None
        if term.strip():
            from app.collectors.kaggle import search

            found = search(term.strip())
            console.print(render.kaggle_table(found))
            ref = ask_choice("Download which?", [questionary.Choice(f"{d['ref']}  {d['title']}", value=d["ref"])
                                                 for d in found]) if found else None
        else:
            ref = ask_text("OWNER/DATASET:", validate=lambda t: "/" in t or "Like owner/dataset-name")
        return {"dataset": ref.strip()} if ref else None
    return _asked(s, source)


def _asked(s: Any, source: str) -> dict[str, Any] | None:
    """The questions the collector's options ask (``option(ask=...)``), in order; the rest keep
    their defaults, and a ``seed`` is the settings' seed. None when the user backs out."""
    from app.collectors import COLLECTORS

    chosen: dict[str, Any] = {}
    for spec in option_specs(COLLECTORS.get(source).options):
        if spec.name == "seed":
            chosen["seed"] = s.settings.seed
        if not spec.ask:
            continue
        suggested = spec.ask_default if spec.ask_default is not None else spec.default
        if spec.type == "bool":
            answer = ask_confirm(spec.ask, default=bool(suggested))
        elif spec.type == "int":
            answer = ask_int(spec.ask, default=suggested if suggested is not None else 1, high=spec.high or 10**6)
        elif spec.kind == "path":
            answer = ask_path(spec.ask)
        elif spec.kind == "url":
            answer = ask_text(spec.ask, validate=lambda t: t.strip().startswith(("http://", "https://"))
                              or "Starts with http:// or https://")
        elif spec.required:
            answer = ask_text(spec.ask, validate=lambda t: bool(t.strip()) or "This one is needed")
        else:
            answer = ask_text(spec.ask, default=str(suggested or ""))
        if answer is None:
            return None
        if isinstance(answer, str):
            answer = answer.strip() or None
        if answer is not None or not spec.required:
            chosen[spec.name] = answer
    return chosen
