"""The hybrid ensemble: known anomalies from the classifier, unknown ones from the VAE.

Each part is first put on one scale: how rare its score would be among normal images,
a tail probability p fitted on the validation normals (empirical in the bulk, an
exponential tail beyond the top fifth, so that the order of scores past every
reference image is kept). The classifier's score is its log-odds of "not normal",
the VAE's its multi-view score (models/vae.py MultiViewScore), not the view the VAE run
chose on validation: that choice is tuned to the known anomalies, and the VAE is here
for the others (HybridConfig.vae_scoring "run" keeps the run's own). The classifier's
weight w (0.8 when the data are mostly labeled) enters two classic ways of combining
p-values, each exact among normals when the parts are independent there:

- weighted Fisher, for evidence spread over both parts: t = w (-log p_clf) +
  (1 - w) (-log p_vae), whose tail among normals is a sum of two exponentials,
  p_F = (w e^(-t/w) - (1 - w) e^(-t/(1 - w))) / (2w - 1)  (e^(-2t) (1 + 2t) at w = 1/2);
- weighted Bonferroni (Tippett), for strong evidence from one part alone:
  p_T = min(p_clf / w, p_vae / (1 - w));

and the hybrid keeps the stronger, paying for the choice (Bonferroni again):

    anomaly score = 1 - min(1, 2 min(p_F, p_T))

so at most about a fraction a of normal images score above 1 - a. Evidence only adds:
a classifier that calls an unknown kind of anomaly normal, often more surely than real
normals, cannot vouch for the image against the VAE. Fisher alone drowns a VAE that
sees an anomaly very clearly (synthetic parts, tests/app/test_anomaly.py: 0.68 AUROC
against 0.91); Tippett alone lets moderate VAE evidence go. benchmarks/open_set.py
(demo, EfficientNet-B0, AUROC known classes / held-out class against normals, session
6): tumours held out (seeds 0-2) supervised 0.779 / 0.390, VAE 0.822 / 0.791, this
hybrid at w 0.8 0.868 / 0.563; infections (seeds 0-1) 0.745 / 0.230, 0.736 / 0.920,
0.771 / 0.792 (README: every hold-out). Before the multi-view VAE part, on saved
component scores of dev runs: Fisher alone 0.787 / 0.721 and 0.783 / 0.794, the
previous hybrid (Tippett with a capped budget) 0.770 / 0.632 and 0.728 / 0.818, this
one 0.806 / 0.718 and 0.765 / 0.834.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.metrics import youden_threshold
from models.base import Phase, setting
from models.registry import register_phase
from models.supervised import build_classifier
from models.tails import NormalTail
from models.vae import ConvVAE, MultiViewScore, ReconstructionScore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finding:
    """What ``detect_anomaly`` says about one image."""

    is_anomaly: bool
    predicted_class: str
    confidence: float  # the classifier's probability of predicted_class
    anomaly_score: float  # the combined score in [0, 1]; compared with threshold
    threshold: float
    fired: str  # "known" (the classifier is the stronger alarm for its weight: p_clf / w <= p_vae / (1 - w)), "unknown" or "none"
    known_part: float  # 1 - p_clf: how unusual the classifier's score is among normals
    unknown_part: float  # 1 - p_vae: how unusual the VAE's score is among normals


@dataclass(frozen=True)
class HybridConfig:
    supervised_run: str = setting("", help="hybrid: the supervised run to combine")
    vae_run: str = setting("", help="hybrid: the VAE run to combine")
    weight: float | None = setting(None, layer="post_hoc",
                                   help="hybrid: the classifier's weight w in the combined evidence (default from "
                                        "the labeled fraction)")
    labeled_fraction: float = 1.0
    # How the VAE part scores: "views", every view at once (MultiViewScore): its job here is
    # the anomalies the classifier does not know, so it must not be tuned to the ones it does;
    # "run", as the VAE run chose on validation (runs from before multi-view scores can only).
    vae_scoring: str = setting("views", layer="post_hoc", choices=("views", "run"),
                               help="hybrid: the VAE part scores through every view (default) or as the VAE run chose")
    image_size: int = 128  # taken from the component runs
    clahe: bool = False  # taken from the component runs
    seed: int = 0


SMALLEST_P = 1e-30  # tail probabilities are floored here before the log


def evidence(p_known: Any, p_unknown: Any, weight: Any) -> tuple[Any, Any]:
    """Each part's weighted evidence, (w * -log p_clf, (1 - w) * -log p_vae)."""
    tensor = isinstance(p_known, torch.Tensor)
    lib = torch if tensor else np
    w = weight.clamp(1e-3, 1 - 1e-3) if isinstance(weight, torch.Tensor) else min(max(float(weight), 1e-3), 1 - 1e-3)
    floor = (lambda p: p.clamp(min=SMALLEST_P)) if tensor else (lambda p: np.maximum(p, SMALLEST_P))
    return -w * lib.log(floor(p_known)), -(1 - w) * lib.log(floor(p_unknown))


