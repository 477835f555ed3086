"""Which phases can train on an organized dataset, and in one sentence why not.

The Train menu shows a phase that cannot work disabled with that sentence, and
``train`` refuses it before a run folder is made (a run that could never train is
not left behind).
"""

from __future__ import annotations

from typing import Any

from app.data import split_rows
from app.workspace import Workspace

VOLUME_KINDS = ("volume", "dicom_series", "npz")  # what a 3D phase reads (cube3d.select_rows)
LABEL_FIX = "Give it labels (class folders or a label table), then organize again."


def phase_problem(ws: Workspace, dataset: str, phase_name: str) -> str | None:
    """Why phase ``phase_name`` cannot train on ``dataset`` (None: it can).

    Only what the organized rows decide is judged here (labels, classes, 3D items);
    a validation split too small is still refused by ``train`` with its own message.
    """
    from models import get_phase_class

    spec = get_phase_class(phase_name).spec
    if spec.components:
        return None  # fitted from trained runs: the menu asks for those first
    return rows_problem(spec, split_rows(ws, dataset, "train"))


def rows_problem(spec: Any, rows: list[dict[str, Any]]) -> str | None:
    """``phase_problem`` for the train split's ``rows``."""
    if spec.input_dims == 3:
        rows = [r for r in rows if r["kind"] in VOLUME_KINDS]
        if not rows:
            return "needs 3D volumes (CT or MR series, NIfTI or 3D .npz); this dataset holds 2D images only."
    labeled = [r for r in rows if r["labeled"] and r["label"]]
    if spec.needs_labels:
        if not labeled:
            return f"needs labeled images; this dataset has none. {LABEL_FIX}"
        classes = sorted({r["label"] for r in labeled})
        if spec.output == "class_probabilities" and len(classes) < 2:
            return f"needs two classes or more to tell apart; this dataset's labeled images are all {classes[0]!r}."
        return None
    if not [r for r in rows if not r["labeled"] or r["label"] == "normal"]:
        return ("learns what normal looks like from normal or unlabeled images; "
                "this dataset's training images are all labeled abnormal.")
    return None
