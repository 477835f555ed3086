"""One training loop for every phase (a phase's ``step(batch)`` gives the loss).

Seeded and deterministic on CPU: batch order and augmentation come from a
generator seeded per epoch, so a run resumed from its last checkpoint ends
where an uninterrupted one would. A checkpoint is written after every epoch.
"""

from __future__ import annotations

import dataclasses
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.checkpoints import load_checkpoint, rebuild_phase, save_checkpoint
from app.engine import (Callback, Checkpoints, EarlyStopping, EpochProgress, LoopState, RunMetadata, StopWhenAsked,
                        TimeBudget, WeightAverage, run_epochs)
from app.data import phase_inputs, position_codes, split_rows
from core.errors import DatasetError, TrainingError
from core.metrics import anomaly_auroc, classification_metrics, finding_figures
from app.laterality import FLIPS, flips_record
from app.names import check_name
from app.progress import Progress, report
from app.runtime import (barrier, current_runtime, fast_layout, optimizer_options, plain_layout,
                         wrapped_for_training)
from app.state import Kind, read_state, write_state
from app.runs import Run
from app.workspace import Workspace, now_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    run: str
    path: Path
    phase: str
    epochs_done: int
    resumed_from: int
    metrics: dict[str, Any]
    status: str = "complete"  # or "stopped": asked to stop (Ctrl-C) before the plan ended; training it again resumes


def new_run_name(dataset: str, phase: str) -> str:
    return f"{dataset}-{phase}-{time.strftime('%Y%m%d-%H%M%S')}"


def validation_metrics(phase: Any, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The numbers watched during training; ``monitor`` is the one early stopping reads."""
    if getattr(phase, "multilabel", False):
        m = finding_figures(outputs, targets, 0.5)
        return {"val_accuracy": m["accuracy"], "val_auc": m["roc_auc_ovr"],
                "monitor": m["roc_auc_ovr"] if not math.isnan(m["roc_auc_ovr"]) else m["accuracy"]}
    if phase.spec.output == "class_probabilities":
        m = classification_metrics(outputs, targets, phase.classes)
        auc = m["roc_auc_ovr"]
        return {"val_accuracy": m["accuracy"], "val_balanced_accuracy": m["balanced_accuracy"],
                "val_auc": auc, "monitor": auc if not math.isnan(auc) else m["balanced_accuracy"]}
    auroc = anomaly_auroc(targets, outputs)
    return {"val_auroc": auroc, "monitor": auroc if not math.isnan(auroc) else -float(outputs.mean())}


def predict_batches(phase: Any, images: "Any", batch_size: int, device: str = "cpu") -> np.ndarray:
    """The phase's outputs for ``images`` (a tensor), a batch at a time, in eval mode, on the CPU."""
    import torch

    phase.model.eval()
    parts = [phase.predict(images[i : i + batch_size].to(device)).float().cpu()
             for i in range(0, len(images), batch_size)]
    return torch.cat(parts).numpy() if parts else np.empty(0)


AUGMENTATIONS = ("none", "standard", "strong")


def _augment(images: "Any", generator: "Any", kind: str = "standard", flips: bool = True) -> "Any":
    """Random changes of a training batch, every draw from ``generator`` (so resumable).

    standard: left-right flips, and one shift of up to 1/16 of the side per batch.
    strong: flips, and per image a rotation (up to 10 degrees; volumes: about each of
    their three axes), zoom (0.9-1.1), shift (up to 1/16 of the side) and a
    gamma/contrast change (0.8-1.25), the usual medical set.
    ``flips`` False: no left-right flips (classes that mirror each other, app/laterality.py);
    the same numbers are drawn, so nothing else changes.
    """
    import torch

    if kind == "none":
        return images
    # The draws come from the CPU generator (resumable on any device) and go where the images are.
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device) & flips
    images = torch.where(flip.view(-1, *[1] * (images.dim() - 1)), images.flip(-1), images)
    if kind == "standard":
        limit = max(1, images.shape[-1] // 16)
        dy, dx = (int(v) for v in torch.randint(-limit, limit + 1, (2,), generator=generator))
        return torch.roll(images, shifts=(dy, dx), dims=(-2, -1))
    n, dims = len(images), images.dim() - 2
    uniform = lambda low, high, *shape: low + (high - low) * torch.rand(n, *shape, generator=generator)  # noqa: E731
    angles, zoom = torch.deg2rad(uniform(-10, 10, 1 if dims == 2 else 3)), uniform(0.9, 1.1)
    shift = uniform(-1 / 8, 1 / 8, dims)  # grid units: 1/16 of the side
    matrix = _rotation(angles) / zoom[:, None, None]
    theta = torch.cat([matrix, shift[:, :, None]], dim=2).to(images.device)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    images = torch.nn.functional.grid_sample(images, grid, padding_mode="border", align_corners=False)
    gamma = torch.exp(uniform(-0.22, 0.22)).view(-1, *[1] * (images.dim() - 1)).to(images.device)
    if dims == 2:
        return images.clamp(0, 1) ** gamma
    # Volumes: the intensity change touches the first channel only; a second one holds the
    # cube's position code (models/cube3d.py), constant, which rotation and zoom keep.
    return torch.cat([images[:, :1].clamp(0, 1) ** gamma, images[:, 1:]], dim=1)


def _resident(images: "Any", rt: Any) -> "Any":
    """The training images on the GPU once, where they take under a quarter of its free
    memory: each batch is then cut and augmented there, with no copy from the host per
    step. As they are on the CPU, for volumes read a batch at a time, or when too large."""
    import torch

    if not rt.cuda or not isinstance(images, torch.Tensor):
        return images
    free, _ = torch.cuda.mem_get_info(torch.device(rt.device))
    if images.element_size() * images.nelement() > free // 4:
        return images
    return images.to(rt.device)


def mix_batch(images: "Any", targets: "Any", classes: int, share: float, generator: "Any") -> tuple["Any", "Any"]:
    """Mixup (Zhang et al., ICLR 2018): each image blended with another of the batch,
    ``share`` of itself and the rest of the other, and its target the same blend of the
    two one-hot labels (class probabilities, which the classifiers' cross-entropy takes
    as they are); several findings' 0/1 targets (N, findings) are blended as they are.
    ``share`` is drawn per batch from Beta(alpha, alpha)."""
    import torch

    partner = torch.randperm(len(images), generator=generator)
    one_hot = targets.float() if targets.dim() == 2 else torch.nn.functional.one_hot(targets, classes).float()
    return (share * images + (1 - share) * images[partner],
            share * one_hot + (1 - share) * one_hot[partner])


def _rotation(angles: "Any") -> "Any":
    """Rotation matrices (N, d, d) from one angle (2D) or three, about each axis (3D)."""
    import torch

    def plane(angle: "Any", i: int, j: int, d: int) -> "Any":
        m = torch.eye(d).repeat(len(angle), 1, 1)
        c, s = torch.cos(angle), torch.sin(angle)
        m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c, -s, s, c
        return m

    if angles.shape[1] == 1:
        return plane(angles[:, 0], 0, 1, 2)
    return plane(angles[:, 0], 0, 1, 3) @ plane(angles[:, 1], 0, 2, 3) @ plane(angles[:, 2], 1, 2, 3)


class Schedule:
    """The learning-rate factor per step: a linear warm-up, then a cosine to zero at
    ``total`` steps. ``stretch`` refits the rest of the cosine to a new end without a jump:
    the factor goes on from where it is. An object, not a closure, so that the scheduler's
    state_dict keeps where it was stretched and a resumed run follows the same curve."""

    def __init__(self, total: int, warmup: int) -> None:
        self.total, self.warmup = total, warmup
        self.anchor_step, self.anchor_progress = warmup, 0.0  # the cosine's progress is 0 when warm-up ends

    def progress(self, step: int) -> float:
        span = max(1, self.total - self.anchor_step)
        return min(1.0, self.anchor_progress + (1.0 - self.anchor_progress) * (step - self.anchor_step) / span)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))

    def stretch(self, step: int, total: int) -> None:
        if step >= self.warmup:
            self.anchor_step, self.anchor_progress = step, self.progress(step)
        self.total = total