def combine(p_known: Any, p_unknown: Any, weight: Any) -> Any:
    """The hybrid score in [0, 1]: 1 - min(1, 2 min(p_F, p_T)) (see the module text).
    ``p_known`` and ``p_unknown`` are the parts' tail probabilities among normal images
    (NormalTail). Works on numpy arrays and tensors."""
    known, unknown = evidence(p_known, p_unknown, weight)
    t = known + unknown
    if isinstance(t, torch.Tensor):
        w = torch.as_tensor(weight, dtype=t.dtype).clamp(1e-3, 1 - 1e-3)
        gap = 2 * w - 1
        near_half = gap.abs() < 1e-3
        gap = torch.where(near_half, torch.ones_like(gap), gap)  # one graph for ONNX: the unused form stays finite
        general = (w * torch.exp(-t / w) - (1 - w) * torch.exp(-t / (1 - w))) / gap
        fisher = torch.where(near_half, torch.exp(-2 * t) * (1 + 2 * t), general)
        tippett = torch.minimum(p_known / w, p_unknown / (1 - w))
        return 1.0 - (2 * torch.minimum(fisher, tippett)).clamp(0.0, 1.0)
    w = min(max(float(weight), 1e-3), 1 - 1e-3)
    if abs(2 * w - 1) < 1e-3:
        fisher = np.exp(-2 * t) * (1 + 2 * t)
    else:
        fisher = (w * np.exp(-t / w) - (1 - w) * np.exp(-t / (1 - w))) / (2 * w - 1)
    tippett = np.minimum(p_known / w, p_unknown / (1 - w))
    return 1.0 - np.clip(2 * np.minimum(fisher, tippett), 0.0, 1.0)


