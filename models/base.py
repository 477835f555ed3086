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

A trainable phase (PhaseSpec.trainable) also provides ``prepare(targets)`` and
``step(batch) -> {"loss": ...}``; a fitted one (trainable False, built from other runs
named by PhaseSpec.components) provides ``attach(**runs)`` and ``fit(images, targets)``.
docs/architecture.md walks through adding one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from models.registry import PhaseSpec

EXPORT_TOLERANCE = 1e-4  # ONNX Runtime against PyTorch, largest absolute difference allowed


# -- settings: a Config field the command line (train --NAME) and other front ends may set -------
def setting(default: Any, *, help: str, choices: tuple[Any, ...] = (), metavar: str | None = None) -> Any:
    """A Config field that ``train --FIELD-NAME`` sets (``help`` is its help; ``choices`` the
    values it takes). A field without this metadata is set only by the phase (or, for the
    settings many phases share, described once in SHARED_SETTINGS)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar})


# Settings several phases share: described once here, not in each Config.
SHARED_SETTINGS: dict[str, dict[str, Any]] = {
    "epochs": {"help": "epochs to plan (default: the phase's, e.g. 30)"},
    "image_size": {"help": "side in pixels the images are resized to, a multiple of 16 (default: the dataset's; "
                           "cube3d: the cube side)"},
    "batch_size": {"help": "images per step (default: the phase's, e.g. 16)"},
    "lr": {"help": "peak learning rate (default: the phase's)"},
    "backbone": {"help": "any timm model name (supervised); resnet10/resnet18 (cube3d)"},
    "pretrained": {"flag": "weights", "type": "str", "metavar": "FILE",
                   "help": "pretrained weights file (supervised, transfer)"},
    "seed": {"help": "random seed (default 0): the same seed repeats a run"},
    "clahe": {"help": "equalize contrast (CLAHE) before resizing"},
    "augment": {"choices": ("none", "standard", "strong"),
                "help": "training augmentation (default standard: flips and shifts; cube3d: strong)"},
    "ema": {"metavar": "DECAY", "help": "classifiers: keep an exponential moving average of the weights (e.g. 0.99)"},
    "mixup": {"metavar": "ALPHA", "help": "classifiers: blend pairs of training images and their labels (mixup; "
                                          "e.g. 0.2; default off)"},
    "calibration": {"choices": ("temperature+bias", "temperature", "none"),
                    "help": "classifiers: what is fitted on validation after training (default temperature+bias; "
                            "temperature alone never changes a decision)"},
    "channels": {"choices": (1, 3), "help": "supervised, transfer: 1 reads the images grey, 3 as RGB (default: the "
                                            "dataset's, training_config.json)"},
    "ordinal": {"metavar": "WEIGHT", "help": "classifiers, ordered classes (grades): add the squared earth mover's "
                                             "distance between predicted and true grade distributions to the loss, "
                                             "with this weight (e.g. 1; default off)"},
}


@dataclasses.dataclass(frozen=True)
class SettingSpec:
    """One setting as a front end offers it: ``train --flag`` (``dest`` is the Config field)."""

    dest: str
    flag: str
    type: str  # "int", "float", "str" or "bool" (a switch that sets True)
    help: str
    choices: tuple[Any, ...]
    metavar: str | None
    phases: tuple[str, ...]


def setting_specs(phases: list[tuple[str, type]]) -> list[SettingSpec]:
    """The settings of the given (phase name, Config) pairs, each once, in the order first met:
    a Config field's own ``setting`` metadata, else SHARED_SETTINGS."""
    found: dict[str, dict[str, Any]] = {}
    for phase, config in phases:
        for f in dataclasses.fields(config):
            described = dict(f.metadata) if f.metadata.get("help") else SHARED_SETTINGS.get(f.name)
            if not described:
                continue
            entry = found.setdefault(f.name, {**described, "phases": [], "annotation": str(f.type)})
            entry["phases"].append(phase)
    specs = []
    for name, entry in found.items():
        declared = entry.get("type") or next((t for t in ("bool", "int", "float") if t in entry["annotation"]
                                              .replace(" ", "").split("|")), "str")
        specs.append(SettingSpec(name, entry.get("flag", name), declared, entry["help"],
                                 tuple(entry.get("choices") or ()), entry.get("metavar"), tuple(entry["phases"])))
    return specs


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
