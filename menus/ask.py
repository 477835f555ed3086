"""One-prompt helpers around questionary. A None answer (Ctrl-C, Esc) means Back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import questionary

BACK = "__back__"


def ask_choice(message: str, choices: list[questionary.Choice], *, back: bool = True) -> Any:
    if back:
        choices = [*choices, questionary.Separator(), questionary.Choice("Back", value=BACK)]
    # Typing filters the choices, so a user (or a test) can type "one-click" and press Enter.
    answer = questionary.select(
        message, choices=choices, qmark="?", instruction="(arrows or type to filter, Enter)",
        use_search_filter=True, use_jk_keys=False,
    ).ask()
    return None if answer in (None, BACK) else answer


def ask_text(message: str, default: str = "", validate: Callable[[str], bool | str] | None = None) -> str | None:
    return questionary.text(message, default=default, validate=validate or (lambda _: True)).ask()


def ask_path(message: str, default: str = "") -> str | None:
    return questionary.path(message, default=default, only_directories=True).ask()


def ask_int(message: str, default: int, low: int = 1, high: int = 100000) -> int | None:
    def valid(text: str) -> bool | str:
        return text.isdigit() and low <= int(text) <= high or f"A whole number from {low} to {high}"

    answer = questionary.text(message, default=str(default), validate=valid).ask()
    return None if answer is None else int(answer)


def ask_confirm(message: str, default: bool = True) -> bool | None:
    return questionary.confirm(message, default=default).ask()


def ask_checkbox(message: str, choices: list[questionary.Choice]) -> list[Any] | None:
    """Several answers (Space picks, Enter goes on); an empty list when none is picked."""
    return questionary.checkbox(message, choices=choices, qmark="?",
                                instruction="(Space picks, Enter goes on; none: this run alone)").ask()
