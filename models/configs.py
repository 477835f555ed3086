"""A phase's settings: what each Config field is, the layer it belongs to, where its value came from.

A phase's Config is one frozen dataclass, but its fields live in four layers, and what is
saved beside a checkpoint, shown in a run's report and put on a bundle's card is grouped
by them:

    model       what the network is (backbone, widths, latent size, the runs a hybrid combines)
    data        what it is shown (image size, channels, contrast equalization, augmentation)
    training    how it learns (epochs, batch, learning rate, regularization, seed)
    post_hoc    what is fitted or chosen after training (calibration, scores, thresholds)

A field says its layer in its ``setting(...)`` metadata; the plain fields several phases
share are named once in SHARED_SETTINGS and PLAIN_LAYERS.

Where a value comes from (``resolve``), strongest first:

    user        set for this run (``train --lr``, a menu answer, the workflow, a recipe)
    phase       the phase's own default, for the dataset-wide settings the phase declares
                its own (``OWN_DEFAULTS``: cube3d's 48-voxel cube)
    dataset     dataset-wide, from the dataset's training_config.json (image size,
                channels, labeled fraction, class weights, several findings per image)
    default     the Config's default
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

LAYERS = ("model", "data", "training", "post_hoc")

# Settings the organizer decides once for a whole dataset (training_config.json) and every
# phase that has the field takes, unless it declares its own default (OWN_DEFAULTS).
DATASET_WIDE = ("image_size", "channels", "labeled_fraction", "class_weights", "multilabel")


def setting(default: Any, *, help: str, choices: tuple[Any, ...] = (), metavar: str | None = None,
            layer: str = "model") -> Any:
    """A Config field that ``train --FIELD-NAME`` sets (``help`` is its help; ``choices`` the
    values it takes; ``layer`` one of LAYERS). A field without this metadata is set only by
    the phase (or, for the settings many phases share, described once in SHARED_SETTINGS)."""
    if layer not in LAYERS:
        raise ValueError(f"layer {layer!r} is not one of {', '.join(LAYERS)}")
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar,
                                                        "layer": layer})


# Settings several phases share: described once here, not in each Config.
SHARED_SETTINGS: dict[str, dict[str, Any]] = {
    "epochs": {"layer": "training", "help": "epochs to plan (default: the phase's, e.g. 30)"},
    "image_size": {"layer": "data", "help": "side in pixels the images are resized to, a multiple of 16 (default: "
                                            "the dataset's; cube3d: its cube side, 48)"},
    "batch_size": {"layer": "training", "help": "images per step (default: the phase's, e.g. 16)"},
    "lr": {"layer": "training", "help": "peak learning rate (default: the phase's)"},
    "backbone": {"layer": "model", "help": "any timm model name (supervised); resnet10/resnet18 (cube3d)"},
    "pretrained": {"layer": "model", "flag": "weights", "type": "str", "metavar": "FILE",
                   "help": "pretrained weights file (supervised, transfer)"},
    "seed": {"layer": "training", "help": "random seed (default 0): the same seed repeats a run"},
    "clahe": {"layer": "data", "help": "equalize contrast (CLAHE) before resizing"},
    "augment": {"layer": "data", "choices": ("none", "standard", "strong"),
                "help": "training augmentation (default standard: flips and shifts; cube3d: strong)"},
    "flips": {"layer": "data", "choices": ("auto", "on", "off"),
              "help": "the augmentation's left-right flips: auto (default) leaves them out where left and right tell "
                      "the classes apart (classes whose training images mirror each other: left/right kidney), "
                      "on, off"},
    "ema": {"layer": "training", "metavar": "DECAY",
            "help": "classifiers: keep an exponential moving average of the weights (e.g. 0.99)"},
    "mixup": {"layer": "training", "metavar": "ALPHA",
              "help": "classifiers: blend pairs of training images and their labels (mixup; e.g. 0.2; default off)"},
    "calibration": {"layer": "post_hoc", "choices": ("temperature+bias", "temperature", "none"),
                    "help": "classifiers: the calibration after training (default temperature+bias: a temperature fitted on "
                            "validation, a bias from the training split's class shares; "
                            "temperature alone never changes a decision)"},
    "channels": {"layer": "data", "choices": (1, 3),
                 "help": "supervised, transfer: 1 reads the images grey, 3 as RGB (default: the dataset's, "
                         "training_config.json)"},
    "ordinal": {"layer": "training", "metavar": "WEIGHT",
                "help": "classifiers, ordered classes (grades): add the squared earth mover's distance between "
                        "predicted and true grade distributions to the loss, with this weight (e.g. 1; default off)"},
}

# Plain fields (no flag of their own) that several phases share, and their layer.
PLAIN_LAYERS: dict[str, str] = {
    "weight_decay": "training", "label_smoothing": "training", "class_weights": "training",
    "drop_rate": "model", "base_channels": "model", "finetune_lr": "training",
    "kl_warmup_epochs": "training", "use_unlabeled": "data", "labeled_fraction": "data",
    "threshold_percentile": "post_hoc",
    "multilabel": "data",  # several findings per image: the dataset says (app/organize/multilabel.py)
}


def layer_of(field: dataclasses.Field) -> str:
    """The layer of a Config field: its own ``setting(layer=)``, else the shared tables, else
    "model" (a plugin phase's plain fields describe its model unless they say otherwise)."""
    return (field.metadata.get("layer") or SHARED_SETTINGS.get(field.name, {}).get("layer")
            or PLAIN_LAYERS.get(field.name) or "model")


def layered(config: Any) -> dict[str, dict[str, Any]]:
    """A Config's values grouped by layer (every layer present, possibly empty)."""
    sections: dict[str, dict[str, Any]] = {layer: {} for layer in LAYERS}
    for field in dataclasses.fields(config):
        sections[layer_of(field)][field.name] = getattr(config, field.name)
    return sections


@dataclass(frozen=True)
class Resolved:
    values: dict[str, Any]  # every field of the Config
    sources: dict[str, str]  # field -> "user", "phase", "dataset" or "default"


def resolve(config_cls: type, dataset: dict[str, Any], user: dict[str, Any]) -> Resolved:
    """Every setting of ``config_cls`` with where its value came from (the module's docstring
    gives the order). ``user`` keys the Config does not have are refused by ``create_phase``,
    not here."""
    own = set(getattr(config_cls, "OWN_DEFAULTS", ()))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field in dataclasses.fields(config_cls):
        name = field.name
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        if name in user:
            values[name], sources[name] = user[name], "user"
        elif name in own:
            values[name], sources[name] = default, "phase"
        elif name in dataset and name in DATASET_WIDE:
            values[name], sources[name] = dataset[name], "dataset"
        else:
            values[name], sources[name] = default, "default"
    values.update({k: v for k, v in user.items() if k not in values})  # refused by name later
    return Resolved(values, sources)


# -- settings as a front end offers them ---------------------------------------------------------
@dataclass(frozen=True)
class SettingSpec:
    """One setting as a front end offers it: ``train --flag`` (``dest`` is the Config field)."""

    dest: str
    flag: str
    type: str  # "int", "float", "str" or "bool" (a switch that sets True)
    help: str
    choices: tuple[Any, ...]
    metavar: str | None
    phases: tuple[str, ...]
    layer: str = "model"  # one of LAYERS


def setting_specs(phases: list[tuple[str, type]]) -> list[SettingSpec]:
    """The settings of the given (phase name, Config) pairs, each once, in the order first met:
    a Config field's own ``setting`` metadata, else SHARED_SETTINGS."""
    found: dict[str, dict[str, Any]] = {}
    for phase, config in phases:
        for f in dataclasses.fields(config):
            described = dict(f.metadata) if f.metadata.get("help") else SHARED_SETTINGS.get(f.name)
            if not described:
                continue
            entry = found.setdefault(f.name, {**described, "phases": [], "annotation": str(f.type),
                                              "layer": layer_of(f)})
            entry["phases"].append(phase)
    specs = []
    for name, entry in found.items():
        declared = entry.get("type") or next((t for t in ("bool", "int", "float") if t in entry["annotation"]
                                              .replace(" ", "").split("|")), "str")
        specs.append(SettingSpec(name, entry.get("flag", name), declared, entry["help"],
                                 tuple(entry.get("choices") or ()), entry.get("metavar"), tuple(entry["phases"]),
                                 entry["layer"]))
    return specs


@dataclass(frozen=True)
class Question:
    """One question the Train menu asks for a phase (``Phase.questions``). Data only: the
    menus draw it. The answer sets the Config field ``setting``; a yes/no question with
    ``sets`` sets those values on yes instead (a preset, e.g. the small-data regularization).

    ``kind`` is "text", "int", "float", "choice" or "confirm"; ``default`` the answer offered (None:
    the Config's default) and ``fast`` the one offered when the settings ask for fast runs;
    ``when`` a fact about the dataset that must hold for the question to be asked ("graded":
    its classes are ordered grades)."""

    setting: str
    text: str
    kind: str
    default: Any = None
    fast: Any = None
    choices: tuple[tuple[str, Any], ...] = ()  # (label, value), for kind "choice"
    low: int = 1
    high: int = 10**6
    sets: tuple[tuple[str, Any], ...] = ()
    when: str | None = None

    def offered(self, config_cls: type, fast: bool) -> Any:
        """The default answer shown."""
        if fast and self.fast is not None:
            return self.fast
        if self.default is not None:
            return self.default
        return {f.name: f.default for f in dataclasses.fields(config_cls)}.get(self.setting)

    def answer(self, given: Any) -> dict[str, Any]:
        """The settings an answer makes."""
        if self.sets:
            return dict(self.sets) if given else {}
        return {self.setting: given}


def generated_questions(phase: str, config_cls: type) -> tuple[Question, ...]:
    """For a phase that declares no questions: one per setting (its help as the question, its
    default offered). The seed comes from the menu's settings and a weights file from
    ``train --weights``, so neither is asked."""
    questions = []
    for spec in setting_specs([(phase, config_cls)]):
        if spec.dest in ("seed", "pretrained"):
            continue
        kind = "choice" if spec.choices else {"bool": "confirm", "int": "int", "float": "float"}.get(spec.type, "text")
        questions.append(Question(spec.dest, f"{spec.help[:1].upper()}{spec.help[1:]}:", kind,
                                  choices=tuple((str(c), c) for c in spec.choices), low=0))
    return tuple(questions)


# Questions several phases ask, worded once.
# The small-dataset preset: the settings of the best BreastMNIST and PneumoniaMNIST runs
# measured (README; train --ema and --mixup set any other value).
SMALL_DATA = (("ema", 0.99), ("mixup", 0.2))


def image_size_question(default: int | None = 128, fast: int | None = 64) -> Question:
    return Question("image_size", "Image size (pixels, multiple of 16):", "int", default=default, fast=fast,
                    low=16, high=1024)


EPOCHS = Question("epochs", "Epochs:", "int", default=30, fast=15, high=1000)
AUGMENT = Question("augment", "Augmentation", "choice", choices=(
    ("standard: flips and shifts", "standard"),
    ("strong: + rotation, zoom, contrast (small or varied data)", "strong"),
    ("none", "none")))
CLAHE = Question("clahe", "Equalize contrast (CLAHE)? Helps flat, low-contrast X-rays.", "confirm", default=False)
REGULARIZE = Question("ema", f"Regularize for a small dataset: average the weights (EMA {dict(SMALL_DATA)['ema']}) and "
                             f"blend image pairs (mixup {dict(SMALL_DATA)['mixup']})? Both helped on the MedMNIST sets "
                             "measured (README).", "confirm", default=False, sets=SMALL_DATA)
ORDINAL = Question("ordinal", "These classes are grades (ordered). Add an ordinal loss, so that a prediction two "
                              "grades off costs more than one grade off?", "confirm", default=False,
                   sets=(("ordinal", 1.0),), when="graded")
