"""Declared shapes of the JSON state files (pydantic), checked on every read and write.

Only what the app relies on is declared; other keys are allowed (older and newer
versions add their own). Strict: a string where a number belongs is an error, not
a guess, so a hand-edited or damaged file is named instead of failing later.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _State(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class DatasetEntry(_State):
    source: str | None = None
    raw_path: str | None = None
    organized_path: str | None = None
    complete: bool | None = None
    files: int | None = None
    items: int | None = None
    updated: str | None = None


class DatasetIndex(_State):
    datasets: dict[str, DatasetEntry]


class DatasetMetadata(_State):
    name: str
    source_dataset: str
    classes: list[str]
    counts: dict[str, Any]
    items: int
    seed: int | None = None
    version: str | None = None
    split_fractions: list[float] | None = None
    held_out_classes: list[str] | None = None


class TrainingConfig(_State):
    dataset: str
    classes: list[str]
    image_size: int
    channels: int | None = None
    balance: str | None = None
    normal_class: str | None = None
    class_weights: dict[str, float] | None = None
    labeled_fraction: float | None = None
    recommended_phases: list[str] | None = None


class RunMetadata(_State):
    """checkpoints/<run>/metadata.json. Training writes the first sections; evaluation, export,
    the out-of-distribution gate and the recipe search add theirs (app/runs.py)."""
    # what was trained: training writes these
    run: str
    phase: str
    dataset: str
    status: str  # running, complete, stopped or failed
    config: dict[str, Any]  # the settings, flat: what rebuilds the phase
    settings: dict[str, dict[str, Any]] | None = None  # the same by layer: model, data, training, post_hoc
    setting_sources: dict[str, str] | None = None  # user, phase, dataset, default or run, per setting
    classes: list[str] = []
    balance: str | None = None
    created: str | None = None
    finished: str | None = None
    error: str | None = None  # why a failed or stopped run ended
    device: str | None = None
    dataset_version: str | None = None
    pretrained_weights: dict[str, Any] | None = None  # file and sha256; None: from scratch
    initialized_from: str | None = None  # the run a warm restart began from
    epoch_images: int | None = None  # images per (sampled) epoch
    time_plan: list[dict[str, Any]] | None = None  # a time-limited run's fits of its plan to the time left
    # how it went
    epoch: int | None = None
    best_metric: float | None = None
    history: list[dict[str, Any]] | None = None
    metrics: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    # sections added after training
    evaluation: dict[str, dict[str, Any]] | None = None  # per split
    export: dict[str, Any] | None = None
    ood_gate: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None  # the recipe search's winner
    trials: list[dict[str, Any]] | None = None  # and every trial's validation figure
    trial_of: str | None = None  # a search's trial run: the run it searched for
    ensemble: dict[str, Any] | None = None  # the search's members, and which it averaged into this run


class Workflow(_State):
    dataset: str
    steps: dict[str, dict[str, Any]]
    options: dict[str, Any] | None = None


class Settings(_State):
    """Menu settings: every key is optional (menus/settings.py gives the defaults)."""


class ScanCache(_State):
    root: str
    files: dict[str, dict[str, Any]]
    scanner: int | str = 1  # what the scanner that wrote it knew ("5.<vocabulary digest>"): else read again


class Corrections(_State):
    dataset: str
    rules: list[dict[str, Any]]


class ModelCard(_State):
    name: str
    phase: str
    task: str
    classes: list[str]
    input: dict[str, Any]
    files: dict[str, str]


class Predictions(_State):
    created: str
    results: list[dict[str, Any]]


class PrivateMap(_State):
    """data/private/items.json: item ids and source ids -> real paths (the one such map). An item
    is {"path": ..., "files": [...] for a DICOM series}; not declared per item, as a map of a
    hundred thousand items would take seconds to check on every read."""
    items: dict[str, dict[str, Any]]
    sources: dict[str, str]


class Identifiers(_State):
    """data/private/identifiers.json: keyed hashes of identifier tokens the scans met (never the values)."""
    hashes: list[str]
