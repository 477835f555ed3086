"""Transfer learning in two stages, then temperature scaling.

Stage 1 trains the new head on a frozen ResNet; stage 2 also fine-tunes the last
block at a lower learning rate. After training, one temperature is fitted on the
validation logits so that confidences match accuracies (Guo et al., 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from models.registry import register_phase
from models.supervised import ClassifierPhase, create_backbone


@dataclass
class TransferConfig:
    backbone: str = "resnet18"  # or resnet50, or any timm ResNet
    pretrained: bool | str = True  # True: from the local cache; or a weights file path
    image_size: int = 128
    epochs: int = 20
    frozen_epochs: int = 5  # stage 1: only the new head learns
    batch_size: int = 32
    lr: float = 3e-3  # the head
    finetune_lr: float = 3e-4  # the last block, in stage 2
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0  # smoothing would fight the temperature calibration
    class_weights: bool = True
    clahe: bool = False
    augment: str = "standard"  # none | standard | strong
    ema: float = 0.0  # decay of the weight average used for validation and kept (e.g. 0.99); 0: off
    seed: int = 0


@register_phase(
    "transfer", "Transfer learning (ResNet, two stages, calibrated)",
    input_dims=2, output="class_probabilities", gradcam_layer="layer4",
)
class TransferPhase(ClassifierPhase):
    Config = TransferConfig

    def __init__(self, config: TransferConfig, classes: list[str]) -> None:
        self.config, self.classes = config, list(classes)
        self.model = create_backbone(config.backbone, len(classes), pretrained=config.pretrained)
        self.temperature = 1.0

    def _parts(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        head = list(self.model.get_classifier().parameters())
        last = list(self.model.layer4.parameters())
        # The first convolution has one input channel: it was reshaped from RGB and must adapt too.
        stem = list(self.model.conv1.parameters())
        return head + stem, last, [p for p in self.model.parameters() if all(p is not q for q in head + last + stem)]

    def param_groups(self) -> list[dict[str, Any]]:
        head, last, _ = self._parts()
        return [{"params": head, "lr": self.config.lr}, {"params": last, "lr": self.config.finetune_lr}]

    def start_epoch(self, epoch: int) -> None:
        """Stage 1 (epoch < frozen_epochs): the body is frozen. Stage 2: the last block learns too."""
        head, last, rest = self._parts()
        for p in head:
            p.requires_grad_(True)
        for p in last:
            p.requires_grad_(epoch >= self.config.frozen_epochs)
        for p in rest:
            p.requires_grad_(False)

    @torch.no_grad()
    def finish(self, images: torch.Tensor, targets: torch.Tensor, **_: Any) -> dict[str, float]:
        """Fit the temperature on validation logits (best weights loaded, NLL minimized);
        report NLL, ECE and MCE before and after."""
        from app.metrics import calibration_errors

        self.model.eval()
        logits = torch.cat([self.model(images[i : i + 64]) for i in range(0, len(images), 64)])
        before = calibration_errors(torch.softmax(logits, 1).numpy(), targets.numpy())
        log_t = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

        def nll() -> torch.Tensor:
            optimizer.zero_grad()
            with torch.enable_grad():
                loss = F.cross_entropy(logits / log_t.exp(), targets)
                loss.backward()
            return loss

        nll_before = float(F.cross_entropy(logits, targets))
        optimizer.step(nll)
        self.temperature = float(log_t.exp().clamp(0.05, 20.0))
        nll_after = float(F.cross_entropy(logits / self.temperature, targets))
        if nll_after > nll_before:  # the fit failed to improve: keep the model as it was
            self.temperature, nll_after = 1.0, nll_before
        after = calibration_errors(torch.softmax(logits / self.temperature, 1).numpy(), targets.numpy())
        # Scaling minimizes the NLL; ECE usually falls too, but on a small split it may not.
        return {"temperature": self.temperature, "val_nll_before": nll_before, "val_nll_after": nll_after,
                "val_ece_before": before["ece"], "val_mce_before": before["mce"],
                "val_ece_after": after["ece"], "val_mce_after": after["mce"]}

    def extra(self) -> dict[str, Any]:
        """Plain values a checkpoint keeps beside the weights."""
        return {"temperature": self.temperature}
