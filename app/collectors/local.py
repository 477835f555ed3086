"""Local folder import: a PACS export, a USB drive, a folder already on disk."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from app.collectors import CollectResult, register_collector
from app.errors import CollectError
from app.progress import Progress, report


def _dataset_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.name).strip("_") or "local"


@register_collector("local", "Local folder (PACS export, USB drive, any folder)")
def collect_local(
    workspace: Any,
    *,
    path: str | Path,
    name: str | None = None,
    copy: bool = False,
    progress: Progress | None = None,
) -> CollectResult:
    """Register a local folder as a raw dataset, referenced in place or copied.

    Raises:
        CollectError: the folder does not exist, is not a folder, or holds no files.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise CollectError(f"{source} does not exist. Check the path (tab completion helps).")
    if not source.is_dir():
        raise CollectError(f"{source} is a file; give the folder that holds the images.")
    files = [p for p in source.rglob("*") if p.is_file()]
    if not files:
        raise CollectError(f"{source} holds no files. Point at the folder with the images.")
    name = name or _dataset_name(source.resolve())
    where = source.resolve()
    if copy:
        target = workspace.raw_dir / "local" / name
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for done, file in enumerate(files, 1):
            destination = partial / file.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, destination)
            report(progress, "Copying files", done, len(files))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        where = target
    workspace.record_dataset(
        name,
        source="local",
        raw_path=workspace.relative(where),
        files=len(files),
        complete=True,
        copied=copy,
        licence="as set by the data's owner",
    )
    return CollectResult(name, where, len(files))
