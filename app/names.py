"""The one rule for every name a user gives: datasets, runs, workflows, exports.

A name becomes a folder or file name inside the workspace, so it must never be able
to point anywhere else: no separators, no ``..``, not hidden, not a name the
workspace uses for itself, printable ASCII only, at most ``MAX_LENGTH`` characters.
"""

from __future__ import annotations

import re
import unicodedata

from core.errors import InvalidNameError

MAX_LENGTH = 64
_ALLOWED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Names the workspace keeps for its own folders, and names some systems cannot hold.
RESERVED = frozenset({
    "raw", "organized", "cache", "logs", "locks", "workflows", "private",
    "con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10)),
})
# Suffixes the workspace gives to its own temporary folders and files.
_TEMP_SUFFIXES = (".partial", ".tmp", ".new", ".old", ".lock")


def suggest_name(text: str, fallback: str = "dataset") -> str:
    """A valid name as close to ``text`` as the rule allows (accents dropped, others to '_')."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._-")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:MAX_LENGTH].rstrip("._-")
    for suffix in _TEMP_SUFFIXES:
        if cleaned.lower().endswith(suffix):
            cleaned = cleaned[: -len(suffix)] + "_" + suffix[1:]
    if not cleaned or cleaned.lower() in RESERVED:
        cleaned = f"{cleaned}_1" if cleaned else fallback
    return cleaned


def problem_with(name: str) -> str | None:
    """Why ``name`` is not a valid name, or None when it is."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > MAX_LENGTH:
        return f"it is longer than {MAX_LENGTH} characters"
    if "/" in name or "\\" in name or "\x00" in name:
        return "it holds a path separator"
    if ".." in name:
        return "it holds '..'"
    if name.startswith("."):
        return "it starts with '.' (hidden)"
    if not _ALLOWED.match(name):
        return "it may hold only letters A-Z, digits, '.', '_' and '-', starting with a letter or digit"
    if name.lower() in RESERVED:
        return "the workspace keeps that name for itself"
    if name.lower().endswith(_TEMP_SUFFIXES):
        return f"names ending in {', '.join(_TEMP_SUFFIXES)} are kept for temporary files"
    return None


def check_name(name: str, what: str = "name") -> str:
    """``name`` itself when valid.

    Raises:
        InvalidNameError: saying why, and suggesting a valid name.
    """
    why = problem_with(name)
    if why is None:
        return name
    shown = name if isinstance(name, str) and len(name) <= 80 else f"{str(name)[:77]}..."
    raise InvalidNameError(
        f"{shown!r} cannot be a {what}: {why}. Try {suggest_name(str(name or ''), 'my-' + what.split()[0])!r}."
    )
