"""Self-describing checkpoints: plain dicts of tensors and plain values.

``torch.load(..., weights_only=True)`` is the only way in, so a crafted pickle
cannot run code; every checkpoint rebuilds its model with no other input.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

from app.errors import TrainingError


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely.

    Raises:
        TrainingError: missing, truncated, or holding anything but plain data
            (a pickle that would run code is refused, never executed).
    """
    import torch

    if not path.exists():
        raise TrainingError(f"{path} does not exist. Train this run first (or again).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise TrainingError(
            f"{path} was refused: it holds Python objects, not plain weights, and loading it "
            "could run code. Use checkpoints written by this tool, or re-save yours as a "
            "state_dict."
        ) from err
    except Exception as err:
        raise TrainingError(f"{path} cannot be read ({type(err).__name__}: {err}). Retrain this run.") from err
    if not isinstance(payload, dict) or "model_state" not in payload or "model_args" not in payload:
        raise TrainingError(f"{path} is not a MedAnomaly checkpoint (no model_state/model_args).")
    return payload


def rebuild_phase(payload: dict[str, Any]) -> Any:
    """A phase object, weights loaded, from a checkpoint payload alone."""
    from models import get_phase_class

    cls = get_phase_class(payload["phase"])
    # Settings an older version wrote and this one no longer has are left out.
    known = {f.name for f in dataclasses.fields(cls.Config)}
    config = {k: v for k, v in payload["config"].items() if k in known}
    if "pretrained" in config:
        config["pretrained"] = False  # the weights come from the checkpoint
    phase = cls(cls.Config(**config), payload["classes"])
    if hasattr(cls, "rebuild"):
        phase.model = cls.rebuild(payload["model_args"])
        phase._args = dict(payload["model_args"])
        if hasattr(phase, "settle"):  # settings the phase can tell from its model better than an old config
            phase.settle()
    try:
        phase.model.load_state_dict(payload["model_state"])
    except RuntimeError as err:
        raise TrainingError(
            f"This {payload['phase']} checkpoint does not fit the current model ({str(err).splitlines()[0][:160]}). "
            "It was written by an older version of the app: train the run again under a new name "
            "(a hybrid run refits in seconds)."
        ) from err
    phase.model.eval()
    for key, value in payload.get("extra", {}).items():
        setattr(phase, key, value)
    return phase
