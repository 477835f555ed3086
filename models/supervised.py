"""Supervised classification over the dataset's classes, on a timm backbone."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.base import Phase
from models.configs import AUGMENT, CLAHE, EPOCHS, ORDINAL, REGULARIZE, Question, image_size_question
from models.registry import register_phase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupervisedConfig:
    backbone: str = "efficientnet_b0"
    pretrained: bool | str = True  # True: from the local cache; or a weights file path
    image_size: int = 128
    epochs: int = 20
    batch_size: int = 32
    # 3e-3 measured best from scratch on the demo (test AUC .95 vs .89 at 1e-3, 15 epochs, 64 px);
    # fine-tuning pretrained weights usually wants less.
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    drop_rate: float = 0.2
    class_weights: bool = True
    clahe: bool = False  # contrast-limited adaptive histogram equalization before resizing
    augment: str = "standard"  # none | standard (flips, shifts) | strong (+ rotation, zoom, contrast)
    flips: str = "auto"  # auto | on | off: left-right flips in the augmentation (app/laterality.py)
    ema: float = 0.0  # decay of the weight average used for validation and kept (e.g. 0.99); 0: off
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha) blend of image pairs (e.g. 0.2; app/training.py mix_batch); 0: off
    calibration: str = "temperature+bias"  # temperature+bias | temperature | none (ClassifierPhase.finish)
    channels: int = 1  # 1: grey; 3: RGB, for colour data (the dataset's training_config.json says which)
    ordinal: float = 0.0  # ordered classes (grades): weight of the squared-EMD term added to the loss (e.g. 1); 0: off
    multilabel: bool = False  # several findings per image: one sigmoid probability per class (the dataset says)
    seed: int = 0


CHANNELS = (1, 3)


def check_channels(channels: int) -> int:
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 1 (grey) or 3 (colour), not {channels!r}")
    return channels


def cached_weights(name: str) -> str | None:
    """The path of ``name``'s pretrained weights in the local Hugging Face cache, if any."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    try:
        hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    except Exception:  # unknown name or no pretrained tag: nothing to look for
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename) if hub_id else None
        if isinstance(found, str):
            return found
    return None


ATTENTION = ("se", "eca", "cbam")  # timm's attention blocks a timm ResNet takes in every block


def backbone_parts(name: str) -> tuple[str, dict[str, Any]]:
    """A backbone name's timm model and the arguments it adds: "resnet10t+cbam" is timm's
    resnet10t with a CBAM block (channel and spatial attention) in each residual block;
    "+se" squeeze-excitation, "+eca" efficient channel attention (timm.layers.create_attn).

    Raises:
        ValueError: an attention timm does not have.
    """
    base, _, attention = name.partition("+")
    if not attention:
        return name, {}
    if attention not in ATTENTION:
        raise ValueError(f"backbone {name!r}: {attention!r} is not an attention block this tool adds; "
                         f"use one of {', '.join('+' + a for a in ATTENTION)} (e.g. resnet10t+cbam)")
    return base, {"block_args": {"attn_layer": attention}}


def create_backbone(
    name: str, num_classes: int, *, pretrained: bool | str, drop_rate: float = 0.0, in_chans: int = 1
) -> torch.nn.Module:
    """A timm model with ``in_chans`` input channels (1: grey; 3: colour).

    ``pretrained`` is False, True (weights from the local cache; never downloaded
    during training) or a path to a weights file. Without weights the model trains
    from scratch, with a notice saying how to get them. ``name`` may add attention
    blocks to a timm ResNet (backbone_parts: "resnet10t+cbam"); such a model has no
    pretrained weights and always trains from scratch.
    """
    import timm

    base, extra = backbone_parts(name)
    if extra:
        if isinstance(pretrained, str) and pretrained:
            raise ValueError(f"backbone {name!r} adds attention blocks that no pretrained weights hold: "
                             f"leave out the weights file, or use {base!r}")
        try:
            model = timm.create_model(base, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                      drop_rate=drop_rate, **extra)
        except TypeError:
            raise ValueError(f"backbone {name!r}: attention blocks are added to timm's ResNets "
                             f"(resnet10t, resnet18, resnet34, ...), not to {base!r}") from None
        if pretrained is True:
            log.warning("%s adds attention blocks that no pretrained weights hold; training from scratch.", name)
        model.pretrained_source = ""
        return model
    weights = pretrained if isinstance(pretrained, str) and pretrained else None
    if weights and not Path(weights).expanduser().is_file():
        raise ValueError(f"the pretrained weights file {weights} does not exist")
    if pretrained is True:
        weights = cached_weights(name)
        if weights is None:
            log.warning(
                "No cached pretrained weights for %s; training from scratch. To use them, run once "
                "with network access: python -c \"import timm; timm.create_model('%s', pretrained=True)\"",
                name, name,
            )
    if weights:
        model = timm.create_model(
            name, pretrained=True, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
            pretrained_cfg_overlay={"file": weights},
        )
    else:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                  drop_rate=drop_rate)
    model.pretrained_source = str(Path(weights).expanduser()) if weights else ""  # what really happened
    return model