class HybridModel(nn.Module):
    """Both detectors and their calibration in one module (exported as one ONNX graph)."""

    def __init__(self, supervised: nn.Module, vae_scorer: ReconstructionScore, normal_index: int, n_reference: int,
                 num_classes: int = 2, temperature: float = 1.0, bias: list[float] | None = None,
                 classifier_size: int = 0) -> None:
        super().__init__()
        self.supervised, self.vae_scorer = supervised, vae_scorer  # the VAE run's score, its reference included
        # Images come at the VAE's size; a classifier trained smaller (a divisor of it) sees them
        # averaged down, block by block (0: the same size).
        self.classifier_size = int(classifier_size)
        self.normal_index = normal_index
        # The supervised run's calibration (ClassifierPhase.finish): probabilities as it reports them.
        self.temperature = float(temperature)
        self.register_buffer("logit_bias", torch.tensor(bias or [0.0] * num_classes, dtype=torch.float32),
                             persistent=False)
        others = [k for k in range(num_classes) if k != normal_index]
        self.register_buffer("others", torch.tensor(others, dtype=torch.long), persistent=False)
        self.known_tail, self.unknown_tail = NormalTail(n_reference), NormalTail(n_reference)
        self.register_buffer("weight", torch.tensor(0.5))

    @property
    def vae(self) -> ConvVAE:
        return self.vae_scorer.vae

    def raw_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class probabilities, the classifier's log-odds of "not normal", the VAE score)."""
        seen = images
        if self.classifier_size and images.shape[-1] != self.classifier_size:
            seen = F.adaptive_avg_pool2d(images, self.classifier_size)  # exact blocks: the sizes divide
        log_p = torch.log_softmax(self.supervised(seen) / self.temperature + self.logit_bias, dim=1)
        log_odds = torch.logsumexp(log_p.index_select(1, self.others), dim=1) - log_p[:, self.normal_index]
        return log_p.exp(), log_odds, self.vae_scorer(images)

    def parts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class probabilities, p_known, p_unknown): the two tail probabilities among normals."""
        probabilities, log_odds, raw = self.raw_scores(images)
        return probabilities, self.known_tail(log_odds), self.unknown_tail(raw)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities, p_known, p_unknown = self.parts(images)
        return probabilities, combine(p_known, p_unknown, self.weight)


@register_phase(
    "hybrid", "Hybrid ensemble (classifier + VAE: known and unknown anomalies)",
    input_dims=2, output="anomaly_score", trainable=False, components=("supervised", "vae"), route=0,
)
class HybridPhase(Phase):
    Config = HybridConfig
    questions = ()  # everything comes from the two runs it combines
    # The normal tails turn float32 rounding of a score (1e-7) into up to a few 1e-4 of
    # tail probability where the validation normals lie close together; a wrong export
    # differs by far more.
    export_tolerance = 1e-3

    def __init__(self, config: HybridConfig, classes: list[str]) -> None:
        if "normal" not in classes:
            raise ValueError("The hybrid phase needs a 'normal' class to tell anomalies from normal images.")
        self.config, self.classes = config, list(classes)
        self.model: HybridModel | None = None
        self.threshold = 0.5
        self._args: dict[str, Any] = {}

    def attach(self, supervised: Any, vae: Any, n_reference: int = 0) -> None:
        """Take the trained component phases (see PhaseSpec.components)."""
        if getattr(supervised, "multilabel", False):
            raise ValueError("The supervised run gives each finding its own probability (several findings per image), "
                             "with no 'normal' class for the hybrid to weigh against the VAE: use the two runs apart.")
        small, large = supervised.config.image_size, vae.config.image_size
        if small > large or large % small:
            raise ValueError(
                f"The supervised run uses {small} px and the VAE run {large} px: train the VAE at the "
                f"classifier's size or a multiple of it (the hybrid averages the VAE's input down for the classifier)."
            )
        if supervised.config.clahe != vae.config.clahe:
            raise ValueError("One of the supervised and VAE runs uses CLAHE and the other does not: "
                             "train both with the same preprocessing.")
        self.config = dataclasses.replace(self.config, image_size=large, clahe=supervised.config.clahe)
        if self.config.vae_scoring not in ("views", "run"):
            raise ValueError(f"unknown VAE scoring {self.config.vae_scoring!r} for the hybrid; choose views or run")
        reference = getattr(vae, "reference", None) or {}
        if self.config.vae_scoring == "views" and "area_scores" not in reference:
            log.warning("The VAE run keeps no reference for a multi-view score (an older run): the hybrid "
                        "scores as the VAE run chose. Train the VAE again to use every view.")
            self.config = dataclasses.replace(self.config, vae_scoring="run")
        scorer = vae.scorer(views=True if self.config.vae_scoring == "views" else None)  # None: the run's own
        how = ({"views": [list(v) for v in scorer.views],
                **({"patch": scorer.patch, "n_patch": int(scorer.patch_codes.shape[0])} if scorer.patch else {})}
               if isinstance(scorer, MultiViewScore) else {"area": scorer.area, "neighbours": scorer.neighbours})
        self._args = {
            "supervised": supervised.model_args(), "vae": vae.model_args(),
            "normal_index": self.classes.index("normal"), "n_reference": n_reference,
            "vae_scorer": {"kind": scorer.kind, **how, "n_reference": int(scorer.reference_codes.shape[0])},
            "num_classes": len(self.classes),
            "classifier_calibration": {"temperature": float(getattr(supervised, "temperature", 1.0)),
                                       "bias": getattr(supervised, "bias", None)},
            "classifier_size": small if small != large else 0,
        }
        self.model = HybridModel(supervised.model, scorer, self._args["normal_index"], n_reference, len(self.classes),
                                 **self._args["classifier_calibration"], classifier_size=self._args["classifier_size"])

    @classmethod
    def rebuild(cls, model_args: dict[str, Any]) -> HybridModel:
        sup = model_args["supervised"]
        supervised = build_classifier(sup)  # one backbone, or the recipe search's members averaged
        # Hybrids saved before the VAE score had a reference lack "vae_scorer"; their weights
        # then do not fit, and rebuild_phase says to refit the hybrid.
        scorer_args = model_args.get("vae_scorer", {"kind": model_args.get("vae_score", "mse")})
        vae = ConvVAE(**model_args["vae"])
        scorer = MultiViewScore(vae, **scorer_args) if "views" in scorer_args else ReconstructionScore(vae, **scorer_args)
        return HybridModel(supervised, scorer, model_args["normal_index"], model_args["n_reference"],
                           model_args.get("num_classes", sup["num_classes"]),
                           **model_args.get("classifier_calibration", {}),  # older hybrids: none
                           classifier_size=model_args.get("classifier_size", 0))

    def scorer(self) -> Any:
        """The VAE part's scorer: its residual maps explain the unknown-anomaly score."""
        return self.model.vae_scorer if self.model is not None else None

    def settle(self, model_args: dict[str, Any]) -> None:
        """After a reload: keep the parts' arguments; a hybrid saved before multi-view scores has
        a single-view VAE part and no vae_scoring in its configuration, which would read as the
        new default."""
        self._args = dict(model_args)
        if "views" not in self._args.get("vae_scorer", {}):
            self.config = dataclasses.replace(self.config, vae_scoring="run")

    def model_args(self) -> dict[str, Any]:
        return dict(self._args)

    def select_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r["labeled"]]

    def targets(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        return torch.tensor([0 if r["label"] == "normal" else 1 for r in rows])

    @torch.no_grad()
    def fit(self, images: torch.Tensor, is_anomaly: torch.Tensor) -> dict[str, float]:
        """Calibrate on validation images: both parts' normal tails, the weight, the threshold."""
        from sklearn.metrics import roc_auc_score

        assert self.model is not None, "attach() the component phases first"
        self.model.eval()
        labels = is_anomaly.numpy().astype(int)
        if not (labels == 0).any():
            raise ValueError("The validation split holds no normal image to calibrate the hybrid on.")
        _, log_odds, raw = self.model.raw_scores(images)
        normal = is_anomaly == 0
        self.model.known_tail.fit(log_odds[normal])
        self.model.unknown_tail.fit(raw[normal])
        self._args["n_reference"] = int(normal.sum())
        p_known, p_unknown = self.model.known_tail(log_odds).numpy(), self.model.unknown_tail(raw).numpy()
        weight = self.config.weight
        if weight is None:
            fraction = self.config.labeled_fraction
            if fraction >= 0.7:
                weight = 0.8
            elif fraction <= 0.3:
                weight = 0.5
            elif len(set(labels)) == 2:
                grid = np.linspace(0.1, 0.9, 9)
                weight = float(max(grid, key=lambda w: roc_auc_score(labels, combine(p_known, p_unknown, w))))
            else:
                weight = 0.5
        self.model.weight = torch.tensor(float(weight))
        combined = combine(p_known, p_unknown, weight)
        cut = youden_threshold(labels, combined)
        self.threshold = cut if cut is not None else 0.95
        auc = float(roc_auc_score(labels, combined)) if len(set(labels)) == 2 else float("nan")
        return {"weight": float(weight), "threshold": self.threshold, "val_auroc": auc,
                "val_normals_flagged_at_0.95": round(float((combined[labels == 0] >= 0.95).mean()), 4)}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        assert self.model is not None
        return self.model(images)[1]

    @torch.no_grad()
    def detect_anomaly(self, image: Any, threshold: float | None = None) -> Finding:
        """One prepared image ((H, W), (1, H, W) or (1, 1, H, W), values in [0, 1]) -> a Finding.

        ``threshold`` defaults to the one fitted on validation. The part that fired is
        the one with the stronger evidence when the image is flagged: "known" when the
        classifier recognizes a finding it was trained on, "unknown" when the VAE finds
        the image unlike the normals it learned.
        """
        assert self.model is not None
        x = torch.as_tensor(np.asarray(image, dtype=np.float32))
        while x.dim() < 4:
            x = x.unsqueeze(0)
        self.model.eval()
        probabilities, p_known, p_unknown = self.model.parts(x[:1])
        score = float(combine(p_known, p_unknown, self.model.weight)[0])
        w = float(self.model.weight)
        cut = self.threshold if threshold is None else float(threshold)
        flagged = score >= cut
        guess = int(probabilities[0].argmax())
        return Finding(
            is_anomaly=flagged, predicted_class=self.classes[guess], confidence=float(probabilities[0, guess]),
            anomaly_score=score, threshold=cut, fired=("known" if float(p_known[0]) / w <= float(p_unknown[0]) / (1 - w) else "unknown") if flagged else "none",
            known_part=1.0 - float(p_known[0]), unknown_part=1.0 - float(p_unknown[0]),
        )

    def export_module(self) -> nn.Module:
        assert self.model is not None
        return self.model

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
