"""The phase contract kept honest: a tiny phase defined here, with nothing but what models/base.py
asks for, is offered by the Train menu, trained from the command line, evaluated, exported and
used by predict, without editing any of them (docs/architecture.md, "Adding a phase")."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import main
from models.base import Phase, Question, setting
from models.registry import PHASES, register_phase


@dataclass
class TinyConfig:
    image_size: int = 16
    epochs: int = 2
    batch_size: int = 8
    lr: float = 1e-2
    weight_decay: float = 0.0
    clahe: bool = False
    smoothing: float = setting(0.0, help="tiny: label smoothing of the loss")
    seed: int = 0


class TinyPhase(Phase):
    """A linear classifier on 16 x 16 images: the smallest phase that is a whole phase."""

    Config = TinyConfig

    def __init__(self, config: TinyConfig, classes: list[str]) -> None:
        self.config, self.classes = config, list(classes)
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(config.image_size**2, len(classes)))

    def model_args(self) -> dict[str, Any]:
        return {"image_size": self.config.image_size, "num_classes": len(self.classes)}

    def select_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r["labeled"] and r["label"] in self.classes]

    def targets(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        return torch.tensor([self.classes.index(r["label"]) for r in rows])

    def prepare(self, targets: torch.Tensor) -> None:
        pass

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, targets = batch
        return {"loss": F.cross_entropy(self.model(images), targets, label_smoothing=self.config.smoothing)}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(images), dim=1)

    def export_module(self) -> nn.Module:
        return nn.Sequential(self.model, nn.Softmax(dim=1))

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)


@pytest.fixture
def tiny():
    """The tiny phase registered for one test, and gone after it."""
    register_phase("tiny", "Tiny linear classifier (a test's)", input_dims=2, output="class_probabilities",
                   route=9)(TinyPhase)
    yield TinyPhase
    PHASES.unregister("tiny")


def test_a_phase_defined_in_a_test_is_offered_trained_evaluated_exported_and_predicts(
        tiny, ws, monkeypatch, capsys) -> None:
    from app.collectors import collect
    from app.organize.organizer import organize
    from menus import screens
    from menus.settings import Settings

    collect("demo", ws, scale=1)  # a workspace of its own: the phase is gone after this test
    organize(ws, "demo", "demo", workers=1)

    offered = {}

    def answer(message, choices, **kwargs):
        offered[message] = {c.value: c.disabled for c in choices}
        return "demo" if message == "Dataset" else None

    monkeypatch.setattr(screens, "ask_choice", answer)
    screens.train_menu(screens.Session(ws, Settings.load(ws)))
    assert offered["Phase"]["tiny"] is None, "the menu offers the registered phase"

    workspace = ["--workspace", str(ws.root)]
    assert main.main(["train", "--dataset", "demo", "--phase", "tiny", "--run", "tiny-run", *workspace]) == 0
    meta = ws.run_metadata("tiny-run")
    assert meta["status"] == "complete" and len(meta["history"]) == 2 and meta["phase"] == "tiny"
    assert main.main(["evaluate", "tiny-run", *workspace]) == 0
    assert main.main(["export", "tiny-run", *workspace]) == 0
    assert "Exported bundle" in capsys.readouterr().out
    from app.predict import candidate_runs, predict

    assert candidate_runs(ws)[-1] == "tiny-run", "predict may route to it, after the built-in phases"
    image = next(p for p in sorted((ws.data_dir / "raw").rglob("*")) if p.suffix.lower() in (".png", ".dcm"))
    result = predict(ws, image, run="tiny-run")
    [answer] = result.predictions
    assert answer.run == "tiny-run" and answer.engine == "onnxruntime", "answered by its verified bundle"
    assert answer.predicted_class in ("normal", *meta["classes"]) and abs(sum(answer.probabilities.values()) - 1) < 1e-4


def test_a_new_phases_settings_are_train_flags_and_menu_questions(tiny, ws, monkeypatch, capsys) -> None:
    """Its Config's setting() fields (and the shared ones it has) become `train --flags` and the
    Train menu's questions, with no edit to either."""
    from io import StringIO

    from rich.console import Console

    from app.collectors import collect
    from app.organize.organizer import organize
    from menus import console as console_module
    from menus import screens
    from menus.cli import build_parser
    from menus.settings import Settings

    args = build_parser(["train"]).parse_args(["train", "--dataset", "d", "--phase", "tiny", "--smoothing", "0.2"])
    assert args.smoothing == 0.2
    collect("demo", ws, scale=1)
    organize(ws, "demo", "demo", workers=1)
    asked = []
    answers = {"side in pixels": 16, "epochs to plan": 1, "images per step": 8, "learning rate": "0.02",
               "smoothing": "0.1"}  # a question (the setting's help) -> the answer

    def reply(kind):
        def answer(message, *args, **kwargs):
            asked.append(message)
            if kind == "choice":
                return {"Dataset": "demo", "Phase": "tiny"}.get(message)
            if kind == "confirm":
                return False
            return answers[next(k for k in answers if k in message.lower())]
        return answer

    for name, kind in (("ask_choice", "choice"), ("ask_confirm", "confirm"), ("ask_int", "int"), ("ask_text", "text")):
        monkeypatch.setattr(screens, name, reply(kind))
    screen = Console(file=StringIO(), width=100)
    monkeypatch.setattr(screens, "console", screen)
    monkeypatch.setattr(console_module, "console", screen)
    screens.train_menu(screens.Session(ws, Settings.load(ws)))
    assert any("Tiny: label smoothing" in q for q in asked), asked
    [run] = [m for m in ws.runs() if m["phase"] == "tiny"]
    assert run["config"]["smoothing"] == 0.1 and run["config"]["epochs"] == 1 and run["config"]["lr"] == 0.02


