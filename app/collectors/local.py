"""Local folder import: a PACS export, a USB drive, a folder already on disk."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.atomic import swap_in, temp_sibling
from app.collectors import CollectResult, option, register_collector
from core.errors import CollectError
from app.names import check_name, suggest_name
from app.progress import Progress, report


def _dataset_name(path: Path) -> str:
    return suggest_name(path.name, "local")


@dataclass(frozen=True)
class LocalOptions:
    path: str = option(help="the folder", positional=True, ask="Folder with the images:", kind="path")
    name: str | None = option(None, help="dataset name (default: the folder's name)", ask="Name for this dataset:")
    copy: bool = option(False, help="copy the files into the workspace",
                        ask="Copy the files into the workspace (No: use them where they are)?")

@register_collector("local", "A local folder (PACS export, USB drive, any folder)", options=LocalOptions)
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
    name = check_name(name or _dataset_name(source.resolve()), "dataset name")
    where = source.resolve()
    if copy:
        target = workspace.raw_target("local", name)
        if where == target.resolve() or target.resolve() in where.parents:
            raise CollectError(f"{source} is the workspace's own copy of {name!r}; it cannot be copied onto itself.")
        _copy_tree(source, files, target, progress)
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


def _copy_tree(source: Path, files: list[Path], target: Path, progress: Progress | None) -> None:
    """Copy ``files`` into ``target`` whole: beside it first, swapped in when every file is there."""
    partial = temp_sibling(target, "partial")
    try:
        for done, file in enumerate(files, 1):
            destination = partial / file.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(file, destination)
            except PermissionError as err:
                raise CollectError(
                    f"Cannot read {file.relative_to(source)} under {source} (permission denied); nothing was copied. "
                    "Give yourself read access to every file, or copy the readable ones elsewhere first."
                ) from err
            except OSError as err:
                raise CollectError(f"Copying {file.relative_to(source)} failed ({err.strerror or err}); "
                                   "nothing was copied. Check the disk space and the source, then try again.") from err
            report(progress, "Copying files", done, len(files))
        partial.mkdir(parents=True, exist_ok=True)
        swap_in(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
