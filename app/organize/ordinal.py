"""Are a dataset's classes ordered (grades, stages, severities)? Such classes can be trained
with an ordinal-aware loss (models/supervised.py squared_emd), offered where this says yes,
and they are then listed in their order (grade_order): the loss reads a grade's place in the
class list, so "mild, moderate, proliferative, severe" in the alphabet's order would teach
it that proliferative retinopathy lies between moderate and severe."""

from __future__ import annotations

import re
from collections.abc import Iterable

GRADED_FILES = ("retinamnist",)  # MedMNIST files whose labels are grades (diabetic retinopathy 0-4)
# Severity words, least first; "very mild" (an Alzheimer set's VeryMildDemented) is one step.
SEVERITY = ("normal", "none", "minimal", "very_mild", "mild", "moderate", "severe", "proliferative", "critical")
GRADE = re.compile(r"^(?:grade|stage|level|kl|severity|dr|score|birads|bi_rads)[ _-]?(\d+|[ivx]+)$", re.IGNORECASE)
ROMAN = {"i": 1, "v": 5, "x": 10}


def _words(name: str) -> list[str]:
    split = re.sub(r"([a-z])([A-Z][a-z])", r"\1 \2", name)  # VeryMildDemented -> Very Mild Demented
    return [w for w in re.split(r"[^a-z0-9]+", split.lower()) if w]


def _severity(name: str) -> tuple[int, str] | None:
    """(rank, the other words) of a name with one severity word ("moderate_demented" -> (5,
    "demented")); None when it has none."""
    words = _words(name)
    for k, word in enumerate(words):
        phrase = "very_mild" if word == "very" and words[k + 1 : k + 2] == ["mild"] else word
        if phrase in SEVERITY:
            rest = words[:k] + words[k + (2 if phrase == "very_mild" else 1):]
            return SEVERITY.index(phrase), " ".join(rest)
    return None


def _roman(text: str) -> int:
    values = [ROMAN[c] for c in text.lower()]
    return sum(-v if k + 1 < len(values) and v < values[k + 1] else v for k, v in enumerate(values))


def _grade(name: str) -> tuple[int, str] | None:
    """(number, the word before it) of a grade name ("stage III" -> (3, "stage")); None otherwise."""
    match = GRADE.match(name.strip())
    if not match:
        return None
    number = match.group(1)
    word = re.sub(r"[ _-]?(\d+|[ivx]+)$", "", match.group(0), flags=re.IGNORECASE).lower()
    return (int(number) if number.isdigit() else _roman(number)), word


def ordered_classes(classes: Iterable[str], files: Iterable[str] = ()) -> bool:
    """True for three classes or more that are grades: the classes of a known graded MedMNIST
    file, names like ``grade_2``/``stage III``/``KL3`` sharing one word, or severities
    (mild, moderate, severe...; "mild_demented", "moderate_demented": one word beside them).
    Bare codes (``class_3``) say nothing about order."""
    names = [c for c in classes if c]
    if len(names) < 3:
        return False
    if any(name.lower().startswith(GRADED_FILES) for name in files):
        return True
    graded = [n for n in names if n.lower() not in ("normal", "none")]
    grades = [_grade(n) for n in graded]
    if grades and all(grades):
        return len({word for _, word in grades}) == 1
    severities = [_severity(n) for n in names]
    if not all(severities):
        return False
    beside = {rest for _, rest in severities if rest}  # "dr" of "proliferative_dr"; none of "mild"
    return len(beside) <= 1 and len({rank for rank, _ in severities}) == len(names)


def grade_order(classes: Iterable[str]) -> list[str]:
    """Ordered classes (ordered_classes said so) least first: normal, then by grade number or
    severity word; codes (``class_2``) in their number's order."""
    def rank(name: str) -> tuple[int, int]:
        if name.lower() in ("normal", "none"):
            return (0, -1)
        grade, severity = _grade(name), _severity(name)
        if grade:
            return (1, grade[0])
        if severity:
            return (1, severity[0])
        digits = re.findall(r"\d+", name)
        return (1, int(digits[-1]) if digits else 0)

    return sorted(classes, key=rank)
