"""The training engine: the epoch loop, and callbacks for everything around it.

``run_epochs`` is the loop: train an epoch's batches, measure what would be kept on the
validation split, record the epoch, let each callback act, stop when one asks. What
happens around it is a callback each, in the order they are given:

    WeightAverage   an exponential moving average of the weights, validated and kept instead
    TimeBudget      fits the plan of epochs to a wall-clock limit; stops when time is out
    Checkpoints     best.pt (what is validated, when it improves) and last.pt (to resume)
    RunMetadata     metadata.json's history after every epoch, and the epoch's log line
    EpochProgress   the "Epochs" progress report (with the epoch's figures)
    EarlyStopping   stops after ``patience`` epochs without improvement
    StopWhenAsked   stops after the epoch when asked (Ctrl-C, a job's cancel)

Precise batch norm is not a callback but the validation step itself: what is validated
(and kept) is the trained module with its batch-norm statistics measured afresh.
app.training builds the state (data, optimizer, schedule, resumed checkpoint) and the
callbacks, and finishes the run after the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.checkpoints import save_checkpoint
from app.progress import Progress, report
from app.state import Kind, write_state

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """What the loop and its callbacks share. ``payload``: what every checkpoint carries."""

    phase: Any
    rt: Any
    raw: Any  # the model trained (phase.model outside a step)
    trainable: Any  # the same model as the step calls it (DDP-wrapped under torchrun)
    optimizer: Any
    scheduler: Any
    scaler: Any
    resident: Any  # training images, where batches are cut from
    train_y: Any
    val_x: Any
    val_y: Any
    steps_per_epoch: int
    per_rank: int
    run_dir: Path
    base: dict[str, Any]  # the run's metadata
    payload: dict[str, Any]
    validate: Callable[[Any, Any], tuple[Any, dict[str, float]]]  # (state, module) -> (module kept, metrics)
    mix: Callable[..., Any] | None = None  # (images, targets, generator) -> mixed, or None
    augment: Callable[..., Any] | None = None  # (images, generator) -> augmented
    start: int = 0
    epoch: int = 0
    best: float = -np.inf
    stale: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)  # the time budget's clock
    # set by each epoch
    watched: Any = None  # the module validated this epoch (kept in best.pt when it improved)
    record: dict[str, Any] = field(default_factory=dict)
    improved: bool = False
    stopped_by: str = ""  # the callback that ended the loop ("" while it runs)

    @property
    def config(self) -> Any:
        return self.phase.config


class Callback:
    """Hooks of the loop; each does nothing unless overridden."""

    def module_to_validate(self, s: LoopState, module: Any) -> Any:
        return module

    def on_batch_end(self, s: LoopState, loss: Any, count: int) -> None:
        """After each optimizer step (``count``: the batch's images)."""

    def on_epoch_end(self, s: LoopState) -> None:
        """After the epoch is validated and recorded (``s.record``, ``s.improved``)."""

    def wants_stop(self, s: LoopState) -> bool:
        return False

    def checkpoint_state(self) -> dict[str, Any]:
        """What last.pt must hold for this callback to resume exactly."""
        return {}


def run_epochs(s: LoopState, callbacks: list[Callback], ceiling: int, progress: Progress | None) -> LoopState:
    """Train from epoch ``s.start`` until the plan (``config.epochs``, which callbacks may change,
    at most ``ceiling``) is done or a callback stops it."""
    for epoch in range(s.start, ceiling):
        s.epoch, began = epoch, time.perf_counter()
        seen, total = _train_epoch(s, callbacks, progress)
        module = s.raw
        for callback in callbacks:
            module = callback.module_to_validate(s, module)
        with s.rt.exact():  # kept and compared later on the CPU: exact float32 on a GPU
            s.watched, metrics = s.validate(s, module)
        s.rt.synchronize()  # the GPU's queued work belongs to this epoch's time
        s.record = {"epoch": epoch + 1, "train_loss": total / max(1, seen), **metrics,
                    "seconds": round(time.perf_counter() - began, 2)}
        s.history.append(s.record)
        s.improved = metrics["monitor"] > s.best
        s.best, s.stale = (metrics["monitor"], 0) if s.improved else (s.best, s.stale + 1)
        for callback in callbacks:
            callback.on_epoch_end(s)
        if epoch + 1 >= s.config.epochs:  # the plan (a time fit may have shortened it)
            s.stopped_by = "plan"
        else:
            s.stopped_by = next((type(c).__name__ for c in callbacks if c.wants_stop(s)), "")
        if s.stopped_by:
            break
    if s.stopped_by in ENDED_EARLY:  # a complete run short of its plan: its bar ends, saying why, not "not finished"
        report(progress, "Epochs", s.epoch + 1, s.epoch + 1, ended=ENDED_EARLY[s.stopped_by],
               **{k: v for k, v in s.record.items() if k != "epoch"})
    return s


ENDED_EARLY = {"EarlyStopping": "early stop (validation stopped improving)", "TimeBudget": "out of time"}


def _train_epoch(s: LoopState, callbacks: list[Callback], progress: Progress | None) -> tuple[int, float]:
    """One epoch's batches; (images seen, summed loss). Every random draw derives from
    (seed, epoch): a resumed run repeats the epoch exactly."""
    import torch

    config, rt, epoch = s.config, s.rt, s.epoch
    s.phase.epoch = epoch
    s.phase.start_epoch(epoch)  # e.g. the transfer phase's frozen first stage
    s.raw.train()
    torch.manual_seed(config.seed * 100003 + epoch)
    generator = torch.Generator().manual_seed(config.seed * 100003 + epoch)
    mixing = np.random.default_rng(config.seed * 100003 + epoch) if s.mix is not None else None
    order = torch.randperm(len(s.resident), generator=generator)[: s.per_rank * rt.world][rt.rank :: rt.world]
    total, seen = 0.0, 0
    for k in range(s.steps_per_epoch):
        index = order[k * config.batch_size : (k + 1) * config.batch_size]
        if len(index) < 2 and k > 0 and rt.world == 1:
            continue  # a batch of one breaks batch norm; its images come back next epoch
        images, targets = s.augment(s.resident[index], generator), s.train_y[index]
        if mixing is not None:
            images, targets = s.mix(images, targets, mixing, generator)
        images, targets = images.to(rt.device, non_blocking=True), targets.to(rt.device)
        s.phase.model = s.trainable  # the step calls through DDP, which averages the gradients
        try:
            with rt.autocast():
                loss = s.phase.step((images, targets))["loss"]
        finally:
            s.phase.model = s.raw
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
        s.scaler.unscale_(s.optimizer)
        torch.nn.utils.clip_grad_norm_(s.raw.parameters(), 5.0)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.scheduler.step()
        for callback in callbacks:
            callback.on_batch_end(s, loss, len(index))
        total, seen = total + float(loss.detach()) * len(index), seen + len(index)
        report(progress, "Batches", k + 1, s.steps_per_epoch, epoch=f"{epoch + 1}/{config.epochs}", loss=loss.item())
    return seen, total


# -- the callbacks ----------------------------------------------------------------------------
class WeightAverage(Callback):
    """An exponential moving average of the weights (``average``: torch's AveragedModel),
    updated after every step; validated, kept and resumed in place of the last weights."""

    def __init__(self, average: Any) -> None:
        self.average = average

    def module_to_validate(self, s: LoopState, module: Any) -> Any:
        return self.average.module

    def on_batch_end(self, s: LoopState, loss: Any, count: int) -> None:
        self.average.update_parameters(s.raw)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"ema_state": {k: v.cpu() for k, v in self.average.state_dict().items()}}