FIT_EPOCHS = 3  # epochs timed before a time-limited run fits its schedule to the time left
TIME_MARGIN = 0.95  # the share of the time left the fitted schedule plans to use
MIN_FIT = 10  # a time-limited run's epochs are cut to a sample of the training set when fewer would fit
VAL_WATCH = 2000  # validation during training watches at most this many images (a fixed random sample):
# enough to choose an epoch and fit a temperature (a standard error near 0.01 on accuracy), and on a
# large set no longer the larger part of a short epoch


def epoch_sample(train_images: int, seconds_per_epoch: float, time_limit_s: float, batch_size: int) -> int | None:
    """How many training images each epoch of a time-limited run draws (a fresh random sample
    every epoch), so that MIN_FIT epochs fit in the time: None (all of them) when a whole
    epoch already fits MIN_FIT times. A large set then still gets a schedule, early stopping
    and a best epoch chosen on validation, rather than one unfinished pass over it."""
    if seconds_per_epoch * MIN_FIT <= time_limit_s:
        return None
    fits = int(train_images * time_limit_s / (MIN_FIT * seconds_per_epoch))
    return min(train_images, max(4 * batch_size, fits))


def fitted_epochs(done: int, ceiling: int, seconds_per_epoch: float, seconds_left: float) -> int:
    """How many epochs in all a time-limited run can finish: ``done`` plus as many as fit
    in ``seconds_left`` (with a margin), never more than ``ceiling`` nor fewer than ``done + 1``."""
    more = int(TIME_MARGIN * seconds_left / max(seconds_per_epoch, 1e-9))
    return max(done + 1, min(ceiling, done + more))


