"""Are a dataset's classes ordered (grades, stages, severities)? Such classes can be trained
with an ordinal-aware loss (models/supervised.py squared_emd), offered where this says yes."""

from __future__ import annotations

import re
from collections.abc import Iterable

GRADED_FILES = ("retinamnist",)  # MedMNIST files whose labels are grades (diabetic retinopathy 0-4)
SEVERITY = ("normal", "none", "minimal", "mild", "moderate", "severe", "proliferative", "critical")
GRADE = re.compile(r"^(?:grade|stage|level|kl|severity|dr|score|birads|bi_rads)[ _-]?(\d+|[ivx]+)$", re.IGNORECASE)


def ordered_classes(classes: Iterable[str], files: Iterable[str] = ()) -> bool:
    """True for three classes or more that are grades: the classes of a known graded MedMNIST
    file, names like ``grade_2``/``stage III``/``KL3`` sharing one word, or severities
    (mild, moderate, severe...). Bare codes (``class_3``) say nothing about order."""
    names = [c for c in classes if c]
    if len(names) < 3:
        return False
    if any(name.lower().startswith(GRADED_FILES) for name in files):
        return True
    matches = [GRADE.match(n) for n in names if n.lower() not in ("normal", "none")]
    if matches and all(matches):
        words = {re.sub(r"[ _-]?(\d+|[ivx]+)$", "", m.group(0), flags=re.IGNORECASE).lower() for m in matches}
        return len(words) == 1
    return all(n.lower() in SEVERITY for n in names)