@dataclass
class OwnSizeConfig(TinyConfig):
    OWN_DEFAULTS: ClassVar[tuple[str, ...]] = ("image_size",)


class AskingPhase(TinyPhase):
    """The tiny phase with Train-menu questions of its own, and its own image size."""

    Config = OwnSizeConfig
    questions = (Question("epochs", "How many epochs?", "int", default=3, fast=1),
                 Question("lr", "Learn fast?", "confirm", default=False, sets=(("lr", 0.05), ("weight_decay", 0.01))),
                 Question("smoothing", "Never asked here", "text", when="graded"))
    menu_settings = {"batch_size": 4}


def test_a_phases_own_questions_are_asked_and_its_settings_are_kept_by_layer_with_their_source(
        ws, monkeypatch) -> None:
    """Phase.questions drive the Train menu (in order; a preset sets several settings; one whose
    dataset fact does not hold is skipped); the run records its settings by layer and where each
    came from: the menu's answers are the user's, the phase's own image size wins over the
    dataset's, the rest are the Config's defaults."""
    from io import StringIO

    from rich.console import Console

    from app.collectors import collect
    from app.organize.organizer import organize
    from menus import console as console_module
    from menus import screens
    from menus.settings import Settings

    register_phase("asking", "Asking linear classifier (a test's)", input_dims=2, output="class_probabilities",
                   route=9)(AskingPhase)
    try:
        collect("demo", ws, scale=1)
        organize(ws, "demo", "demo", workers=1)
        asked = []

        def reply(kind):
            def answer(message, *args, **kwargs):
                asked.append((kind, message, kwargs.get("default")))
                return {"choice": {"Dataset": "demo", "Phase": "asking"}.get(message), "confirm": True,
                        "int": 2, "text": "0.5"}[kind]
            return answer

        for name, kind in (("ask_choice", "choice"), ("ask_confirm", "confirm"), ("ask_int", "int"),
                           ("ask_text", "text")):
            monkeypatch.setattr(screens, name, reply(kind))
        screen = Console(file=StringIO(), width=100)
        monkeypatch.setattr(screens, "console", screen)
        monkeypatch.setattr(console_module, "console", screen)
        screens.train_menu(screens.Session(ws, Settings.load(ws)))
        assert [q[1] for q in asked] == ["Dataset", "Phase", "How many epochs?", "Learn fast?"]
        fast = Settings.load(ws).fast
        assert asked[2][2] == (1 if fast else 3), "the question's own default is offered (fast mode: its fast one)"
        [run] = [m for m in ws.runs() if m["phase"] == "asking"]
        assert run["config"]["epochs"] == 2 and run["config"]["lr"] == 0.05 and run["config"]["weight_decay"] == 0.01
        assert run["config"]["batch_size"] == 4 and run["config"]["image_size"] == 16
        settings, sources = run["settings"], run["setting_sources"]
        assert set(settings) == {"model", "data", "training", "post_hoc"}
        assert settings["data"]["image_size"] == 16 and settings["training"]["lr"] == 0.05
        assert sources["image_size"] == "phase", "its own default wins over the dataset's 128"
        assert sources["epochs"] == sources["lr"] == sources["batch_size"] == "user"
        assert sources["clahe"] == "default" and sources["smoothing"] == "default"
    finally:
        PHASES.unregister("asking")