class Averaged(torch.nn.Module):
    """Several classifiers of one input size as one model: their logits averaged; with
    ``mirror``, each also over the left-right mirror of the image (test-time augmentation
    folded into the model, so every engine and the exported graph give the same answer).

    What the recipe search's ensemble becomes (app/ensemble.py): the members are trained
    with the same class weights, so the mean of their logits calibrates like one model's
    (temperature fitted, the training shares' bias). Grad-CAM reads the first member (the
    search's winner): ``explained`` names its layers. With ``mirror`` each member sees the
    image and its mirror as one batch (the image first), so a Grad-CAM of one image has
    the image's map first: the map of the image as given.
    """

    explained = "members.0."

    def __init__(self, members: list[torch.nn.Module], names: list[str], mirror: bool = False) -> None:
        super().__init__()
        if len(members) < (1 if mirror else 2) or len(names) != len(members):
            raise ValueError("an averaged model needs at least two members (one when it averages the mirror view), "
                             "each with its backbone's name")
        self.members, self.names, self.mirror = torch.nn.ModuleList(members), list(names), bool(mirror)
        first = list(getattr(members[0], "feature_info", None) or [])
        self.feature_info = [{**dict(stage), "module": self.explained + stage["module"]} for stage in first]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        views = torch.cat([images, images.flip(-1)]) if self.mirror else images
        logits = torch.stack([member(views) for member in self.members]).mean(0)
        return logits.reshape(2, -1, logits.shape[-1]).mean(0) if self.mirror else logits


def build_classifier(model_args: dict[str, Any]) -> torch.nn.Module:
    """A classifier from a checkpoint's model_args, untrained: one backbone, or several averaged
    (``members``: their backbone names; ``mirror``: each also over the mirrored image)."""
    names = list(model_args.get("members") or [model_args["backbone"]])
    made = [create_backbone(name, model_args["num_classes"], pretrained=False, in_chans=model_args.get("in_chans", 1))
            for name in names]
    if "members" in model_args or model_args.get("mirror"):
        return Averaged(made, names, mirror=bool(model_args.get("mirror")))
    return made[0]


def settle_pretrained(config: Any, model: torch.nn.Module) -> Any:
    """``config`` whose ``pretrained`` says what happened: False when no weights were found to load."""
    if config.pretrained is True and not getattr(model, "pretrained_source", ""):
        return dataclasses.replace(config, pretrained=False)
    return config


MIN_CAM_CELLS = 7  # a Grad-CAM map this many cells across at least (224 px / 32: the usual 7 x 7)