def train(
    ws: Workspace,
    dataset: str,
    phase_name: str,
    *,
    run: str | None = None,
    patience: int = 10,
    time_limit_s: float | None = None,
    max_epochs: int | None = None,
    init_from: str | None = None,
    epoch_images: int | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    ood_gate: bool = True,
    **overrides: Any,
) -> RunResult:
    """Train (or resume, or fit) phase ``phase_name`` on an organized dataset.

    A run folder that already holds ``last.pt`` is resumed from its last
    finished epoch, with the configuration it was started with. A new run with
    ``init_from`` starts from the weights that run ended with (same phase and model), with
    its own optimizer and schedule (a warm restart). With
    ``time_limit_s`` (training time: the clock starts once the images are loaded)
    no epoch starts that would end past the limit, and after its first
    FIT_EPOCHS epochs the plan is refitted to what the time left holds (timed on the
    epochs after the first, which carries the warm-up; on a GPU the clock is read after
    its queued work): fewer epochs when the run would not finish in time (the
    learning-rate schedule then ends with the time, rather than being cut off high), and
    more, up to ``max_epochs``, when time would be left over (the plan a caller guessed
    before anything was timed, e.g. from a probe that counted CUDA's start-up).
    When a whole epoch would take more than a MIN_FIT-th of the limit, each epoch draws a
    fresh random sample of the training images instead (epoch_sample; the planned epochs
    scaled to as many images in all). ``epoch_images`` sets that sample's size
    directly (epochs then count samples of that size). ``ood_gate`` False: no
    out-of-distribution gate is fitted (a recipe search's hidden runs, which never predict).

    Raises:
        DatasetError: no such dataset, no rows for this phase, or a validation split
            too small to choose the best epoch on.
        TrainingError: a checkpoint cannot be resumed, or the settings are invalid.
        BusyError: another process is training this run.
    """
    if run is not None:
        check_name(run, "run name")
    dataset_meta = ws.dataset_metadata(dataset)  # clear error when the dataset is missing
    tconfig = read_state(ws.organized_path(dataset) / "training_config.json", Kind.TRAINING_CONFIG)
    classes = tconfig["classes"]
    rt = current_runtime()
    run = run or _agreed(rt, new_run_name(dataset, phase_name))
    run_dir = ws.run_dir(run)  # checks the name
    if not (run_dir / "last.pt").exists():  # a new run: refuse what could never train, before its folder exists
        from app.readiness import phase_problem

        problem = phase_problem(ws, dataset, phase_name)
        if problem:
            raise DatasetError(f"Phase {phase_name!r} cannot train on {dataset!r}: it {problem}")
    # One process trains a run at a time (under torchrun, rank 0 speaks for all).
    with ws.lock("run", run) if rt.main else contextlib.nullcontext():
        return _train_locked(ws, dataset, dataset_meta, phase_name, run, run_dir, tconfig, classes, patience,
                             progress, should_stop, time_limit_s, overrides, max_epochs, init_from, epoch_images,
                             ood_gate)


def _train_locked(ws: Workspace, dataset: str, dataset_meta: dict[str, Any], phase_name: str, run: str,
                  run_dir: Path, tconfig: dict[str, Any], classes: list[str], patience: int,
                  progress: Progress | None, should_stop: Callable[[], bool] | None,
                  time_limit_s: float | None, overrides: dict[str, Any],
                  max_epochs: int | None = None, init_from: str | None = None,
                  epoch_images: int | None = None, ood_gate: bool = True) -> RunResult:
    import torch

    from models import create_phase, get_phase_class
    from models.configs import resolve

    rt = current_runtime()
    last = run_dir / "last.pt"
    resumed = load_checkpoint(last) if last.exists() else None
    if resumed and resumed.get("finished"):
        meta = read_state(run_dir / "metadata.json", Kind.RUN_METADATA)
        return RunResult(run, run_dir, phase_name, resumed["epoch"], resumed["epoch"], meta.get("metrics", {}))
    cls = get_phase_class(phase_name)
    balance = tconfig.get("balance", "class_weights")
    # Dataset-wide settings (models.configs.DATASET_WIDE): colour data trains colour models, the
    # organizer's image size, the labeled fraction, how class imbalance is handled.
    dataset_wide = {"image_size": tconfig["image_size"], "channels": int(tconfig.get("channels", 1)),
                    "labeled_fraction": tconfig.get("labeled_fraction", 1.0),
                    "class_weights": balance == "class_weights"}
    if tconfig.get("findings") and "multilabel" in cls.Config.__dataclass_fields__:
        # Several findings per image (app/organize/multilabel.py): a classifier gives each its own probability.
        # Each finding is its own yes/no, so there are no class shares to even out.
        classes, dataset_wide["multilabel"], dataset_wide["class_weights"] = list(tconfig["findings"]), True, False
    if resumed:  # with the settings it was started with (a checkpoint from before a setting existed: the dataset's)
        config = dict(resumed["config"])
        fields = set(cls.Config.__dataclass_fields__)
        config.update({k: v for k, v in dataset_wide.items() if k in fields and k not in config and k != "class_weights"})
        sources = dict(resumed.get("setting_sources") or {k: "earlier" for k in config})  # from before sources were kept
    else:
        resolved = resolve(cls.Config, dataset_wide, overrides)
        config, sources = resolved.values, resolved.sources
    torch.manual_seed(int(config.get("seed", 0)))
    try:
        phase = create_phase(phase_name, classes, **config)
    except (TypeError, ValueError) as err:
        raise TrainingError(f"Cannot set up phase {phase_name!r}: {err}") from err
    phase.first_config = phase.config_dict()  # a value the phase itself settled (pretrained weights) is its own
    phase.setting_sources = {k: sources.get(k, "default") if v == config.get(k) else "phase"
                             for k, v in phase.first_config.items()}
    if not float(getattr(phase.config, "mixup", 0.0) or 0.0) >= 0:
        raise TrainingError(f"Mixup's alpha must be 0 (off) or more (e.g. 0.2), not {phase.config.mixup}.")
    if getattr(phase.config, "augment", "standard") not in AUGMENTATIONS:
        raise TrainingError(f"Unknown augmentation {phase.config.augment!r}; choose one of {', '.join(AUGMENTATIONS)}.")
    if getattr(phase.config, "flips", "auto") not in FLIPS:
        raise TrainingError(f"Flips must be one of {', '.join(FLIPS)}, not {phase.config.flips!r}.")
    if init_from and not resumed:
        _start_from(ws, phase, init_from)  # refused before the run's folder exists
    run_dir.mkdir(parents=True, exist_ok=True)
    base = {"run": run, "phase": phase_name, "dataset": dataset, "classes": classes,
            **settings_record(phase), "balance": balance, "created": now_iso(),
            "dataset_version": dataset_meta.get("version", ""), "device": rt.describe(), **_pretrained_record(phase)}
    if init_from and not resumed:
        base["initialized_from"] = init_from
    if (run_dir / "metadata.json").exists():
        before = read_state(run_dir / "metadata.json", Kind.RUN_METADATA)
        for kept in ("created", "dataset_version", "pretrained_weights", "initialized_from", "recipe", "trials",
                     "epoch_images", "time_plan"):  # what the run began with
            if kept in before:
                base[kept] = before[kept]
    if rt.main:
        write_state(run_dir / "metadata.json", Kind.RUN_METADATA, {**base, "status": "running"})
    try:
        if not phase.spec.trainable:
            result = _fit(ws, phase, dataset, run_dir, base, progress)
        else:
            result = _loop(ws, phase, dataset, run_dir, base, resumed, patience, progress, should_stop, time_limit_s,
                           max_epochs, epoch_images)
        if rt.main and phase.spec.input_dims == 2 and ood_gate:
            fit_ood_gate(ws, dataset, run_dir, phase.config, progress)
        return result
    except BaseException as err:
        # Never leave a run marked running after it failed or was stopped at once (a second
        # Ctrl-C): say so, keep what was saved; a run with a checkpoint resumes from it.
        if rt.main:
            failed = read_state(run_dir / "metadata.json", Kind.RUN_METADATA)
            reason = "stopped by Ctrl-C" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {str(err)[:300]}"
            write_state(run_dir / "metadata.json", Kind.RUN_METADATA,
                        {**failed, "status": "failed" if not last.exists() else "stopped",
                         "error": reason, "finished": now_iso()})
        raise


