"""Datasets whose images show several findings at once (ChestMNIST's 14 columns, NIH
ChestX-ray14's "Effusion|Infiltration" rows, RSNA's haemorrhage subtypes).

Such a dataset trains one probability per finding (models/supervised.py, ``multilabel``)
rather than one class per image: squeezing "effusion|mass" into one class would teach the
model that an effusion is not a mass. The rows keep their ``label`` (the anomaly class of
the first telling finding, "normal" for none) for every other use: splits, the VAE's
normal images, the counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from app.organize.rows import natural_key
from core.findings import row_findings

MIN_SHARE = 0.02  # of the labeled images showing two findings or more: a multi-label source
MIN_IMAGES = 5  # ... and at least this many (a stray "a|b" from two label sources decides nothing)


def dataset_findings(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The findings to train one probability each on, in natural order, when the labeled
    rows come from a multi-label source (at least MIN_SHARE of them, and MIN_IMAGES, name
    several findings); an empty list for a dataset of one class per image."""
    labeled = [row_findings(r) for r in rows if r.get("labeled")]
    several = sum(1 for found in labeled if len(found) > 1)
    if not labeled or several < max(MIN_IMAGES, MIN_SHARE * len(labeled)):
        return []
    counts = Counter(name for found in labeled for name in found)
    return sorted(counts, key=natural_key)
