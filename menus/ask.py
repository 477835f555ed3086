"""One-prompt helpers around questionary. A None answer (Ctrl-C, Esc) means Back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import questionary
from prompt_toolkit.key_binding import KeyBindings, merge_key_bindings

BACK = "__back__"


def _escape_goes_back(question: questionary.Question) -> questionary.Question:
    """Escape answers None (Back), as Ctrl-C does; questionary binds no Escape itself."""
    keys = KeyBindings()

    @keys.add("escape")
    def _(event: object) -> None:
        event.app.exit(result=None)  # type: ignore[attr-defined]

    app = question.application
    app.key_bindings = merge_key_bindings([app.key_bindings, keys]) if app.key_bindings else keys
    return question


def ask_choice(message: str, choices: list[questionary.Choice], *, back: bool = True) -> Any:
    if back:
        choices = [*choices, questionary.Separator(), questionary.Choice("Back", value=BACK)]
    # Typing filters the choices, so a user (or a test) can type "one-click" and press Enter.
    answer = _escape_goes_back(questionary.select(
        message, choices=choices, qmark="?", instruction="(arrows or type to filter, Enter; Esc: back)",
        use_search_filter=True, use_jk_keys=False,
    )).ask()
    return None if answer in (None, BACK) else answer


def ask_text(message: str, default: str = "", validate: Callable[[str], bool | str] | None = None) -> str | None:
    return _escape_goes_back(questionary.text(message, default=default, validate=validate or (lambda _: True))).ask()


def ask_path(message: str, default: str = "", *, files: bool = False, empty_ok: bool = False) -> str | None:
    """A folder (or, with ``files``, a file too) that exists, checked as it is typed, so a
    mistyped path is caught here rather than after the questions that follow. Tab completes;
    Enter always answers (completion does not pop up while typing, which made Enter pick it)."""
    from pathlib import Path

    def valid(text: str) -> bool | str:
        if not text.strip():
            return empty_ok or "Give a folder (Tab completes)"
        path = Path(text.strip()).expanduser()
        if path.is_dir() or (files and path.is_file()):
            return True
        return f"No such {'file or ' if files else ''}folder: {path}" if not path.exists() else "Not a folder"

    return _escape_goes_back(questionary.path(message, default=default, only_directories=not files, validate=valid,
                                              complete_while_typing=False)).ask()


def ask_int(message: str, default: int, low: int = 1, high: int = 100000) -> int | None:
    def valid(text: str) -> bool | str:
        return text.isdigit() and low <= int(text) <= high or f"A whole number from {low} to {high}"

    answer = _escape_goes_back(questionary.text(message, default=str(default), validate=valid)).ask()
    return None if answer is None else int(answer)


def ask_confirm(message: str, default: bool = True) -> bool | None:
    return _escape_goes_back(questionary.confirm(message, default=default)).ask()


def ask_checkbox(message: str, choices: list[questionary.Choice]) -> list[Any] | None:
    """Several answers (Space picks, Enter goes on); an empty list when none is picked."""
    return _escape_goes_back(questionary.checkbox(message, choices=choices, qmark="?",
                                instruction="(Space picks, Enter goes on; none: this run alone)")).ask()