MIN_VAL_IMAGES = 2


def settings_record(phase: Any) -> dict[str, Any]:
    """What a run's metadata says of its settings: the values (``config``, flat, what rebuilds
    the phase), the same grouped by layer (``settings``: model, data, training, post_hoc) and
    where each came from (``setting_sources``: user, phase, dataset, default; "run" for a value
    the run itself changed, e.g. epochs fitted to a time budget)."""
    from models.configs import layered

    config = phase.config_dict()
    started = getattr(phase, "setting_sources", {})
    first = getattr(phase, "first_config", config)
    sources = {k: started.get(k, "default") if config.get(k) == first.get(k) else "run" for k in config}
    return {"config": config, "settings": layered(phase.config), "setting_sources": sources}


def _pretrained_record(phase: Any) -> dict[str, Any]:
    """Which pretrained weights the model really started from (None: from scratch), for phases that take them."""
    if not hasattr(phase.config, "pretrained"):
        return {}
    source = getattr(phase.model, "pretrained_source", "")
    if not source:
        return {"pretrained_weights": None}
    from app.organize.scan import file_sha256

    return {"pretrained_weights": {"file": Path(source).name, "sha256": file_sha256(Path(source))}}


def check_splits(phase: Any, dataset: str, train_y: Any, val_y: Any) -> None:
    """Refuse, before the first epoch, splits a phase cannot train or choose its best epoch on.

    Raises:
        DatasetError: an empty train split, or a validation split too small or with one
            class only (the best epoch could not be told from the others).
    """
    name = phase.spec.name
    needs_labels = phase.spec.output == "class_probabilities"
    fix = ("Label more images (a label table, or class folders), or merge in another labeled dataset, "
           "then organize again." if needs_labels else "Add more images, then organize again.")
    if len(train_y) == 0:
        what = "labeled image" if needs_labels else "image this phase trains on"
        raise DatasetError(f"The train split of {dataset!r} holds no {what} for phase {name!r}. {fix}")
    if len(val_y) < MIN_VAL_IMAGES:
        raise DatasetError(f"The validation split of {dataset!r} holds {len(val_y)} labeled image(s) for phase "
                           f"{name!r}; at least {MIN_VAL_IMAGES} are needed to choose the best epoch. {fix}")
    if needs_labels and np.ndim(val_y) == 2:  # findings: one shown and absent, or nothing to choose on
        if not any(0 < column.sum() < len(column) for column in np.asarray(val_y).T):
            raise DatasetError(f"The validation split of {dataset!r} holds no finding both shown and absent, so the "
                               f"best epoch cannot be chosen for phase {name!r}. {fix}")
    elif needs_labels and len(set(np.asarray(val_y).tolist())) < 2:
        raise DatasetError(f"The validation split of {dataset!r} holds one class only, so the best epoch "
                           f"cannot be chosen for phase {name!r}. {fix}")


