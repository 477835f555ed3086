"""Collectors bring files into ``data/raw/<source>/<dataset>/`` and record them.

One registry; menus and the command line are built from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.registry import Registry


@dataclass(frozen=True)
class CollectResult:
    dataset: str
    path: Path
    files: int
    note: str = ""


@dataclass(frozen=True)
class Collector:
    name: str
    title: str
    run: Callable[..., CollectResult]
    needs_network: bool


COLLECTORS: Registry[Collector] = Registry("collector")


def register_collector(name: str, title: str, *, needs_network: bool = False):
    def wrap(func: Callable[..., CollectResult]) -> Callable[..., CollectResult]:
        COLLECTORS.register(name, Collector(name, title, func, needs_network))
        return func

    return wrap


# Menu order: what works offline first, then the public archives, then the PACS.
# Registration order depends on which module was imported first, so it is not used.
MENU_ORDER = ("demo", "local", "kaggle", "tcia", "nih", "dicomweb")


def list_collectors() -> list[Collector]:
    _load_builtin()
    entries = [entry for _, entry in COLLECTORS.items()]
    rank = {name: i for i, name in enumerate(MENU_ORDER)}
    return sorted(entries, key=lambda c: (rank.get(c.name, len(rank)), c.name))


def collect(source: str, workspace: Any, **options: Any) -> CollectResult:
    """Run the collector ``source`` (see list_collectors) with its options."""
    from app.names import check_name

    _load_builtin()
    collector = COLLECTORS.get(source)
    name = options.get("name")
    if name is None:
        return collector.run(workspace, **options)
    with workspace.lock("collect", check_name(name, "dataset name")):
        earlier = workspace.load_index().get(name, {}).get("source")
        if earlier and earlier != source:
            from core.errors import CollectError

            raise CollectError(f"A dataset named {name!r} was collected from {earlier} already. "
                               f"Choose another --name for this {source} data.")
        return collector.run(workspace, **options)


def _load_builtin() -> None:
    # Imported here so that registering costs nothing until collectors are needed.
    from app.collectors import demo, dicomweb, kaggle, local, nih, tcia  # noqa: F401