class TimeBudget(Callback):
    """After ``fit_after`` epochs, fits the plan of epochs (and the learning-rate schedule) to
    the time left, and refits it whenever the epochs' pace has changed enough to move the
    plan (a load that came or went): timed on the mean of the last ``window`` epochs less
    their slowest and fastest (what the time left holds if their mix goes on), at most once
    per ``window`` epochs, so that a few slow epochs neither shrink the whole run for good
    nor set the plan swinging (a load that came and went every few epochs once moved it
    128, 160, 100, 159 epochs in four epochs, on the median of five). Stops, with every
    process together, when the next epoch would not fit."""

    window = 9

    def __init__(self, limit_s: float, ceiling: int, fit_after: int,
                 refit: Callable[[LoopState, int, dict[str, Any]], None],
                 fitted_epochs: Callable[[int, int, float, float], int], agreed: Callable[[Any, str], str]) -> None:
        self.limit_s, self.ceiling, self.fit_after = limit_s, ceiling, fit_after
        self.refit, self.fitted_epochs, self.agreed = refit, fitted_epochs, agreed
        self.out_of_time = False
        self.fitted_at = -1  # the epoch of the last fit (in this process)

    def on_epoch_end(self, s: LoopState) -> None:
        epoch, planned = s.epoch, s.config.epochs
        first = epoch + 1 - s.start == self.fit_after
        if epoch + 1 - s.start < self.fit_after or epoch + 1 >= self.ceiling or not first and epoch + 1 >= planned:
            return  # too early to time, or the plan is done (its learning rate has reached zero)
        if first:
            self.fitted_at = epoch
        elif epoch - self.fitted_at < self.window:
            return
        # The first epoch of a process carries its warm-up (CUDA context, cuDNN's choice of
        # kernels, caches): the plan is timed on the ones after it.
        timed = (s.history[s.start + 1 : epoch + 1] or s.history[s.start : epoch + 1])[-self.window:]
        seconds = sorted(r["seconds"] for r in timed)
        per_epoch = float(np.mean(seconds[1:-1] if len(seconds) >= 5 else seconds))  # one odd epoch is not a pace
        left = self.limit_s - (time.perf_counter() - s.started)
        fits = int(self.agreed(s.rt, str(self.fitted_epochs(epoch + 1, self.ceiling, per_epoch, left))))
        # Later refits only for a change worth a new schedule: two epochs, and a seventh of those left.
        if fits == planned or not first and abs(fits - planned) < max(2, (planned - epoch - 1) / 7):
            return
        self.fitted_at = epoch
        log.info("%s: %d epochs fit in the time left (%s planned, %.1f s an epoch); the learning-rate "
                 "schedule is fitted to %d", s.run_dir.name, fits, planned, per_epoch, fits)
        self.refit(s, fits, {"after_epoch": epoch + 1, "seconds_per_epoch": round(per_epoch, 2),
                             "seconds_left": round(left, 1)})

    def wants_stop(self, s: LoopState) -> bool:
        spent = time.perf_counter() - s.started + s.record["seconds"]
        self.out_of_time = self.agreed(s.rt, str(spent > self.limit_s)) == "True"  # every process stops together
        return self.out_of_time


