"""Phase settings by layer, and where each value comes from (models/configs.py)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from models import get_phase_class, list_phases
from models.configs import LAYERS, PLAIN_LAYERS, SHARED_SETTINGS, layered, resolve, setting


@dataclasses.dataclass(frozen=True)
class Made:
    OWN_DEFAULTS: ClassVar[tuple[str, ...]] = ("image_size",)
    image_size: int = 48
    channels: int = 1
    labeled_fraction: float = 1.0
    lr: float = 1e-3
    score: str = setting("mse", layer="post_hoc", help="a score")


def test_the_users_value_wins_then_the_phases_own_then_the_datasets_then_the_default() -> None:
    dataset = {"image_size": 224, "channels": 3, "labeled_fraction": 0.5, "lr": 9.0}
    plain = resolve(Made, dataset, {})
    assert plain.values == {"image_size": 48, "channels": 3, "labeled_fraction": 0.5, "lr": 1e-3, "score": "mse"}
    assert plain.sources == {"image_size": "phase", "channels": "dataset", "labeled_fraction": "dataset",
                             "lr": "default", "score": "default"}, "lr is not dataset-wide: the dataset cannot set it"
    asked = resolve(Made, dataset, {"image_size": 32, "channels": 1, "score": "ssim"})
    assert asked.values["image_size"] == 32 and asked.values["channels"] == 1 and asked.values["score"] == "ssim"
    assert asked.sources["image_size"] == asked.sources["channels"] == asked.sources["score"] == "user"
    assert resolve(Made, {}, {"typo": 1}).values["typo"] == 1, "passed on, for create_phase to refuse by name"


def test_layered_groups_every_field_once() -> None:
    sections = layered(Made())
    assert list(sections) == list(LAYERS)
    assert sections["data"] == {"image_size": 48, "channels": 1, "labeled_fraction": 1.0}
    assert sections["training"] == {"lr": 1e-3} and sections["post_hoc"] == {"score": "mse"}
    with pytest.raises(ValueError, match="layer"):
        setting(1, help="x", layer="optimizer")


@pytest.mark.parametrize("phase", [spec.name for spec in list_phases()])
def test_every_setting_of_a_built_in_phase_says_its_layer(phase: str) -> None:
    """No built-in field falls into "model" by default: each names its layer (its setting(), or
    the shared tables), so the report and the card group it where it belongs."""
    config = get_phase_class(phase).Config
    silent = [f.name for f in dataclasses.fields(config)
              if not (f.metadata.get("layer") or f.name in SHARED_SETTINGS or f.name in PLAIN_LAYERS)]
    assert silent == [], f"{phase}: give these a layer: {silent}"
    sections = layered(config())
    assert sum(len(v) for v in sections.values()) == len(dataclasses.fields(config))


def test_cube3d_keeps_its_own_cube_side_and_the_2d_phases_take_the_datasets_image_size() -> None:
    """The 2D phases share the dataset's size: the hybrid combines a classifier and a VAE
    trained at one size."""
    dataset = {"image_size": 224, "channels": 1, "labeled_fraction": 1.0, "class_weights": True}
    assert resolve(get_phase_class("vae").Config, dataset, {}).values["image_size"] == 224
    assert resolve(get_phase_class("cube3d").Config, dataset, {}).values["image_size"] == 48
    assert resolve(get_phase_class("supervised").Config, dataset, {}).values["image_size"] == 224


def test_train_help_lists_the_settings_under_their_layers() -> None:
    from menus.cli import build_parser

    parser = build_parser(["train"])
    train = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" train"))
    text = train.format_help()
    text = text[text.index("model settings:"):]  # past the usage line, which names every flag too
    headings = [text.index(f"{layer} settings:") for layer in ("model", "data", "training", "post-hoc")]
    assert headings == sorted(headings)
    assert headings[0] < text.index("--backbone") < headings[1] < text.index("--image-size") < headings[2]
    assert headings[2] < text.index("--lr ") < headings[3] < text.index("--calibration")


def test_a_phase_without_questions_of_its_own_gets_one_per_setting_by_its_type() -> None:
    from models.configs import generated_questions

    asked = {q.setting: q for q in generated_questions("vae", get_phase_class("vae").Config)}
    assert "seed" not in asked and "pretrained" not in asked
    assert asked["area"].kind == "float" and asked["latent_dim"].kind == "int" and asked["views"].kind == "confirm"
    assert asked["score"].kind == "choice" and ("ssim", "ssim") in asked["score"].choices
    assert asked["latent_dim"].text.startswith("VAE latent size") and asked["latent_dim"].offered(
        get_phase_class("vae").Config, fast=False) == 16
