"""What every training phase is: the hooks the training loop, evaluation, export and predict call.

A phase is one module: a Config dataclass (its settings and their defaults), a class
derived from Phase and registered with ``@register_phase(name, title, **PhaseSpec
facts)``, and its name in ``models.registry.BUILTIN_PHASES`` (or any module that is
imported before use). The callers never probe a phase for what it can do: every hook
below exists, and the defaults say "nothing to do here".

Every phase provides:
    Config                      its settings (a dataclass; every field has a default)
    model_args()                what rebuilds its model from a checkpoint
    select_rows(rows)           the dataset rows it trains and is judged on
    targets(rows)               their targets (a tensor)
    predict(images)             class probabilities (N, classes) or anomaly scores (N,)
    export_module()             the torch module ONNX export traces
    config_dict()               its settings as saved beside the checkpoint

Its Config's fields each belong to a layer (model, data, training, post-hoc) and may be
phase-owned where a dataset-wide value would otherwise apply (models/configs.py).

A trainable phase (PhaseSpec.trainable) also provides ``prepare(targets)`` and
``step(batch) -> {"loss": ...}``; a fitted one (trainable False, built from other runs
named by PhaseSpec.components) provides ``attach(**runs)`` and ``fit(images, targets)``.
docs/architecture.md walks through adding one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

# The settings machinery lives in models.configs; these names are part of the phase contract.
from models.configs import SHARED_SETTINGS, Question, SettingSpec, layered, setting, setting_specs  # noqa: F401
from models.registry import PhaseSpec

EXPORT_TOLERANCE = 1e-4  # ONNX Runtime against PyTorch, largest absolute difference allowed


class Phase:
    spec: ClassVar[PhaseSpec]  # set by @register_phase
    Config: ClassVar[type]
    export_tolerance: ClassVar[float] = EXPORT_TOLERANCE
    changes_between_epochs: ClassVar[bool] = False  # what it trains changes per epoch (DDP cannot follow)
    config: Any
    classes: list[str]
    model: Any
    threshold: float | None = None  # a decision threshold fitted after training, if the phase has one
    epoch: int = 0  # set by the training loop before each epoch
    # Set by training when it builds the phase: where each setting came from (models.configs
    # resolve) and the values it started with (a later change is the run's own).
    setting_sources: dict[str, str]
    first_config: dict[str, Any]
    # What the Train menu asks for this phase, in order (models.configs.Question); None: one
    # question per setting, generated from the Config's metadata. Settings the menu uses
    # without asking (e.g. a batch size that fits a workstation) in menu_settings.
    questions: ClassVar[tuple[Question, ...] | None] = None
    menu_settings: ClassVar[dict[str, Any]] = {}

    # -- the data ---------------------------------------------------------------------------------
    def check_rows(self, rows: list[dict[str, Any]], position_codes: Any) -> None:
        """Refuse training rows this phase cannot learn from (ValueError with what to do)."""

    # -- training -----------------------------------------------------------------------------------
    def param_groups(self) -> Any:
        """What the optimizer updates (parameter groups with their own learning rates, or all)."""
        return self.model.parameters()

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch (e.g. the transfer phase unfreezes its last block)."""

    def validation_scores(self, images: Any, is_anomaly: np.ndarray, device: str = "cpu") -> np.ndarray | None:
        """Scores to validate on, when they differ from predict (the VAE's chosen scoring); None: predict.
        ``images`` as loaded (a tensor, or volumes read a batch at a time), ``device`` the model's."""
        return None

    def finish(self, images: Any, targets: Any, **info: Any) -> dict[str, Any] | None:
        """Fitting on validation after training (calibration, thresholds): what to record, or None."""
        return None

    # -- checkpoints --------------------------------------------------------------------------------
    @classmethod
    def rebuild(cls, model_args: dict[str, Any]) -> Any:
        """The model from a checkpoint's model_args, when the Config alone cannot build it; None: it can."""
        return None

    def settle(self, model_args: dict[str, Any]) -> None:
        """After ``rebuild``: what the phase keeps of the model's arguments, and settings it
        reads from them better than from an older config."""

    def extra(self) -> dict[str, Any]:
        """Plain values kept beside the weights (temperature, threshold...), restored by name."""
        return {}

    # -- explanations -------------------------------------------------------------------------------
    def gradcam_target(self, image_size: int | None = None) -> str | None:
        """The layer Grad-CAM reads, or None for a phase Grad-CAM does not explain."""
        return None

    def scorer(self) -> Any:
        """The reconstruction scorer whose residual maps explain a score, or None."""
        return None
