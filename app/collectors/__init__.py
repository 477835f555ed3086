"""Collectors bring files into ``data/raw/<source>/<dataset>/`` and record them.

One registry; menus and the command line are built from it. Each collector declares its
options as a dataclass whose fields say, in their metadata (``option``), how the command
line takes them (a positional argument or a ``--flag``) and what the menu asks; adding a
collector is one module: its function, its options, ``@register_collector``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from core.registry import Registry


def option(default: Any = MISSING, *, help: str, ask: str = "", ask_default: Any = None, positional: bool = False,
           metavar: str | None = None, kind: str = "", listing: bool = False, high: int | None = None) -> Any:
    """A collector option: ``help`` for ``--help``; ``ask``: the menu's question (empty: the menu
    keeps the default); ``ask_default``: the menu's suggestion when it differs from the default;
    ``positional``: an argument, not a ``--flag``; ``kind``: "path" or "url" (how it is asked
    and checked); ``listing``: it lists instead of collecting (command line only); ``high``:
    the largest number the menu takes."""
    meta = {"help": help, "ask": ask, "ask_default": ask_default, "positional": positional, "metavar": metavar,
            "kind": kind, "listing": listing, "high": high}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """One option as the command line and the menu need it."""

    name: str
    type: str  # "str", "int", "float" or "bool"
    default: Any
    required: bool
    help: str
    ask: str
    ask_default: Any
    positional: bool
    metavar: str | None
    kind: str
    listing: bool
    high: int | None


def option_specs(options: type) -> list[OptionSpec]:
    """The fields of an options dataclass, in order, with what their metadata says."""
    found = []
    for f in dataclasses.fields(options):
        declared = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        kind = next((t for t in ("bool", "int", "float") if t in declared.split(" | ")), "str")
        meta = f.metadata
        found.append(OptionSpec(f.name, kind, None if f.default is MISSING else f.default, f.default is MISSING,
                                meta.get("help", ""), meta.get("ask", ""), meta.get("ask_default"),
                                meta.get("positional", False), meta.get("metavar"), meta.get("kind", ""),
                                meta.get("listing", False), meta.get("high")))
    return found


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
    options: type  # a dataclass of its options (see ``option``)


COLLECTORS: Registry[Collector] = Registry("collector")


def register_collector(name: str, title: str, *, options: type, needs_network: bool = False):
    """Register the decorated function as collector ``name``; ``options``: its options dataclass.
    The function takes the workspace, every option not marked ``listing`` by keyword, and ``progress``."""
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"collector {name!r}: options must be a dataclass")

    def wrap(func: Callable[..., CollectResult]) -> Callable[..., CollectResult]:
        COLLECTORS.register(name, Collector(name, title, func, needs_network, options))
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


def checked_options(collector: Collector, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` completed with the defaults, as the collector's function takes them.

    Raises:
        CollectError: an option it does not have (a typo must not vanish), or a required one missing.
    """
    from core.errors import CollectError

    specs = {spec.name: spec for spec in option_specs(collector.options)}
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise CollectError(f"The {collector.name} collector has no option {unknown[0]!r}; its options: "
                           f"{', '.join(specs)}.")
    missing = [name for name, spec in specs.items() if spec.required and given.get(name) is None]
    if missing:
        raise CollectError(f"The {collector.name} collector needs {missing[0]!r} "
                           f"(python main.py collect {collector.name} --help).")
    chosen = {**{name: spec.default for name, spec in specs.items() if not spec.required}, **given}
    return {name: value for name, value in chosen.items() if not specs[name].listing}


def collect(source: str, workspace: Any, *, progress: Any = None, **options: Any) -> CollectResult:
    """Run the collector ``source`` (see list_collectors) with its options (checked by name)."""
    from app.names import check_name

    _load_builtin()
    collector = COLLECTORS.get(source)
    chosen = checked_options(collector, options)
    name = chosen.get("name")
    if name is None:
        return collector.run(workspace, progress=progress, **chosen)
    with workspace.lock("collect", check_name(name, "dataset name")):
        earlier = workspace.load_index().get(name, {}).get("source")
        if earlier and earlier != source:
            from core.errors import CollectError

            raise CollectError(f"A dataset named {name!r} was collected from {earlier} already. "
                               f"Choose another --name for this {source} data.")
        return collector.run(workspace, progress=progress, **chosen)


def _load_builtin() -> None:
    # Imported here so that registering costs nothing until collectors are needed.
    from app.collectors import demo, dicomweb, kaggle, local, nih, tcia  # noqa: F401
