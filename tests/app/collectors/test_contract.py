"""The collector contract: a collector defined here, by its function and options alone, is
offered by the command line (arguments, --help) and by the Collect menu (its questions)
without editing either; a mistyped option is refused, never silently dropped."""

from __future__ import annotations

from dataclasses import dataclass
from io import StringIO

import pytest

from app.collectors import COLLECTORS, CollectResult, collect, option, register_collector
from core.errors import CollectError


@dataclass(frozen=True)
class TinyOptions:
    where: str = option(help="what to write into each file", positional=True, ask="Write what?")
    count: int = option(2, help="how many files", ask="How many files?", high=9)
    loud: bool = option(False, help="shout")
    name: str = option("tiny", help="dataset name")


@pytest.fixture
def tiny():
    calls = []

    @register_collector("tiny", "A tiny source defined by a test", options=TinyOptions)
    def collect_tiny(workspace, *, where, count, loud, name, progress=None):
        folder = workspace.raw_target("tiny", name)
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(count):
            (folder / f"{k}.txt").write_text(where.upper() if loud else where)
        calls.append({"where": where, "count": count, "loud": loud, "name": name})
        return CollectResult(name, folder, count)

    yield calls
    COLLECTORS.unregister("tiny")


def test_the_command_line_takes_a_new_collectors_options(tiny, ws, capsys) -> None:
    from menus.cli import build_parser, main

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["collect", "tiny", "--help"])
    shown = capsys.readouterr().out
    assert "what to write into each file" in shown and "--count" in shown and "--loud" in shown
    assert main(["collect", "tiny", "hello", "--count", "3", "--loud", "--workspace", str(ws.root)]) == 0
    assert tiny == [{"where": "hello", "count": 3, "loud": True, "name": "tiny"}]
    assert (ws.raw_dir / "tiny" / "tiny" / "2.txt").read_text() == "HELLO"
    assert main(["collect", "tiny", "--workspace", str(ws.root)]) == 2  # its positional is needed
    assert "needs 'where'" in capsys.readouterr().err


def test_a_mistyped_option_is_refused_by_name(tiny, ws) -> None:
    with pytest.raises(CollectError, match="no option 'cuont'.*where, count, loud, name"):
        collect("tiny", ws, where="x", cuont=3)
    with pytest.raises(CollectError, match="no option 'scal'"):
        collect("demo", ws, scal=1)
    assert tiny == []


def test_the_collect_menu_offers_a_new_collector_and_asks_its_questions(tiny, ws, monkeypatch) -> None:
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput
    from rich.console import Console

    from menus import collect_menu, screens
    from menus.settings import Settings

    monkeypatch.setattr(collect_menu, "console", Console(file=StringIO(), width=100))
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        for key in ("tiny", "\r", "from the menu\r", "\x7f4\r"):  # pick it; answer; 2 -> 4
            pipe.send_text(key)
        collect_menu.collect_menu(screens.Session(ws, Settings.load(ws)))
    assert tiny == [{"where": "from the menu", "count": 4, "loud": False, "name": "tiny"}]