class ClassifierPhase(Phase):
    """What every classifier phase shares: rows, targets, weighted loss, calibrated softmax.

    After training, ``finish`` calibrates on validation: probabilities are
    softmax(logits / temperature + bias). Class weights (and over- or undersampling)
    train the model as if every class were equally common, which skews its probabilities
    and its argmax towards the rare classes; the bias puts the real proportions back. It
    is not fitted: it is the logarithm of each class's share of the training split, the
    exact inverse of the class weights (the post-hoc logit adjustment of Menon et al.
    2021). Only the temperature is fitted (validation log-loss, the bias held). A bias
    fitted freely on validation absorbs whatever else sets validation apart: on the
    official PneumoniaMNIST split it came out four times the prior's (+-2.2 against
    +-0.5) and took the test accuracy from 0.93 to 0.86 (docs/benchmarks.md, session 25).
    The ranking of one class against the others, and so its ROC-AUC, does not change.

    The bias assumes the class proportions of the training split are those the model
    will meet. Where they are not, ``calibration="temperature"`` fits the temperature
    alone, which never changes a decision: the argmax stays the class-weighted model's,
    balanced between the classes. ``"none"`` leaves the model as trained.
    """

    config: Any
    classes: list[str]
    model: torch.nn.Module
    temperature: float = 1.0
    bias: list[float] | None = None  # per-class logit offsets; None: none fitted (older runs too)
    # multi-label: the probability at which each finding is called, chosen on validation (None: 0.5 for all)
    finding_thresholds: list[float] | None = None

    def model_args(self) -> dict[str, Any]:
        found = {"backbone": self.config.backbone, "num_classes": len(self.classes),
                 "in_chans": getattr(self.config, "channels", 1)}
        if isinstance(self.model, Averaged):
            found["members"] = list(self.model.names)
            if self.model.mirror:
                found["mirror"] = True
        return found

    def gradcam_target(self, image_size: int | None = None) -> str | None:
        """The layer Grad-CAM reads: the phase's declared one when this backbone has it, else
        the last feature stage timm reports (any timm backbone has one). Given the input
        size, a final map coarser than MIN_CAM_CELLS across (2 x 2 at 64 px: broad stripes)
        gives way to the deepest stage that still resolves that many cells."""
        info = list(getattr(self.model, "feature_info", None) or [])
        if image_size and info:
            fine = [stage for stage in info if image_size // int(stage["reduction"]) >= MIN_CAM_CELLS]
            if fine and fine[-1] is not info[-1]:
                return fine[-1]["module"]
        declared = getattr(self.spec, "gradcam_layer", None)
        declared = getattr(self.model, "explained", "") + declared if declared else None
        if declared and declared in dict(self.model.named_modules()):
            return declared
        return info[-1]["module"] if info else None

    @property
    def multilabel(self) -> bool:
        """One probability per finding (``classes`` are findings; app/organize/multilabel.py)."""
        return bool(getattr(self.config, "multilabel", False))

    def select_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.multilabel:
            return [r for r in rows if r["labeled"]]
        return [r for r in rows if r["labeled"] and r["label"] in self.classes]

    def targets(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        """Class indices; for a multi-label phase (N, findings) of 0/1, floats."""
        if self.multilabel:
            from core.findings import row_findings

            column = {name: k for k, name in enumerate(self.classes)}
            found = torch.zeros(len(rows), len(self.classes))
            for k, row in enumerate(rows):
                for name in row_findings(row):
                    if name in column:  # a finding this run was not trained on is none of its outputs
                        found[k, column[name]] = 1.0
            return found
        return torch.tensor([self.classes.index(r["label"]) for r in rows])

    def prepare(self, targets: torch.Tensor) -> None:
        self.class_weight: torch.Tensor | None = None
        if self.config.class_weights and not self.multilabel:  # each finding is its own yes/no: no weights
            counts = torch.bincount(targets, minlength=len(self.classes)).float().clamp(min=1)
            self.class_weight = counts.sum() / (len(self.classes) * counts)

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, targets = batch
        logits = self.model(images)
        weight = getattr(self, "class_weight", None)
        weight = weight.to(logits.device) if weight is not None else None
        if self.multilabel:  # each finding its own yes/no, smoothed towards 0.5
            smooth = self.config.label_smoothing
            wanted = targets.float() * (1 - smooth) + smooth / 2
            return {"loss": F.binary_cross_entropy_with_logits(logits.float(), wanted), "output": logits}
        loss = F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.config.label_smoothing)
        ordinal = float(getattr(self.config, "ordinal", 0.0) or 0.0)
        if ordinal:
            loss = loss + ordinal * squared_emd(logits, targets)
        return {"loss": loss, "output": logits}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities, shape (N, classes)."""
        return self.predict_logits(self.model(images))

    def export_module(self) -> torch.nn.Module:
        return _Probabilities(self.model, self.temperature, self.bias or [0.0] * len(self.classes), self.multilabel)

    @torch.no_grad()
    def finish(self, images: Any, targets: torch.Tensor, train_counts: list[int] | None = None,
               **_: Any) -> dict[str, Any]:
        """Fit the temperature on validation logits (best weights loaded; log-loss minimized),
        the bias held at the log of the training split's class shares (``train_counts``:
        images per class, given when training evened the classes out: class weights or
        resampling); report NLL, ECE and MCE before and after."""
        from core.metrics import calibration_errors

        how = check_calibration(getattr(self.config, "calibration", "temperature+bias"))
        if how == "none":
            self.temperature, self.bias = 1.0, None
            return {"temperature": 1.0, "bias": None, "skipped": "calibration is off for this run (calibration none)"}
        if len(images) == 0:
            self.temperature, self.bias = 1.0, None
            return {"temperature": 1.0, "bias": None, "skipped": "the validation split holds no image of these classes"}
        self.model.eval()
        logits = torch.cat([self.model(images[i : i + 64]) for i in range(0, len(images), 64)]).float()
        if self.multilabel:
            return self._finish_findings(logits, targets.float())
        with_bias = how == "temperature+bias" and train_counts is not None
        val_counts = torch.bincount(targets, minlength=len(self.classes)).tolist()
        shift = proportions_shift(train_counts, val_counts) if with_bias else None
        prior_counts = val_counts if shift is not None else train_counts
        offsets = prior_bias(prior_counts) if with_bias else torch.zeros(len(self.classes))
        nll_before = float(F.cross_entropy(logits, targets))
        temperature = fit_temperature(logits, targets, offsets)
        nll_after = float(F.cross_entropy(logits / temperature + offsets, targets))
        skipped = matched = None
        right = int((logits.argmax(1) == targets).sum())
        if right == len(targets) or not TEMPERATURES[0] <= temperature <= TEMPERATURES[1]:
            # Every validation image right by the model: the NLL falls on as the temperature goes
            # to 0 (the logits outgrow the held bias), so a fitted value is where the optimizer
            # gave up, not an optimum. Then the temperature is set so the mean top probability
            # matches the accuracy to expect from `right` of n seen (Laplace's rule:
            # (right + 1) / (n + 2)), which stays sane on a perfectly told apart split and is
            # honest about its size.
            n, expected = len(targets), (right + 1) / (len(targets) + 2)
            temperature = _matched_temperature(logits, offsets, expected)
            if temperature is None:  # even 20 would leave it surer than that: wild logits
                skipped = ("the temperature fit ran off: the validation split cannot calibrate this model "
                           "(no temperature within 0.05-20 fits it)")
            else:
                matched = (f"{right} of {n} validation images right, so the log-loss has no usable minimum; the "
                           f"temperature is set instead so the mean top probability is {expected:.3f}, the accuracy "
                           f"to expect from {right} of {n} (Laplace's rule)")
                nll_after = float(F.cross_entropy(logits / temperature + offsets, targets))
        if skipped or not (matched or nll_after < nll_before):  # or the fit failed to improve
            temperature, offsets, nll_after = 1.0, torch.zeros_like(offsets), nll_before
        self.temperature = temperature
        self.bias = [float(v) for v in offsets] if offsets.abs().sum() > 0 else None
        before = calibration_errors(torch.softmax(logits, 1).numpy(), targets.numpy())
        after = calibration_errors(self.predict_logits(logits).numpy(), targets.numpy())
        named = lambda counts: ", ".join(f"{c} {n / sum(counts):.1%}" for c, n in zip(self.classes, counts))  # noqa: E731
        prior = ({"bias_from": "the training split's class shares (" + named(train_counts) +
                  "), which training evened out (class weights or resampling)"} if self.bias and shift is None else
                 {"bias_from": "the validation split's class shares (" + named(val_counts) + "): they differ from the "
                  f"training split's ({named(train_counts)}) beyond chance (chi-square p = {shift:.2g}), so new images "
                  "are taken to come in the validation split's proportions; training evened the classes out"}
                 if self.bias else {})
        # Scaling minimizes the NLL; ECE usually falls too, but on a small split it may not.
        return {"temperature": self.temperature, "bias": self.bias, **prior, "val_nll_before": nll_before,
                "val_nll_after": nll_after, "val_ece_before": before["ece"], "val_mce_before": before["mce"],
                "val_ece_after": after["ece"], "val_mce_after": after["mce"], **({"skipped": skipped} if skipped else {}),
                **({"matched": matched} if matched else {})}

    def _finish_findings(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """``finish`` for one probability per finding: one temperature for every finding's
        logit, fitted on the validation split's binary log-loss (no bias: nothing evened the
        findings out); NLL and the calibration errors of every finding's yes/no, before and after."""
        from core.metrics import calibration_errors

        def nll(t: float) -> float:
            return float(F.binary_cross_entropy_with_logits(logits / t, targets))

        def errors(probabilities: torch.Tensor) -> dict[str, float]:
            flat = probabilities.reshape(-1).numpy()
            return calibration_errors(np.stack([1 - flat, flat], axis=1), targets.reshape(-1).numpy().astype(int))

        temperature = fit_temperature(logits, targets, torch.zeros(logits.shape[1]), F.binary_cross_entropy_with_logits)
        before = nll(1.0)
        kept = TEMPERATURES[0] <= temperature <= TEMPERATURES[1] and nll(temperature) < before
        self.temperature, self.bias = (temperature if kept else 1.0), None
        old, new = errors(torch.sigmoid(logits)), errors(self.predict_logits(logits))
        self.finding_thresholds = finding_thresholds(self.predict_logits(logits).numpy(), targets.numpy())
        return {"temperature": self.temperature, "bias": None, "per": "finding (one sigmoid each, one temperature)",
                "finding_thresholds": dict(zip(self.classes, self.finding_thresholds)),
                "val_nll_before": before, "val_nll_after": nll(self.temperature),
                "val_ece_before": old["ece"], "val_mce_before": old["mce"],
                "val_ece_after": new["ece"], "val_mce_after": new["mce"],
                **({} if kept else {"skipped": "the temperature fit did not lower the validation log-loss"})}

    def raw_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Uncalibrated probabilities: a softmax over classes, or a sigmoid per finding."""
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def predict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities from the model's raw logits (multi-label: one sigmoid per finding)."""
        if self.multilabel:
            return torch.sigmoid(logits / self.temperature)
        bias = torch.tensor(self.bias or [0.0] * logits.shape[1], dtype=logits.dtype, device=logits.device)
        return torch.softmax(logits / self.temperature + bias, dim=1)

    def extra(self) -> dict[str, Any]:
        """Plain values a checkpoint keeps beside the weights."""
        return {"temperature": self.temperature, "bias": self.bias,
                **({"finding_thresholds": self.finding_thresholds} if self.multilabel else {})}

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)


