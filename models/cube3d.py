"""A 3D CNN on cubes (48^3 by default) or whole small volumes: MONAI's 3D ResNet.

Small findings in CTA/MRA/MRI volumes (aneurysms, nodules, masses) are classified
from cubes around them (app/cubes.py); MedMNIST 3D files (28^3) train it as they are
or resized. Same loop, metrics and reports as the 2D classifiers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from models.registry import register_phase
from models.supervised import ClassifierPhase

DEPTHS = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2]}


@dataclass
class Cube3DConfig:
    backbone: str = "resnet10"  # resnet10 | resnet18 (MONAI, 3D)
    width: int = 16  # channels of the first stage (doubled at each of the four)
    image_size: int = 48  # cube side; MedMNIST 3D files are resized to it
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    class_weights: bool = True
    augment: str = "standard"  # none | standard (flips, shifts); strong is 2D only
    ema: float = 0.0  # decay of the weight average used for validation and kept (e.g. 0.99); 0: off
    seed: int = 0


def create_resnet3d(backbone: str, width: int, num_classes: int) -> torch.nn.Module:
    from monai.networks.nets import ResNet

    if backbone not in DEPTHS:
        raise ValueError(f"unknown 3D backbone {backbone!r}; choose one of {', '.join(DEPTHS)}")
    return ResNet(block="basic", layers=DEPTHS[backbone], block_inplanes=[width, 2 * width, 4 * width, 8 * width],
                  spatial_dims=3, n_input_channels=1, conv1_t_size=3, conv1_t_stride=2, no_max_pool=True,
                  num_classes=num_classes)


@register_phase(
    "cube3d", "3D CNN on cubes or small volumes (MONAI 3D ResNet)",
    input_dims=3, output="class_probabilities",
)
class Cube3DPhase(ClassifierPhase):
    Config = Cube3DConfig

    def __init__(self, config: Cube3DConfig, classes: list[str]) -> None:
        if config.augment == "strong":
            raise ValueError("strong augmentation is 2D only; use standard or none for cube3d")
        self.config, self.classes = config, list(classes)
        self.model = create_resnet3d(config.backbone, config.width, len(classes))

    def model_args(self) -> dict[str, Any]:
        return {"backbone": self.config.backbone, "width": self.config.width, "num_classes": len(self.classes)}

    @classmethod
    def rebuild(cls, model_args: dict[str, Any]) -> torch.nn.Module:
        return create_resnet3d(model_args["backbone"], model_args["width"], model_args["num_classes"])

    def select_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Labeled 3D items: volumes, DICOM series and 3D .npz images (2D files have no depth)."""
        return [r for r in super().select_rows(rows) if r["kind"] in ("volume", "dicom_series", "npz")]

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)
