"""Transfer learning in two stages, then temperature scaling.

Stage 1 trains the new head on a frozen ResNet; stage 2 also fine-tunes the last
block at a lower learning rate. After training, one temperature (Guo et al., 2017) and
a bias per class are fitted on the validation logits so that confidences match
accuracies (ClassifierPhase.finish, shared by every classifier phase).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from models.base import setting
from models.configs import AUGMENT, CLAHE, EPOCHS, ORDINAL, REGULARIZE, Question, image_size_question
from models.registry import register_phase
from models.supervised import (
    ClassifierPhase, check_calibration, check_channels, check_ordinal, create_backbone, settle_pretrained,
)


@dataclass(frozen=True)
class TransferConfig:
    backbone: str = "resnet18"  # or resnet50, or any timm ResNet
    pretrained: bool | str = True  # True: from the local cache; or a weights file path
    image_size: int = 128
    epochs: int = 20
    frozen_epochs: int = setting(5, layer="training",
                                 help="transfer: epochs with the body frozen (stage 1: only the new head learns)")
    batch_size: int = 32
    lr: float = 3e-3  # the head
    finetune_lr: float = 3e-4  # the last block, in stage 2
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0  # smoothing would fight the temperature calibration
    class_weights: bool = True
    clahe: bool = False
    augment: str = "standard"  # none | standard | strong
    flips: str = "auto"  # auto | on | off: left-right flips in the augmentation (app/laterality.py)
    ema: float = 0.0  # decay of the weight average used for validation and kept (e.g. 0.99); 0: off
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha) blend of image pairs (e.g. 0.2; app/training.py mix_batch); 0: off
    calibration: str = "temperature+bias"  # temperature+bias | temperature | none (ClassifierPhase.finish)
    channels: int = 1  # 1: grey; 3: RGB (colour data: ImageNet weights are used as they are)
    ordinal: float = 0.0  # ordered classes: weight of the squared-EMD loss term (models/supervised.py squared_emd)
    multilabel: bool = False  # several findings per image: one sigmoid probability per class (the dataset says)
    seed: int = 0


@register_phase(
    "transfer", "Transfer learning (ResNet, two stages, calibrated)",
    input_dims=2, output="class_probabilities", gradcam_layer="layer4", route=2,
)
class TransferPhase(ClassifierPhase):
    Config = TransferConfig
    questions = (Question("backbone", "Backbone", "choice",
                          choices=(("ResNet-18", "resnet18"), ("ResNet-50", "resnet50"))),
                 image_size_question(), EPOCHS, AUGMENT, CLAHE, REGULARIZE, ORDINAL)
    menu_settings = {"batch_size": 16}
    changes_between_epochs = True  # the frozen first stage (start_epoch)

    def __init__(self, config: TransferConfig, classes: list[str]) -> None:
        check_calibration(config.calibration)
        check_channels(config.channels)
        check_ordinal(config)
        self.config, self.classes = config, list(classes)
        self.model = create_backbone(config.backbone, len(classes), pretrained=config.pretrained,
                                     in_chans=config.channels)
        self.config = settle_pretrained(config, self.model)

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
