"""A 3D CNN on cubes (48^3 by default) or whole small volumes: MONAI's 3D ResNet.

Small findings in CTA/MRA/MRI volumes (aneurysms, nodules, masses) are classified
from cubes around them (app/cubes.py); MedMNIST 3D files (28^3) train it as they are
or resized. Same loop, metrics and reports as the 2D classifiers.

With ``positions`` the classifier also sees each cube's anatomical position (one of
the 13 of app/cubes.py, or none). It rides along as a second, constant input channel
(position index / 13; 0: none), so flips and shifts leave it intact and the model
keeps one input: the network reads it back as a one-hot beside its pooled features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from models.base import setting
from models.configs import EPOCHS, REGULARIZE, Question
from models.registry import register_phase
from models.supervised import ClassifierPhase, check_calibration

DEPTHS = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2]}


@dataclass(frozen=True)
class Cube3DConfig:
    OWN_DEFAULTS: ClassVar[tuple[str, ...]] = ("image_size",)  # wins over the dataset's (models/configs.py)
    backbone: str = "resnet10"  # resnet10 | resnet18 (MONAI, 3D)
    width: int = setting(16, help="cube3d: channels of the first stage (default 16; doubled at each of the four)")
    image_size: int = 48  # cube side; MedMNIST 3D files are resized to it
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    class_weights: bool = True
    # none | standard (flips, shifts) | strong (+ 3D rotation, zoom, gamma). Strong by default: on
    # AdrenalMNIST3D (benchmarks/medmnist.py, 10 min) test AUC 0.888 and 0.893 against 0.857 and 0.842.
    augment: str = "strong"
    flips: str = "auto"  # auto | on | off: left-right flips in the augmentation (app/laterality.py)
    ema: float = 0.0  # decay of the weight average used for validation and kept (e.g. 0.99); 0: off
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha) blend of image pairs (e.g. 0.2; app/training.py mix_batch); 0: off
    positions: bool = setting(False, help="cube3d: give the model each cube's anatomical position (cube datasets "
                                          "with positions)")
    calibration: str = "temperature+bias"  # temperature+bias | temperature | none (ClassifierPhase.finish)
    seed: int = 0


N_POSITIONS = 13  # app/cubes.py POSITIONS


def create_resnet3d(backbone: str, width: int, num_classes: int, positions: bool = False) -> torch.nn.Module:
    from monai.networks.nets import ResNet

    if backbone not in DEPTHS:
        raise ValueError(f"unknown 3D backbone {backbone!r}; choose one of {', '.join(DEPTHS)}")
    body = ResNet(block="basic", layers=DEPTHS[backbone], block_inplanes=[width, 2 * width, 4 * width, 8 * width],
                  spatial_dims=3, n_input_channels=1, conv1_t_size=3, conv1_t_stride=2, no_max_pool=True,
                  num_classes=num_classes, feed_forward=not positions)
    return PositionAware(body, 8 * width, num_classes) if positions else body


class PositionAware(nn.Module):
    """A 3D ResNet body whose classifier also sees the cube's position.

    Input (N, 2, D, H, W): the cube, and a constant channel holding position index / 13
    (0: no position). The head reads pooled features + the position one-hot.
    """

    def __init__(self, body: nn.Module, features: int, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.fc = nn.Linear(features + N_POSITIONS + 1, num_classes)
        self.register_buffer("codes", torch.arange(N_POSITIONS + 1, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = torch.round(x[:, 1].flatten(1).mean(dim=1) * N_POSITIONS)
        one_hot = (code[:, None] == self.codes[None, :]).to(x.dtype)
        return self.fc(torch.cat([self.body(x[:, :1]), one_hot], dim=1))


@register_phase(
    "cube3d", "3D CNN on cubes or small volumes (MONAI 3D ResNet)",
    input_dims=3, output="class_probabilities",
)
class Cube3DPhase(ClassifierPhase):
    Config = Cube3DConfig
    questions = (Question("image_size", "Cube side (voxels; 48 for extracted cubes, 28 for MedMNIST 3D):", "int",
                          default=48, low=8, high=256),
                 EPOCHS,
                 Question("positions", "Give the model each cube's anatomical position (cube datasets with positions)?",
                          "confirm", default=False),
                 REGULARIZE)

    def __init__(self, config: Cube3DConfig, classes: list[str]) -> None:
        check_calibration(config.calibration)
        self.config, self.classes = config, list(classes)
        self.model = create_resnet3d(config.backbone, config.width, len(classes), config.positions)

    def model_args(self) -> dict[str, Any]:
        return {"backbone": self.config.backbone, "width": self.config.width, "num_classes": len(self.classes),
                "positions": self.config.positions}

    @classmethod
    def rebuild(cls, model_args: dict[str, Any]) -> torch.nn.Module:
        return create_resnet3d(model_args["backbone"], model_args["width"], model_args["num_classes"],
                               model_args.get("positions", False))

    def check_rows(self, rows: list[dict[str, Any]], position_codes: Callable[[list[Any]], np.ndarray]) -> None:
        """With positions: refuse training rows whose position alone tells the label
        (``position_codes(rows)``: each row's position index, 0 for none).

        Cubes cut around findings carry a position and sampled negatives carry none; a
        model given positions would learn "has a position = finding" and nothing of the
        image. Normal places with positions (label 0 in the point CSV) avoid that.
        """
        if not self.config.positions:
            return
        codes = position_codes(rows)
        has = codes > 0
        findings = np.array([r["label"] != "normal" for r in rows])
        if not has.any():
            raise ValueError("this dataset has no anatomical positions: train without positions.")
        if findings.any() and (~findings).any() and (has == findings).all():
            raise ValueError(
                "only the findings carry an anatomical position, so the position alone would give the answer "
                "away. Add normal places with their positions (label 0 in the point CSV) or train without positions."
            )

    def select_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Labeled 3D items: volumes, DICOM series and 3D .npz images (2D files have no depth)."""
        return [r for r in super().select_rows(rows) if r["kind"] in ("volume", "dicom_series", "npz")]

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
