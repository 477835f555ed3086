"""The hybrid ensemble: known anomalies from the classifier, unknown ones from the VAE.

Score = w * E(P(not normal | classifier)) + (1 - w) * F(VAE score), in [0, 1], where
F is the empirical distribution of VAE scores on validation normals (a calibrated
percentile) and E is the classifier's evidence above what normal images get:
(p - m) / (1 - m) clipped at 0, with m the 95th percentile of P(not normal) on the
validation normals. w follows the labeled fraction (mostly labeled: 0.8; mostly
unlabeled: 0.5; in between: tuned on validation) unless set by hand. Nothing here
is trained by gradient: the phase is fitted on the validation split.
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


@dataclass(frozen=True)
class Finding:
    """What ``detect_anomaly`` says about one image."""

    is_anomaly: bool
    predicted_class: str
    confidence: float  # the classifier's probability of predicted_class
    anomaly_score: float  # the combined score in [0, 1]; compared with threshold
    threshold: float
    fired: str  # "known" (the classifier), "unknown" (the VAE) or "none"
    known_part: float  # weight * the classifier's evidence (see combine); anomaly_score = known + unknown
    unknown_part: float  # (1 - weight) * VAE score percentile among validation normals


@dataclass
class HybridConfig:
    supervised_run: str = ""
    vae_run: str = ""
    weight: float | None = None  # weight of the classifier; None: chosen from the data
    labeled_fraction: float = 1.0
    image_size: int = 128  # taken from the component runs
    clahe: bool = False  # taken from the component runs
    seed: int = 0


def evidence(known: Any, floor: Any) -> Any:
    """The classifier's P(not normal) above ``floor`` (its level on normal images), in [0, 1]."""
    scaled = (known - floor) / max(1.0 - float(floor), 1e-6)
    return scaled.clamp(0.0, 1.0) if isinstance(scaled, torch.Tensor) else np.clip(scaled, 0.0, 1.0)


def combine(known: Any, unknown: Any, weight: Any, floor: Any) -> Any:
    """The hybrid score: w * evidence(known, floor) + (1 - w) * unknown, in [0, 1].

    ``known`` is the classifier's P(not normal); ``unknown`` the VAE score's percentile
    among validation normals. The classifier counts only above its normal level: on a
    kind of anomaly it never saw it is confidently wrong (it calls the image normal,
    often more surely than real normals), and a plain weighted sum would let its 0.8
    share rank those images below the normals. Floored, it can raise suspicion but
    cannot vouch for normality, and the VAE orders what the classifier finds normal.
    Works on floats, numpy arrays and tensors alike.
    """
    return weight * evidence(known, floor) + (1.0 - weight) * unknown