class Checkpoints(Callback):
    """best.pt when the validated module improved; last.pt (with the optimizer, the schedule and
    every callback's state) after every epoch. Written by the main process only."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = callbacks  # whose checkpoint_state last.pt carries

    def on_epoch_end(self, s: LoopState) -> None:
        if not s.rt.main:
            return
        epoch = s.epoch + 1
        if s.improved:
            kept = {k: v.cpu() for k, v in s.watched.state_dict().items()}
            save_checkpoint(s.run_dir / "best.pt", {**s.payload, "model_state": kept, "epoch": epoch,
                                                    "best_metric": s.best})
        extra: dict[str, Any] = {}
        for callback in self.callbacks:
            extra.update(callback.checkpoint_state())
        save_checkpoint(s.run_dir / "last.pt", {
            **s.payload, "model_state": {k: v.cpu() for k, v in s.raw.state_dict().items()},
            "optimizer_state": s.optimizer.state_dict(), "scheduler_state": s.scheduler.state_dict(),
            "epoch": epoch, "best_metric": s.best, "history": s.history, "stale": s.stale, **extra})


class RunMetadata(Callback):
    """metadata.json with the history so far (status running), and the epoch's log line."""

    def on_epoch_end(self, s: LoopState) -> None:
        if not s.rt.main:
            return
        write_state(s.run_dir / "metadata.json", Kind.RUN_METADATA,
                    {**s.base, "status": "running", "epoch": s.epoch + 1, "best_metric": s.best, "history": s.history})
        log.info("%s epoch %d/%d: %s", s.run_dir.name, s.epoch + 1, s.config.epochs,
                 ", ".join(f"{k} {v:.4g}" for k, v in s.record.items() if k not in ("epoch", "monitor")))


class EpochProgress(Callback):
    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    def on_epoch_end(self, s: LoopState) -> None:
        report(self.progress, "Epochs", s.epoch + 1, s.config.epochs,
               **{k: v for k, v in s.record.items() if k != "epoch"})


class EarlyStopping(Callback):
    def __init__(self, patience: int) -> None:
        self.patience = patience

    def wants_stop(self, s: LoopState) -> bool:
        return s.stale >= self.patience


class StopWhenAsked(Callback):
    def __init__(self, should_stop: Callable[[], bool] | None) -> None:
        self.should_stop = should_stop

    def wants_stop(self, s: LoopState) -> bool:
        return bool(self.should_stop and self.should_stop())
