"""The training-phase registry: ``@register_phase``, ``list_phases``, ``create_phase``.

A phase declares its facts once in a PhaseSpec; export, Grad-CAM, evaluation
and the menus read those facts instead of special-casing phases.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from core.registry import Registry


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    title: str
    input_dims: int  # 2 for images, 3 for volumes
    output: str  # "class_probabilities" or "anomaly_score"
    trainable: bool = True  # False: fitted from other runs, no gradient training
    needs_labels: bool = True
    exportable: bool = True
    gradcam_layer: str | None = None
    components: tuple[str, ...] = ()  # phases whose trained runs this one combines
    route: int | None = None  # predict's order among phases that answer alone (lower first); None: never
    searchable: bool = False  # the recipe search (app/recipes.py) can choose its settings


PHASES: Registry[type] = Registry("phase")


def register_phase(name: str, title: str, **facts: Any):
    """Class decorator: register a phase class under ``name`` with its PhaseSpec facts."""

    def wrap(cls: type) -> type:
        cls.spec = PhaseSpec(name=name, title=title, **facts)
        PHASES.register(name, cls)
        return cls

    return wrap


# The phases that come with the tool, loaded as plugins are: by name, on first use (importing
# one registers it). The registry itself depends on none of them.
BUILTIN_PHASES = ("models.supervised", "models.cube3d", "models.vae", "models.hybrid", "models.transfer")


def _load_builtin() -> None:
    import importlib

    for module in BUILTIN_PHASES:
        importlib.import_module(module)


def list_phases() -> list[PhaseSpec]:
    _load_builtin()
    return [cls.spec for _, cls in PHASES.items()]


def routable_phases() -> list[str]:
    """The phases predict may answer with alone, the one it prefers first."""
    return [spec.name for spec in sorted((s for s in list_phases() if s.route is not None), key=lambda s: s.route)]


def get_phase_class(name: str) -> type:
    _load_builtin()
    return PHASES.get(name)


def create_phase(name: str, classes: list[str], **config: Any) -> Any:
    """Build phase ``name`` for ``classes`` with config overrides (unknown keys refused)."""
    cls = get_phase_class(name)
    valid = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise TypeError(f"Phase {name!r} has no setting {', '.join(unknown)}; settings: {', '.join(sorted(valid))}")
    return cls(cls.Config(**config), classes)
