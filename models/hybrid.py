"""The hybrid ensemble: known anomalies from the classifier, unknown ones from the VAE.

Each part is first put on one scale: how rare its score would be among normal images,
a tail probability p fitted on the validation normals (empirical in the bulk, an
exponential tail beyond the top fifth, so that the order of scores past every
reference image is kept). The classifier's score is its log-odds of "not normal",
the VAE's its reconstruction score. The two share one false-alarm budget (a weighted
Bonferroni, or Tippett, test): up to an overall false-alarm level ``cap`` (0.2, where
clinical operating points lie) the classifier raises the share w of the alarms and the
VAE 1 - w; past it the classifier keeps only ``after_cap`` (half) of its share. An
image's combined p is the smallest false-alarm level at which either part flags it
(v = w * after_cap):

    x_clf = p_clf / w          if p_clf <= w * cap,        else cap + (p_clf - w * cap) / v
    x_vae = p_vae / (1 - w)    if p_vae <= (1 - w) * cap,  else cap + (p_vae - (1 - w) * cap) / (1 - v)
    anomaly score = 1 - min(1, x_clf, x_vae)

so among normal images about a fraction a scores above 1 - a. Neither part can vouch
for normality: a classifier calls a kind of anomaly it never saw normal, often more
surely than real normals; with its full share of the whole budget it would rank those
images below the normals. Measured on saved component scores of three open-set runs
(benchmarks/open_set.py): known-class AUROC 0.927 / 0.957 / 0.749 (supervised 0.923 /
0.907 / 0.761), held-out class 0.675 / 0.265 / 0.724 (supervised 0.321 / 0.377 / 0.681;
the VAE 0.765 / 0.359 / 0.774); without the softened cap 0.318 / 0.377 / 0.685.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from app.metrics import youden_threshold
from models.registry import register_phase
from models.supervised import create_backbone
from models.vae import ConvVAE, ReconstructionScore

TAIL_FRACTION = 0.2  # the top fifth of the validation normals fits the exponential tail


@dataclass(frozen=True)
class Finding:
    """What ``detect_anomaly`` says about one image."""

    is_anomaly: bool
    predicted_class: str
    confidence: float  # the classifier's probability of predicted_class
    anomaly_score: float  # the combined score in [0, 1] (the larger part); compared with threshold
    threshold: float
    fired: str  # "known" (the classifier), "unknown" (the VAE) or "none"
    known_part: float  # 1 - min(1, x_clf): the classifier's evidence alone (see the module docstring)
    unknown_part: float  # 1 - min(1, x_vae): the VAE's evidence alone


@dataclass
class HybridConfig:
    supervised_run: str = ""
    vae_run: str = ""
    weight: float | None = None  # the classifier's share of the false-alarm budget; None: chosen from the data
    cap: float = 0.2  # the false-alarm level past which the classifier's share is reduced
    after_cap: float = 0.5  # the part of its share the classifier keeps past the cap
    labeled_fraction: float = 1.0
    image_size: int = 128  # taken from the component runs
    clahe: bool = False  # taken from the component runs
    seed: int = 0


class NormalTail(nn.Module):
    """P(a normal image scores at least this high), fitted on normal images' scores.

    Empirical, (1 + #{reference >= s}) / (n + 1), up to the start u of the top
    fifth of the reference scores; beyond it, mass * exp(-(s - u) / scale), the
    peaks-over-threshold exponential tail, so scores beyond every reference image
    keep their order. Never increases with s.
    """

    def __init__(self, n_reference: int) -> None:
        super().__init__()
        self.register_buffer("reference", torch.zeros(n_reference))
        self.register_buffer("tail", torch.tensor([0.0, 1.0, 1.0]))  # start u, scale, mass

    @torch.no_grad()
    def fit(self, scores: torch.Tensor) -> None:
        ref = torch.sort(scores.float().flatten()).values
        n = len(ref)
        k = max(1, int(round(TAIL_FRACTION * n))) if n > 1 else 0
        start = float(ref[n - 1 - k])
        scale = float((ref[n - k :] - start).mean()) if k else 0.0
        if not scale > 0:  # ties at the top, or one reference image: a scale from the spread, or a tiny one
            spread = float(ref[-1] - ref[0])
            scale = spread / n if spread > 0 else 1e-3 * (abs(start) + 1.0)
        self.reference = ref
        self.tail = torch.tensor([start, scale, (1.0 + k) / (n + 1.0)])

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        n = self.reference.shape[0]
        empirical = (1.0 + (self.reference[None, :] >= scores[:, None]).float().sum(dim=1)) / (n + 1.0)
        start, scale, mass = self.tail[0], self.tail[1], self.tail[2]
        beyond = mass * torch.exp(-(scores - start).clamp(min=0.0) / scale)
        return torch.where(scores > start, beyond, empirical)


def parts_scores(p_known: Any, p_unknown: Any, weight: Any, cap: Any = 0.2, after_cap: Any = 0.5) -> tuple[Any, Any]:
    """Each part's evidence alone, 1 - min(1, x) with x the false-alarm level at which the
    part flags the image (see the module docstring): (known, unknown)."""
    tensor = isinstance(p_known, torch.Tensor)
    lib = torch if tensor else np
    w = weight.clamp(1e-6, 1 - 1e-6) if isinstance(weight, torch.Tensor) else min(max(float(weight), 1e-6), 1 - 1e-6)
    v = w * after_cap  # the classifier's share past the cap
    x_known = lib.where(p_known <= w * cap, p_known / w, cap + (p_known - w * cap) / (v + 1e-12))
    x_unknown = lib.where(p_unknown <= (1 - w) * cap, p_unknown / (1 - w), cap + (p_unknown - (1 - w) * cap) / (1 - v))
    if tensor:
        return 1.0 - x_known.clamp(max=1.0), 1.0 - x_unknown.clamp(max=1.0)
    return 1.0 - np.minimum(x_known, 1.0), 1.0 - np.minimum(x_unknown, 1.0)


def combine(p_known: Any, p_unknown: Any, weight: Any, cap: Any = 0.2, after_cap: Any = 0.5) -> Any:
    """The hybrid score, in [0, 1]: 1 - min(1, x_clf, x_vae) (see the module docstring).

    ``p_known`` and ``p_unknown`` are the two parts' tail probabilities among normal
    images (see NormalTail). Works on numpy arrays and tensors alike.
    """
    known, unknown = parts_scores(p_known, p_unknown, weight, cap, after_cap)
    return torch.maximum(known, unknown) if isinstance(known, torch.Tensor) else np.maximum(known, unknown)


class HybridModel(nn.Module):
    """Both detectors and their calibration in one module (exported as one ONNX graph)."""

    def __init__(self, supervised: nn.Module, vae: ConvVAE, normal_index: int, n_reference: int,
                 vae_score: str = "mse", num_classes: int = 2) -> None:
        super().__init__()
        self.supervised, self.vae = supervised, vae
        self.normal_index, self.vae_score = normal_index, vae_score
        others = [k for k in range(num_classes) if k != normal_index]
        self.register_buffer("others", torch.tensor(others, dtype=torch.long), persistent=False)
        self.known_tail, self.unknown_tail = NormalTail(n_reference), NormalTail(n_reference)
        self.register_buffer("weight", torch.tensor(0.5))
        self.register_buffer("cap", torch.tensor(0.2))
        self.register_buffer("after_cap", torch.tensor(0.5))

    def raw_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class probabilities, the classifier's log-odds of "not normal", the VAE score)."""
        log_p = torch.log_softmax(self.supervised(images), dim=1)
        log_odds = torch.logsumexp(log_p.index_select(1, self.others), dim=1) - log_p[:, self.normal_index]
        return log_p.exp(), log_odds, ReconstructionScore(self.vae, self.vae_score)(images)

    def parts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class probabilities, p_known, p_unknown): the two tail probabilities among normals."""
        probabilities, log_odds, raw = self.raw_scores(images)
        return probabilities, self.known_tail(log_odds), self.unknown_tail(raw)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities, p_known, p_unknown = self.parts(images)
        return probabilities, combine(p_known, p_unknown, self.weight, self.cap, self.after_cap)


@register_phase(
    "hybrid", "Hybrid ensemble (classifier + VAE: known and unknown anomalies)",
    input_dims=2, output="anomaly_score", trainable=False, components=("supervised", "vae"),
)
class HybridPhase:
    Config = HybridConfig
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
        if supervised.config.image_size != vae.config.image_size:
            raise ValueError(
                f"The supervised run uses {supervised.config.image_size} px and the VAE run "
                f"{vae.config.image_size} px: train both at one image size."
            )
        if supervised.config.clahe != vae.config.clahe:
            raise ValueError("One of the supervised and VAE runs uses CLAHE and the other does not: "
                             "train both with the same preprocessing.")
        self.config.image_size, self.config.clahe = supervised.config.image_size, supervised.config.clahe
        self._args = {
            "supervised": supervised.model_args(), "vae": vae.model_args(),
            "normal_index": self.classes.index("normal"), "n_reference": n_reference,
            "vae_score": vae.config.score, "num_classes": len(self.classes),
        }
        self.model = HybridModel(supervised.model, vae.model, self._args["normal_index"], n_reference,
                                 vae.config.score, len(self.classes))

    @classmethod
    def rebuild(cls, model_args: dict[str, Any]) -> HybridModel:
        sup = model_args["supervised"]
        supervised = create_backbone(sup["backbone"], sup["num_classes"], pretrained=False)
        vae = ConvVAE(**model_args["vae"])
        return HybridModel(supervised, vae, model_args["normal_index"], model_args["n_reference"],
                           model_args.get("vae_score", "mse"), model_args.get("num_classes", sup["num_classes"]))

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
        cap, after = float(self.config.cap), float(self.config.after_cap)
        if not (0.0 < cap <= 1.0 and 0.0 <= after <= 1.0):
            raise ValueError(f"cap must lie in (0, 1] and after_cap in [0, 1], not {cap} and {after}")
        self.model.cap, self.model.after_cap = torch.tensor(cap), torch.tensor(after)
        weight = self.config.weight
        if weight is None:
            fraction = self.config.labeled_fraction
            if fraction >= 0.7:
                weight = 0.8
            elif fraction <= 0.3:
                weight = 0.5
            elif len(set(labels)) == 2:
                grid = np.linspace(0.1, 0.9, 9)
                weight = float(max(grid, key=lambda w: roc_auc_score(labels, combine(p_known, p_unknown, w, cap, after))))
            else:
                weight = 0.5
        self.model.weight = torch.tensor(float(weight))
        combined = combine(p_known, p_unknown, weight, cap, after)
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
        known, unknown = (float(v[0]) for v in parts_scores(p_known, p_unknown, self.model.weight, float(self.model.cap),
                                                                  float(self.model.after_cap)))
        score, cut = max(known, unknown), self.threshold if threshold is None else float(threshold)
        flagged = score >= cut
        guess = int(probabilities[0].argmax())
        return Finding(
            is_anomaly=flagged, predicted_class=self.classes[guess], confidence=float(probabilities[0, guess]),
            anomaly_score=score, threshold=cut, fired=("known" if known >= unknown else "unknown") if flagged else "none",
            known_part=known, unknown_part=unknown,
        )

    def export_module(self) -> nn.Module:
        assert self.model is not None
        return self.model

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
