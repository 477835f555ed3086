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

from core.errors import TrainingError


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    import torch

    from app.atomic import temp_sibling

    tmp = temp_sibling(path)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    problem = _structure_problem(payload)
    if problem:
        raise TrainingError(f"{path} is damaged or was not written by this tool: {problem}. Retrain this run "
                            "(or restore the file from a backup).")
    return payload


# The plain-data structure every checkpoint has (weights_only=True already refuses code).
_SHAPE: dict[str, type | tuple[type, ...]] = {
    "phase": str, "classes": list, "model_args": dict, "config": dict, "model_state": dict,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "extra": dict, "epoch": int, "best_metric": (int, float), "history": list, "stale": int, "finished": bool,
    "optimizer_state": dict, "scheduler_state": dict, "ema_state": dict, "epoch_images": int,
}


def _structure_problem(payload: dict[str, Any]) -> str | None:
    import torch

    for key, kind in _SHAPE.items():
        if key not in payload:
            return f"the key {key!r} is missing"
        if not isinstance(payload[key], kind) or isinstance(payload[key], bool):
            return f"{key!r} is a {type(payload[key]).__name__}, not a {_kind_name(kind)}"
    for key, kind in _OPTIONAL.items():
        if key in payload and not isinstance(payload[key], kind):
            return f"{key!r} is a {type(payload[key]).__name__}, not a {_kind_name(kind)}"
    if not all(isinstance(c, str) for c in payload["classes"]):
        return "'classes' holds something other than names"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["model_state"].items()):
        return "'model_state' holds something other than named tensors"
    if not all(isinstance(k, str) for k in payload["config"]):
        return "'config' has a key that is not text"
    return None


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "mapping", list: "list", str: "text", int: "whole number", float: "number", bool: "true/false"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def rebuild_phase(payload: dict[str, Any]) -> Any:
    """A phase object, weights loaded, from a checkpoint payload alone."""
    from models import get_phase_class

    cls = get_phase_class(payload["phase"])
    # Settings an older version wrote and this one no longer has are left out.
    known = {f.name for f in dataclasses.fields(cls.Config)}
    config = {k: v for k, v in payload["config"].items() if k in known}
    if "pretrained" in config:
        config["pretrained"] = False  # the weights come from the checkpoint
    try:
        phase = cls(cls.Config(**config), payload["classes"])
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise TrainingError(f"This {payload['phase']} checkpoint's settings cannot be used ({type(err).__name__}: "
                            f"{str(err)[:160]}). Retrain the run.") from err
    rebuilt = cls.rebuild(payload["model_args"])
    if rebuilt is not None:  # a model its Config alone cannot build
        phase.model = rebuilt
        phase.settle(payload["model_args"])  # what it tells from its model better than an old config
    try:
        phase.model.load_state_dict(payload["model_state"])
    except RuntimeError as err:
        raise TrainingError(
            f"This {payload['phase']} checkpoint does not fit the current model ({str(err).splitlines()[0][:160]}). "
            "It was written by an older version of the app: train the run again under a new name "
            "(a hybrid run refits in seconds)."
        ) from err
    phase.model.eval()
    _restore_extra(phase, payload["phase"], payload.get("extra", {}))
    return phase


def _restore_extra(phase: Any, name: str, extra: dict[str, Any]) -> None:
    """Set the plain values a checkpoint keeps beside the weights, each checked against its kind."""
    import torch

    allowed = set(phase.extra())
    allowed |= {"threshold"}
    for key, value in extra.items():
        if key not in allowed:
            raise TrainingError(f"This {name} checkpoint sets {key!r}, which a {name} model does not keep. "
                                "It was damaged or not written by this tool: retrain the run.")
        current = getattr(phase, key, None)
        numbers = (int, float)
        fits = (value is None or current is None
                or (isinstance(current, numbers) and isinstance(value, numbers) and not isinstance(value, bool))
                or (isinstance(current, torch.Tensor) and isinstance(value, torch.Tensor))
                or type(current) is type(value))
        if not fits:
            raise TrainingError(f"This {name} checkpoint's {key!r} is a {type(value).__name__} where a "
                                f"{type(current).__name__} belongs. It was damaged: retrain the run.")
        setattr(phase, key, value)


def delete_run(ws: Any, run: str) -> list[str]:
    """Delete training run ``run`` (its checkpoints, metadata and evaluation; an exported bundle
    stays), and the hidden runs of its recipe search (trials and members: ``trial_of``), which
    nothing else lists or uses. Each is renamed aside first, so that a kill part-way leaves no
    half run (``sweep`` ends it). Returns the runs deleted, ``run`` first.

    Raises:
        DatasetError: no such run.
        BusyError: a process trains it (or one of its hidden runs) now.
    """
    import shutil

    from app.atomic import temp_sibling

    ws.run_metadata(run)  # the name checked, and a clear error for a run that is not there
    hidden = [m["run"] for m in ws.runs() if m.get("trial_of") == run]
    deleted = []
    for name in [run, *hidden]:
        folder = ws.run_dir(name)
        with ws.lock("run", name):
            aside = temp_sibling(folder, "tmp")  # a kill before the rmtree: sweep removes it
            os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)
        deleted.append(name)
    return deleted
