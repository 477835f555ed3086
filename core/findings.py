"""The findings a dataset row names: its source label split at "|" ("effusion|mass"), with
"normal" (no finding) left out. Shared by the organizer (which findings a dataset has) and
the classifiers (each image's 0/1 target per finding)."""

from __future__ import annotations

from typing import Any

NO_FINDING = "normal"
FINDING_CALL = 0.5  # a finding's probability that calls it where validation chose no threshold (MedMNIST's cut)


def row_findings(row: dict[str, Any]) -> list[str]:
    """The findings a labeled row's source label names (none for "normal")."""
    return [part for part in str(row.get("source_label") or "").split("|") if part and part != NO_FINDING]
