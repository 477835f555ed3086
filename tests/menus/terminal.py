"""The app in a real pseudo-terminal, and what a user would see on it (pyte renders the screen)."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOWN, UP, ENTER, ESC = "\x1b[B", "\x1b[A", "\r", "\x1b"


class Terminal:
    """``main.py --workspace WS`` at ``columns`` x ``lines``; ``wait`` reads until a text shows."""

    def __init__(self, workspace: Path, columns: int = 80, lines: int = 24, args: tuple[str, ...] = ()) -> None:
        import pexpect
        import pyte

        self.screen = pyte.HistoryScreen(columns, lines, history=2000)
        self.stream = pyte.Stream(self.screen)
        self.seen = ""  # everything printed, escape codes removed
        self.mark = 0  # where in ``seen`` the last keys were sent
        env = {**os.environ, "TERM": "xterm", "PYTHONUNBUFFERED": "1", "COLUMNS": str(columns), "LINES": str(lines)}
        self.child = pexpect.spawn(sys.executable, [str(ROOT / "main.py"), "--workspace", str(workspace), *args],
                                   env=env, encoding="utf-8", dimensions=(lines, columns), timeout=60)

    def _read(self) -> None:
        import pexpect

        try:
            while True:
                chunk = self.child.read_nonblocking(65536, timeout=0.2)
                self.stream.feed(chunk)
                if "\x1b[6n" in chunk:  # prompt_toolkit asks where the cursor is: answer as a terminal does
                    self.child.send(f"\x1b[{self.screen.cursor.y + 1};{self.screen.cursor.x + 1}R")
                self.seen += re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r", "", chunk)
        except (pexpect.TIMEOUT, pexpect.EOF):
            return

    def wait(self, text: str, timeout: float = 60) -> None:
        """Read until ``text`` (a regular expression) is on the screen, or was printed since the last keys."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._read()
            if re.search(text, self.display()) or re.search(text, self.seen[self.mark :]):
                return
            if not self.child.isalive():
                break
        raise AssertionError(f"{text!r} never showed; the screen:\n{self.display()}")

    def send(self, keys: str) -> None:
        self._read()
        self.mark = len(self.seen)
        self.child.send(keys)
        time.sleep(0.15)

    def display(self) -> str:
        """The screen as lines of text, as the user sees it now."""
        return "\n".join(line.rstrip() for line in self.screen.display)

    def scrollback(self) -> str:
        """Every line that scrolled off the top, then the screen: what the user could scroll back to."""
        columns = self.screen.columns
        old = ["".join(line[x].data for x in range(columns)).rstrip() for line in self.screen.history.top]
        return "\n".join([*old, self.display()])

    def close(self) -> None:
        self.child.close(force=True)
