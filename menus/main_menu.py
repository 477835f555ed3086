"""The main menu: a header with the workspace's state, then a table of choices."""

from __future__ import annotations

import logging
from collections.abc import Callable

import questionary
from rich.columns import Columns
from rich.panel import Panel
from rich.table import Table

from core.errors import WorkbenchError
from app.status import workspace_status
from menus.collect_menu import collect_menu
from menus import render, screens
from menus.organize_menu import organize_menu
from menus.ask import ask_choice, ask_confirm
from menus.console import console

log = logging.getLogger(__name__)


def _header(s: screens.Session) -> None:
    status = workspace_status(s.ws)
    console.print(Panel.fit(f"[bold]MedAnomaly Workbench[/]  workspace: {status.root}", border_style="cyan"),
                  soft_wrap=False)  # a long workspace path folds inside the frame
    parts = render.status_tables(status)
    if all(isinstance(part, Table) for part in parts):
        console.print(Columns(parts))  # side by side where they fit
    else:
        for part in parts:
            console.print(part)


def _entries(s: screens.Session) -> list[tuple[str, Callable[[screens.Session], None], str | None]]:
    """(title, action, reason it is disabled or None), in menu order."""
    organized = bool(s.ws.organized_datasets())
    finished = [m for m in s.ws.runs() if m["status"] in ("complete", "stopped")]
    return [
        ("Collect data", collect_menu, None),
        ("Organize a dataset", organize_menu, None),  # it also takes any folder
        ("Train", screens.train_menu, None if organized else "Organize a dataset first"),
        ("Evaluate & explain", screens.evaluate_menu, None if finished else "Train a model first"),
        ("Export & predict", screens.export_predict_menu, None if finished else "Train a model first"),
        ("One-click workflow (collect -> organize -> train -> evaluate -> export)", screens.workflow_menu, None),
        ("Settings", screens.settings_menu, None),
        ("Help", screens.help_menu, None),
    ]


def main_menu(s: screens.Session) -> None:
    """Loop until Quit. Errors a user can act on are shown, then the menu comes back."""
    while True:
        _header(s)
        entries = _entries(s)
        choices = [questionary.Choice(title, value=action, disabled=reason) for title, action, reason in entries]
        choices += [questionary.Separator(), questionary.Choice("Quit", value="quit")]
        action = ask_choice("What would you like to do?", choices, back=False)
        if action is None and ask_confirm("Quit MedAnomaly Workbench?", default=True) is False:
            continue  # Ctrl-C or Esc here asks first: a stray key does not end the session
        if action in (None, "quit"):
            console.print("Goodbye.")
            return
        try:
            action(s)
        except KeyboardInterrupt:
            console.print("\n[yellow]Interrupted.[/] Work done so far is saved; run it again to resume.")
        except WorkbenchError as err:
            console.print(f"[red]Error:[/] {err}")
            if s.debug:
                console.print_exception()
        except Exception as err:  # keep the session alive; the log has the details
            logging.getLogger("medanomaly.crash").exception("Unexpected error in the menu")
            console.print(f"[red]Unexpected error:[/] {type(err).__name__}: {err}\n"
                          "Details are in the log (data/logs/workbench.log); --debug shows them here.")
            if s.debug:
                console.print_exception()