class HybridModel(nn.Module):
    """Both detectors and their calibration in one module (exported as one ONNX graph)."""

    def __init__(self, supervised: nn.Module, vae: ConvVAE, normal_index: int, n_reference: int,
                 vae_score: str = "mse") -> None:
        super().__init__()
        self.supervised, self.vae = supervised, vae
        self.normal_index, self.vae_score = normal_index, vae_score
        self.register_buffer("reference", torch.zeros(n_reference))
        self.register_buffer("weight", torch.tensor(0.5))
        self.register_buffer("known_floor", torch.tensor(0.0))

    def parts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class probabilities, calibrated VAE score in [0, 1])."""
        probabilities = torch.softmax(self.supervised(images), dim=1)
        raw = ReconstructionScore(self.vae, self.vae_score)(images)
        calibrated = (self.reference[None, :] <= raw[:, None]).float().mean(dim=1)
        return probabilities, calibrated

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities, calibrated = self.parts(images)
        known = 1.0 - probabilities[:, self.normal_index]
        return probabilities, combine(known, calibrated, self.weight, self.known_floor)


@register_phase(
    "hybrid", "Hybrid ensemble (classifier + VAE: known and unknown anomalies)",
    input_dims=2, output="anomaly_score", trainable=False, components=("supervised", "vae"),
)
class HybridPhase:
    Config = HybridConfig

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
            "vae_score": vae.config.score,
        }
        self.model = HybridModel(supervised.model, vae.model, self._args["normal_index"], n_reference,
                                 vae.config.score)

    @classmethod
    def rebuild(cls, model_args: dict[str, Any]) -> HybridModel:
        sup = model_args["supervised"]
        supervised = create_backbone(sup["backbone"], sup["num_classes"], pretrained=False)
        vae = ConvVAE(**model_args["vae"])
        return HybridModel(supervised, vae, model_args["normal_index"], model_args["n_reference"],
                           model_args.get("vae_score", "mse"))

    def model_args(self) -> dict[str, Any]:
        return dict(self._args)

    def select_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r["labeled"]]

    def targets(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        return torch.tensor([0 if r["label"] == "normal" else 1 for r in rows])

    @torch.no_grad()
    def fit(self, images: torch.Tensor, is_anomaly: torch.Tensor) -> dict[str, float]:
        """Calibrate on validation images: VAE reference, weight, threshold."""
        from sklearn.metrics import roc_auc_score

        assert self.model is not None, "attach() the component phases first"
        self.model.eval()
        labels = is_anomaly.numpy().astype(int)
        raw = ReconstructionScore(self.model.vae, self.model.vae_score)(images)
        normals = raw[is_anomaly == 0]
        if len(normals) == 0:
            raise ValueError("The validation split holds no normal image to calibrate the VAE score on.")
        reference = torch.sort(normals).values
        self.model.reference = reference
        self._args["n_reference"] = len(reference)
        probabilities, calibrated = self.model.parts(images)
        known = (1.0 - probabilities[:, self._args["normal_index"]]).numpy()
        unknown = calibrated.numpy()
        floor = float(np.percentile(known[labels == 0], 95))
        self.model.known_floor = torch.tensor(floor)
        weight = self.config.weight
        if weight is None:
            fraction = self.config.labeled_fraction
            if fraction >= 0.7:
                weight = 0.8
            elif fraction <= 0.3:
                weight = 0.5
            elif len(set(labels)) == 2:
                grid = np.linspace(0, 1, 11)
                weight = float(max(grid, key=lambda w: roc_auc_score(labels, combine(known, unknown, w, floor))))
            else:
                weight = 0.5
        self.model.weight = torch.tensor(float(weight))
        combined = combine(known, unknown, weight, floor)
        cut = youden_threshold(labels, combined)
        self.threshold = cut if cut is not None else float(np.percentile(combined, 95))
        auc = float(roc_auc_score(labels, combined)) if len(set(labels)) == 2 else float("nan")
        return {"weight": float(weight), "threshold": self.threshold, "val_auroc": auc, "known_floor": floor}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        assert self.model is not None
        return self.model(images)[1]

    @torch.no_grad()
    def detect_anomaly(self, image: Any, threshold: float | None = None) -> Finding:
        """One prepared image ((H, W), (1, H, W) or (1, 1, H, W), values in [0, 1]) -> a Finding.

        ``threshold`` defaults to the one fitted on validation. The part that fired is
        the larger of the two weighted contributions when the image is flagged: "known"
        when the classifier recognizes a finding it was trained on, "unknown" when the
        VAE finds the image unlike the normals it learned.
        """
        assert self.model is not None
        x = torch.as_tensor(np.asarray(image, dtype=np.float32))
        while x.dim() < 4:
            x = x.unsqueeze(0)
        self.model.eval()
        probabilities, calibrated = self.model.parts(x[:1])
        weight, floor = float(self.model.weight), float(self.model.known_floor)
        known = weight * float(evidence(1.0 - float(probabilities[0, self._args["normal_index"]]), floor))
        unknown = (1.0 - weight) * float(calibrated[0])
        score, cut = known + unknown, self.threshold if threshold is None else float(threshold)
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
