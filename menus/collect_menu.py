"""Collect: the demo, a local folder, the catalog, and each public source or a PACS."""

from __future__ import annotations

from typing import Any

import questionary

from app.collectors import collect
from menus import render
from menus.ask import ask_choice, ask_confirm, ask_int, ask_path, ask_text
from menus.console import as_job, console, progress_bars


def collect_menu(s: Any) -> None:
    source = ask_choice("Collect from", [
        questionary.Choice("Built-in demo data (offline, 10 to 30 seconds)", value="demo"),
        questionary.Choice("A local folder (PACS export, USB drive)", value="local"),
        questionary.Choice("Recommended public datasets (catalog)", value="catalog"),
        questionary.Choice("Kaggle dataset (needs Kaggle credentials)", value="kaggle"),
        questionary.Choice("TCIA collection (The Cancer Imaging Archive)", value="tcia"),
        questionary.Choice("NIH ChestX-ray14", value="nih"),
        questionary.Choice("A PACS or DICOM store (DICOMweb)", value="dicomweb"),
    ])
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
    if source == "demo":
        return {"scale": 3, "seed": s.settings.seed}
    if source == "local":
        path = ask_path("Folder with the images:")
        name = ask_text("Name for this dataset:", default="") if path else None
        copy = ask_confirm("Copy the files into the workspace (No: use them where they are)?", default=False) \
            if name is not None else None
        return None if copy is None else {"path": path, "name": name or None, "copy": copy}
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
    if source == "tcia":
        collection = ask_text("Collection (e.g. LIDC-IDRI; `main.py collect tcia --list` lists them):",
                              validate=lambda t: bool(t.strip()) or "Give a collection name")
        modality = ask_text("Only this modality (CT, MR, PT; empty: all):", default="") if collection else None
        patients = ask_int("At most how many patients?", default=20, high=100000) if modality is not None else None
        if patients is None:
            return None
        return {"collection": collection.strip(), "modality": modality.strip() or None, "max_patients": patients}
    if source == "nih":
        archives = ask_int("How many of the 12 image archives (about 9,000 images, 3.5 GB each)?", default=1,
                           high=12)
        metadata = ask_path("Folder with Data_Entry_2017_v2020.csv, train_val_list.txt, test_list.txt "
                            "(from the NIH Box folder):") if archives else None
        return None if not metadata else {"archives": archives, "metadata": metadata}
    if source == "dicomweb":
        url = ask_text("DICOMweb address (e.g. https://pacs.example.org/dicom-web):",
                       validate=lambda t: t.startswith(("http://", "https://")) or "Starts with http:// or https://")
        modality = ask_text("Only studies with this modality (empty: all):", default="") if url else None
        count = ask_int("At most how many studies?", default=20, high=100000) if modality is not None else None
        if count is None:
            return None
        return {"url": url.strip(), "modality": modality.strip() or None, "max_studies": count}
    return None