def squared_emd(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The squared earth mover's distance between the predicted and the target class
    distributions over ordered classes (Hou et al., 2016): the squared differences of their
    cumulative sums. Unlike cross-entropy it costs more the farther the mass lies from the
    true grade (grade 4 called 0 is worse than called 3). ``targets``: class indices, or
    class probabilities (mixup)."""
    probabilities = torch.softmax(logits.float(), dim=1)
    wanted = targets.float() if targets.dim() == 2 else F.one_hot(targets, logits.shape[1]).float()
    return ((probabilities.cumsum(1) - wanted.cumsum(1)) ** 2).sum(1).mean()


CALIBRATIONS = ("temperature+bias", "temperature", "none")  # see ClassifierPhase


def finding_thresholds(probabilities: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per finding, the calibrated probability at which it is called: Youden's point on the
    validation images (sensitivity + specificity highest), where they hold the finding both
    shown and absent; FINDING_CALL where they do not. A rare finding's probability seldom
    reaches 0.5 even when it ranks well, so at 0.5 it would never be called."""
    from core.findings import FINDING_CALL
    from core.metrics import youden_threshold

    found = []
    for k in range(targets.shape[1]):
        cut = youden_threshold((targets[:, k] > 0.5).astype(int), probabilities[:, k])
        found.append(round(float(cut), 6) if cut is not None and 0.0 < cut < 1.0 else FINDING_CALL)
    return found


def check_ordinal(config: Any) -> None:
    """Refuse an ordinal loss weight below 0, or one on findings (not grades of one class)."""
    if not config.ordinal >= 0:
        raise ValueError(f"the ordinal loss weight must be 0 (off) or more (e.g. 1), not {config.ordinal}")
    if config.ordinal and getattr(config, "multilabel", False):
        raise ValueError("the ordinal loss orders the grades of one class per image; this dataset gives several "
                         "findings per image: leave out --ordinal")


def check_calibration(how: str) -> str:
    if how not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {how!r}; choose one of {', '.join(CALIBRATIONS)}")
    return how


TEMPERATURES = (0.05, 20.0)  # a fitted temperature outside these: no calibration (see finish)


def prior_bias(counts: list[int]) -> torch.Tensor:
    """The per-class logit offsets that undo class weights of count.sum() / (k * count): the log
    of each class's share, centred (only differences between classes matter)."""
    shares = torch.tensor(counts, dtype=torch.float32).clamp(min=1)
    offsets = (shares / shares.sum()).log()
    return offsets - offsets.mean()


SHIFT_P = 0.001  # validation class counts this unlikely under the training split's shares: the proportions shifted


def proportions_shift(train_counts: list[int], val_counts: list[int]) -> float | None:
    """The chi-square p-value of the validation split's class counts under the training
    split's shares, when it is below SHIFT_P (else None: the two agree within chance).

    Splits the organizer makes are stratified, so their shares agree and the bias keeps
    the training split's (the larger, less noisy count). Splits that come given can
    differ: a training set sampled apart from the rest (PneumoniaMNIST's 3,882-image subset
    holds 90% pneumonia, its validation and test splits 74% and 62.5%). The validation
    split is drawn like the images to come, so there its shares are the better prior."""
    from scipy.stats import chisquare

    seen = np.asarray(val_counts, dtype=float)
    if seen.sum() < 1 or len(seen) < 2:
        return None
    shares = np.clip(np.asarray(train_counts, dtype=float), 1, None)
    expected = shares / shares.sum() * seen.sum()
    p = float(chisquare(seen, expected).pvalue)
    return p if p < SHIFT_P else None


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, offsets: torch.Tensor,
                    log_loss: Any = F.cross_entropy) -> float:
    """The temperature that minimizes the validation log-loss of softmax(logits / T + offsets)
    (``log_loss`` binary_cross_entropy_with_logits: of one sigmoid per finding)."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        with torch.enable_grad():
            loss = log_loss(logits / log_t.exp() + offsets, targets)
            loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().exp())


def _matched_temperature(logits: torch.Tensor, offsets: torch.Tensor, confidence: float) -> float | None:
    """The temperature within TEMPERATURES at which the mean top probability is
    ``confidence`` (it falls as the temperature rises; bisection on its logarithm), or
    None when no temperature within them reaches it."""
    def mean_top(t: float) -> float:
        return float(torch.softmax(logits / t + offsets, 1).max(1).values.mean())

    if not mean_top(TEMPERATURES[1]) <= confidence <= mean_top(TEMPERATURES[0]):
        return None  # wild logits (surer than that even at 20), or too flat to reach it at 0.05
    low, high = math.log(TEMPERATURES[0]), math.log(TEMPERATURES[1])
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if mean_top(math.exp(middle)) > confidence else (low, middle)
    return math.exp((low + high) / 2)


class _Probabilities(torch.nn.Module):
    """softmax(model(x) / temperature + bias), or sigmoid(model(x) / temperature) per finding
    (``multilabel``): what predict returns and the ONNX graph computes."""

    def __init__(self, model: torch.nn.Module, temperature: float, bias: list[float], multilabel: bool = False) -> None:
        super().__init__()
        self.model, self.temperature, self.multilabel = model, temperature, multilabel
        self.register_buffer("bias", torch.tensor(bias, dtype=torch.float32), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return torch.sigmoid(self.model(images) / self.temperature)
        return torch.softmax(self.model(images) / self.temperature + self.bias, dim=1)


@register_phase(
    "supervised", "Supervised classifier (timm backbone, EfficientNet-B0 by default)",
    input_dims=2, output="class_probabilities", gradcam_layer="conv_head", route=1, searchable=True,
)
class SupervisedPhase(ClassifierPhase):
    Config = SupervisedConfig
    questions = (Question("backbone", "timm backbone:", "text", default="efficientnet_b0"), image_size_question(),
                 EPOCHS, AUGMENT, CLAHE, REGULARIZE, ORDINAL)
    menu_settings = {"batch_size": 16}

    def __init__(self, config: SupervisedConfig, classes: list[str]) -> None:
        check_calibration(config.calibration)
        check_channels(config.channels)
        check_ordinal(config)
        self.config, self.classes = config, list(classes)
        self.model = create_backbone(
            config.backbone, len(classes), pretrained=config.pretrained, drop_rate=config.drop_rate,
            in_chans=config.channels,
        )
        self.config = settle_pretrained(config, self.model)

    @classmethod
    def rebuild(cls, model_args: dict[str, Any]) -> torch.nn.Module | None:
        """An averaged model (the recipe search's ensemble); one backbone is built from the Config."""
        return build_classifier(model_args) if model_args.get("members") else None