def _start_from(ws: Workspace, phase: Any, run: str) -> None:
    """Start a new run from the weights another run ended with (a warm restart: a fresh
    optimizer and learning-rate schedule); the two must build the same model."""
    payload = load_checkpoint(ws.run_dir(run) / "last.pt")
    if payload.get("model_args") != phase.model_args() or payload.get("phase") != phase.spec.name:
        raise TrainingError(f"Run {run!r} built another model ({payload.get('phase')}, {payload.get('model_args')}); "
                            f"a {phase.spec.name} run with {phase.model_args()} cannot start from its weights.")
    phase.model.load_state_dict(payload["model_state"])


def _agreed(rt: Any, value: str) -> str:
    """Rank 0's value on every process (each would stamp its own run name otherwise)."""
    if rt.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _train_rows(phase: Any, balance: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """The training rows of a phase, resampled when the dataset asks for over/undersampling."""
    from app.organize.dataset_tools import balance_rows

    def rows_for(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        chosen = phase.select_rows(rows)
        if phase.spec.output == "class_probabilities":
            chosen = balance_rows(chosen, balance, phase.config.seed)
        return chosen

    return rows_for


def evened_counts(ws: Workspace, phase: Any, dataset: str, balance: str) -> list[int] | None:
    """Images per class in the training split as organized, when training evened the classes
    out (class weights, over- or undersampling): what the calibration's bias puts back."""
    evened = bool(getattr(phase.config, "class_weights", False)) or balance in ("oversample", "undersample")
    if phase.spec.output != "class_probabilities" or not evened or getattr(phase, "multilabel", False):
        return None
    labels = [r["label"] for r in phase.select_rows(split_rows(ws, dataset, "train"))]
    return [labels.count(c) for c in phase.classes]


def split_tensors(ws: Workspace, phase: Any, dataset: str, split: str, rows_for: Callable,
                  progress: Progress | None) -> tuple[Any, Any]:
    """A split's images (a tensor, or StoredVolumes read a batch at a time) and targets."""
    rows = rows_for(split_rows(ws, dataset, split))
    if split == "val" and len(rows) > VAL_WATCH:  # a fixed sample: the same on every epoch and on resume
        keep = sorted(random.Random(0).sample(range(len(rows)), VAL_WATCH))
        rows = [rows[k] for k in keep]
    if split == "train":
        try:
            phase.check_rows(rows, lambda some: position_codes(ws, some))
        except ValueError as err:
            raise TrainingError(f"Cannot train {phase.spec.name!r} on {dataset!r}: {err}") from err
    return phase_inputs(ws, phase, rows, progress, f"Loading {split} images"), phase.targets(rows)


def _loop(ws: Workspace, phase: Any, dataset: str, run_dir: Path, base: dict[str, Any], resumed: dict | None,
          patience: int, progress: Progress | None, should_stop: Callable[[], bool] | None,
          time_limit_s: float | None = None, max_epochs: int | None = None,
          epoch_images: int | None = None) -> RunResult:
    import torch

    rt = current_runtime()
    if not rt.main:
        progress = None  # one process draws the bars and writes the files
    config = phase.config
    train_x, train_y = split_tensors(ws, phase, dataset, "train", _train_rows(phase, base["balance"]), progress)
    # Validation watches the task itself: every labeled image, normal or not.
    val_rows_for = (lambda rows: [r for r in rows if r["labeled"]]) if phase.spec.output == "anomaly_score" else phase.select_rows
    val_x, val_y = split_tensors(ws, phase, dataset, "val", val_rows_for, progress)
    check_splits(phase, dataset, train_y, val_y)
    started = time.perf_counter()  # a time limit counts training: the images are loaded before the clock starts
    phase.prepare(train_y)
    if rt.world > 1 and phase.changes_between_epochs:
        raise TrainingError(f"Phase {phase.spec.name!r} changes what it trains between epochs, which "
                            "DistributedDataParallel cannot follow: run it without torchrun.")
    fast_layout(phase.model.to(rt.device), rt.device)
    optimizer = torch.optim.AdamW(phase.param_groups(), lr=config.lr, weight_decay=config.weight_decay,
                                  **optimizer_options(rt.device))
    resident = _resident(train_x, rt)  # batches are cut (and augmented) from here
    if resumed:
        drawn = resumed.get("epoch_images")
    elif epoch_images:
        drawn = min(len(train_x), max(2, int(epoch_images)))
    else:
        drawn = _epoch_images(phase, phase.model, train_x, time_limit_s, rt)
        if drawn:  # the caller planned whole epochs: as many images, in smaller epochs
            phase.config = config = dataclasses.replace(config, epochs=math.ceil(config.epochs * len(train_x) / drawn))
            base.update(settings_record(phase))
    if drawn:
        base["epoch_images"] = drawn
    per_rank = (drawn or len(train_x)) // rt.world  # every process takes as many batches, or DDP would wait forever
    steps_per_epoch = math.ceil(per_rank / config.batch_size)
    warmup = max(1, steps_per_epoch // 2 + 1)
    schedule = Schedule(steps_per_epoch * config.epochs, warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = rt.scaler()
    raw = phase.model
    ema = weight_average(raw, float(getattr(config, "ema", 0.0) or 0.0))
    start, best, history, stale = 0, -math.inf, [], 0
    if resumed:
        phase.model.load_state_dict(resumed["model_state"])
        optimizer.load_state_dict(resumed["optimizer_state"])
        scheduler.load_state_dict(resumed["scheduler_state"])
        if ema is not None:
            ema.load_state_dict(resumed["ema_state"])
        start, best, history, stale = resumed["epoch"], resumed["best_metric"], resumed["history"], resumed["stale"]
        log.info("Resuming %s from epoch %d", run_dir.name, start)
    payload = {"phase": phase.spec.name, "classes": phase.classes, "model_args": phase.model_args(),
               "config": phase.config_dict(), "setting_sources": base["setting_sources"],
               **({"epoch_images": drawn} if drawn else {})}
    augment = getattr(config, "augment", "standard")
    if augment != "none":  # the same answer on resume: the same training split
        # Findings are no classes that could mirror each other: an image's labels go in as unknown.
        per_image = train_y if train_y.dim() == 1 else torch.full((len(train_y),), -1)
        base["flips"] = flips_record(getattr(config, "flips", "auto"), train_x, per_image, phase.classes)
    flips = augment != "none" and base["flips"]["used"]
    mixup = float(getattr(config, "mixup", 0.0) or 0.0)

    def validate(s: LoopState, module: Any) -> tuple[Any, dict[str, float]]:
        # What is validated is what is kept: the weights (or their average), with batch-norm
        # statistics measured afresh on training images.
        watched = _precise_bn(module, resident, config.batch_size, rt.device)
        return watched, _validate(phase, watched, raw, val_x, val_y, rt.device)

    def refit(s: LoopState, planned: int, timing: dict[str, Any]) -> None:
        phase.config = dataclasses.replace(phase.config, epochs=planned)
        schedule.stretch(scheduler.last_epoch, steps_per_epoch * planned)
        base.update(settings_record(phase))
        base["time_plan"] = [*(base.get("time_plan") or []), {**timing, "epochs": planned}]
        payload.update(config=base["config"], setting_sources=base["setting_sources"])

    with wrapped_for_training(raw, rt) as trainable:
        state = LoopState(
            phase=phase, rt=rt, raw=raw, trainable=trainable, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
            resident=resident, train_y=train_y, val_x=val_x, val_y=val_y, steps_per_epoch=steps_per_epoch,
            per_rank=per_rank, run_dir=run_dir, base=base, payload=payload, validate=validate,
            augment=lambda images, generator: _augment(images, generator, augment, flips),
            mix=(lambda images, targets, rng, generator: mix_batch(
                images, targets, len(phase.classes), float(rng.beta(mixup, mixup)), generator)) if mixup else None,
            start=start, epoch=start, best=best, stale=stale, history=history, started=started)
        # A time-limited run may refit its plan up to ``ceiling`` epochs; the loop ends at the plan.
        ceiling = max(config.epochs, max_epochs or 0) if time_limit_s is not None else config.epochs
        budget = TimeBudget(time_limit_s, ceiling, FIT_EPOCHS, refit, fitted_epochs, _agreed) \
            if time_limit_s is not None else None
        averaged = [WeightAverage(ema)] if ema is not None else []
        callbacks: list[Callback] = [*averaged, *([budget] if budget else [])]
        callbacks += [Checkpoints(callbacks), RunMetadata(), EpochProgress(progress), EarlyStopping(patience),
                      StopWhenAsked(should_stop)]
        run_epochs(state, callbacks, ceiling, progress)
    epoch, best, stale, history = state.epoch, state.best, state.stale, state.history
    out_of_time = budget is not None and budget.out_of_time
    plain_layout(raw.to("cpu"))
    barrier(rt)
    if rt.main and (run_dir / "best.pt").exists():
        # Post-training fitting (e.g. temperature scaling) on the best weights.
        best_payload = load_checkpoint(run_dir / "best.pt")
        raw.load_state_dict(best_payload["model_state"])
        fitted = phase.finish(val_x, val_y, train_x=train_x, train_counts=evened_counts(ws, phase, dataset, base["balance"]))
        if fitted is not None:
            base = {**base, "calibration": fitted}
            save_checkpoint(run_dir / "best.pt", {**best_payload, "extra": phase.extra()})
    status = "complete" if epoch + 1 >= phase.config.epochs or stale >= patience or out_of_time else "stopped"
    summary = {"best_val_monitor": best, "epochs_trained": len(history)}
    if rt.main:
        write_state(run_dir / "metadata.json", Kind.RUN_METADATA,
                    {**base, "status": status, "epoch": len(history), "best_metric": best,
                     "history": history, "metrics": summary, "finished": now_iso()})
        if status == "complete":
            # Mark the last checkpoint finished so that a rerun returns at once.
            save_checkpoint(run_dir / "last.pt", {**load_checkpoint(run_dir / "last.pt"), "finished": True})
    barrier(rt)
    return RunResult(base["run"], run_dir, phase.spec.name, len(history), start, summary, status)


def _epoch_images(phase: Any, model: Any, train_x: Any, time_limit_s: float | None, rt: Any) -> int | None:
    """epoch_sample for a new run: a time-limited classifier times a few steps of a copy of
    its model (its weights untouched) when an epoch has enough steps to matter."""
    batch = phase.config.batch_size
    if (time_limit_s is None or rt.world > 1 or phase.spec.output != "class_probabilities"
            or len(train_x) < PROBE_STEPS * batch):
        return None
    import copy

    from app.timing import probe_seconds_per_epoch

    with rt.autocast():
        seconds = probe_seconds_per_epoch(copy.deepcopy(model), tuple(train_x.shape[1:]), len(train_x), batch,
                                          rt.device)
    drawn = epoch_sample(len(train_x), seconds, time_limit_s, batch)
    if drawn:
        log.info("An epoch of all %d training images would take about %.0f s: each epoch draws %d of them, so that "
                 "%d epochs fit in %.0f s", len(train_x), seconds, drawn, MIN_FIT, time_limit_s)
    return drawn


PROBE_STEPS = 8  # epochs of fewer steps are not probed (an epoch that short fits any sensible limit)


BN_IMAGES = (128, 512)  # fewest and most training images that re-measure batch-norm statistics
BN_SHARE = 16  # ... and at most a sixteenth of an epoch's images beyond the fewest


def bn_image_count(train_images: int) -> int:
    """How many training images re-measure the batch-norm statistics after an epoch.

    A forward pass costs about a third of a training step, so a sixteenth of the epoch
    keeps the measurement near 2% of the epoch's time; 128 images (every voxel or pixel
    of each, per channel) already pin the statistics far below the trailing average's
    error, which is what broke AdrenalMNIST3D's accuracy (README).
    """
    fewest, most = BN_IMAGES
    return min(train_images, max(fewest, min(most, train_images // BN_SHARE)))


def _validate(phase: Any, watched: Any, raw: Any, val_x: Any, val_y: Any, device: str) -> dict[str, float]:
    """The validation figures of the weights ``watched`` (the phase's model is ``raw`` again after)."""
    phase.model = watched
    try:
        outputs = phase.validation_scores(val_x, val_y.numpy(), device)  # scored as after training (the VAE)
        if outputs is None:
            outputs = predict_batches(phase, val_x, 64, device)
        return validation_metrics(phase, outputs, val_y.numpy())
    finally:
        phase.model = raw


def _precise_bn(model: Any, images: Any, batch_size: int, device: str) -> Any:
    """A copy of ``model`` whose batch-norm running statistics are the plain average over
    ``bn_image_count`` un-augmented training images, measured with its current weights.

    The running statistics gathered during training trail the weights (an exponential
    average over batches the model has since moved on from); on small 3D inputs and with
    averaged weights the gap shifted every prediction to one class. Precise BN (Wu &
    Johnson 2021, torch.optim.swa_utils.update_bn) measures them again; the training
    model itself is left untouched, so resuming stays exact. Models without batch norm
    are returned as they are.
    """
    import copy

    import torch
    from torch.optim.swa_utils import update_bn

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    measured = copy.deepcopy(model)
    count = bn_image_count(len(images))
    spread = torch.linspace(0, len(images) - 1, count).long()  # across the split, whatever its order
    step = max(2, batch_size)
    batches = [images[spread[i : i + step]].to(device) for i in range(0, count, step)]
    update_bn([b for b in batches if len(b) > 1], measured)
    return measured


def weight_average(model: Any, decay: float) -> Any:
    """An exponential moving average of ``model``'s weights and batch-norm statistics
    (torch.optim.swa_utils), updated after every step; None when ``decay`` is 0.

    Validation, the best checkpoint and everything after training use the average,
    which on small datasets is steadier than the last step's weights. The average is
    bias-corrected (ema_decay), as Adam corrects its moments: torch's fixed decay of 0.99
    keeps 0.99^t of the first weights after t steps, so a run much shorter than 100 steps
    (a recipe screened for two epochs of nine batches) validated mostly its initial
    weights (BreastMNIST, two epochs at 64 px: validation AUC 0.72; bias-corrected 0.79;
    the last weights 0.84; benchmarks/short_runs.py). Past a few hundred steps the two are
    the same, so long runs average as before. (A decay warmed up as TensorFlow's
    num_updates does, min(decay, (1 + t) / (10 + t)), read short runs better, 0.83, but
    averages over fewer steps until step 890, nearly all of a 100-epoch BreastMNIST run: the
    one search measured with it fell to 0.888 test AUC, where its seed had given 0.920.)
    """
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise TrainingError(f"The weight average decay must lie between 0 and 1 (e.g. 0.99), not {decay}.")
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(model, multi_avg_fn=_ema_update(decay), use_buffers=True)


def ema_decay(decay: float, updates: int) -> float:
    """The weight average's decay once it holds ``updates`` steps (the first is copied):
    ``decay`` bias-corrected, so that the average weighs every step seen so far as the
    exponential average does, without the weight a fixed decay leaves on the first step:
    decay (1 - decay^updates) / (1 - decay^(updates + 1)), which tends to ``decay``."""
    return decay * (1.0 - decay ** updates) / (1.0 - decay ** (updates + 1))


def _ema_update(decay: float) -> Callable[[list[Any], list[Any], Any], None]:
    """AveragedModel's multi_avg_fn: each average moves towards the model by 1 - ema_decay."""
    import torch

    @torch.no_grad()
    def update(averaged: list[Any], current: list[Any], updates: Any) -> None:
        step = 1.0 - ema_decay(decay, int(updates))
        for mean, now in zip(averaged, current):
            if torch.is_floating_point(mean):
                mean.lerp_(now, step)
            else:  # counters (batch norm's num_batches_tracked)
                mean.copy_(now)

    return update


def _fit(ws: Workspace, phase: Any, dataset: str, run_dir: Path, base: dict[str, Any],
         progress: Progress | None) -> RunResult:
    """Phases built from other runs (PhaseSpec.components): attach them, fit on validation."""
    parts = {}
    for component in phase.spec.components:
        name = getattr(phase.config, f"{component}_run")
        if not name:
            raise TrainingError(f"Phase {phase.spec.name!r} needs a trained {component} run: set {component}_run.")
        parts[component] = load_run_phase(ws, name)
    try:
        phase.attach(**parts)
    except ValueError as err:  # parts that do not fit together (image sizes, preprocessing): say which
        raise TrainingError(str(err)) from err
    val_x, val_y = split_tensors(ws, phase, dataset, "val", phase.select_rows, progress)
    report(progress, "Fitting on validation", 0, 1)
    fitted = phase.fit(val_x, val_y)
    report(progress, "Fitting on validation", 1, 1)
    payload = {"phase": phase.spec.name, "classes": phase.classes, "model_args": phase.model_args(),
               "config": phase.config_dict(), "setting_sources": settings_record(phase)["setting_sources"],
               "model_state": phase.model.state_dict(), "epoch": 0,
               "best_metric": fitted.get("val_auroc", 0.0), "extra": {"threshold": phase.threshold},
               "finished": True}
    save_checkpoint(run_dir / "best.pt", payload)
    save_checkpoint(run_dir / "last.pt", payload)
    write_state(run_dir / "metadata.json", Kind.RUN_METADATA,
                {**base, **settings_record(phase), "status": "complete", "metrics": fitted,
                 "finished": now_iso()})
    return RunResult(base["run"], run_dir, phase.spec.name, 0, 0, fitted)


def load_run_phase(ws: Workspace, run: str) -> Any:
    """The best model of a finished run, ready to predict."""
    meta = ws.run_metadata(run)
    if meta["status"] not in ("complete", "stopped"):
        raise TrainingError(f"Run {run!r} is {run_status(ws, meta)}: finish it first (train it again to resume).")
    return rebuild_phase(load_checkpoint(ws.run_dir(run) / "best.pt"))


def run_status(ws: Workspace, meta: dict[str, Any]) -> str:
    """A run's status as users should read it: 'running' only while a process trains it."""
    from app.locks import is_held

    status = str(meta.get("status", "unknown"))
    if status == "running" and not is_held(ws.lock_path("run", meta["run"])):
        return "interrupted"
    return status


def resumable_runs(ws: Workspace, dataset: str) -> list[dict[str, Any]]:
    """The runs of ``dataset`` that stopped (Ctrl-C) or were cut off (a crash, kill -9) after a
    finished epoch: training them again goes on from there. Newest first. (A recipe search's
    screening runs are not: a search stopped while screening starts again.)"""
    return [meta for meta in reversed(ws.runs())
            if meta["dataset"] == dataset and not meta.get("trial_of")
            and run_status(ws, meta) in ("stopped", "interrupted")
            and (ws.run_dir(meta["run"]) / "last.pt").exists()]


GATE_IMAGES = 2000  # at most this many training (and validation) images fit the out-of-distribution gate


def fit_ood_gate(ws: Workspace, dataset: str, run_dir: Path, config: Any, progress: Progress | None = None) -> None:
    """Fit the run's out-of-distribution gate (app.ood) on its dataset's train and validation images,
    prepared as the model sees them; kept in ``ood_gate.json`` and summed up in metadata.json."""
    import random

    from app.data import load_images
    from app.ood import fit_gate, save_gate

    rows = {split: split_rows(ws, dataset, split) for split in ("train", "val")}
    for split, found in rows.items():
        if len(found) > GATE_IMAGES:
            rows[split] = random.Random(0).sample(found, GATE_IMAGES)
    if len(rows["train"]) < 2:
        log.warning("%s: too few training images to fit an out-of-distribution gate", run_dir.name)
        return
    size, use_clahe = int(config.image_size), bool(getattr(config, "clahe", False))
    channels = int(getattr(config, "channels", 1))
    train_images = load_images(ws, rows["train"], size, progress, "Fitting the out-of-distribution gate",
                               use_clahe=use_clahe, channels=channels)
    val_images = load_images(ws, rows["val"], size, None, use_clahe=use_clahe, channels=channels)
    gate = fit_gate(train_images, val_images, [(r["modality"], r["region"]) for r in rows["train"]])
    save_gate(gate, run_dir)
    Run(ws, run_dir.name).merge(ood_gate={
        "threshold": gate.threshold, "val_flagged": gate.val_flagged, "seen": [list(p) for p in gate.seen],
        "train_images": len(train_images), "val_images": len(val_images)})
