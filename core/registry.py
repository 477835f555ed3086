"""A tiny name -> entry registry shared by every extensible family (phases, collectors)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, in registration order; unknown names get a 'did you mean'."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.family} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, build: Callable[[T], T] | None = None) -> Callable[[T], T]:
        def wrap(entry: T) -> T:
            self.register(name, build(entry) if build else entry)
            return entry

        return wrap

    def unregister(self, name: str) -> None:
        """Take an entry out (a plugin unloaded, a test's own entry); unknown names are refused."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self._entries) or "none"
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"Unknown {self.family} {name!r}.{hint} Valid names: {valid}."
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())
