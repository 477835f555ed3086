"""A workspace with the demo data organized (and a small finished run) for the server tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def demo(tmp_path_factory):
    from app.collectors import collect
    from app.organize.organizer import organize
    from app.workspace import Workspace

    ws = Workspace.open(tmp_path_factory.mktemp("api_ws"))
    collect("demo", ws, scale=1)
    organize(ws, "demo", "demo", workers=1)
    return ws


@pytest.fixture(scope="package")
def trained(demo):
    from app.training import train

    train(demo, "demo", "supervised", run="predictor", epochs=1, image_size=32, batch_size=16, backbone="resnet10t",
          pretrained=False)
    return demo


def demo_file(ws, suffix: str):
    return next(p for p in sorted((ws.data_dir / "raw").rglob(f"*{suffix}")))


def uploads_left(ws) -> list:
    return list((ws.data_dir / "uploads").iterdir()) if (ws.data_dir / "uploads").exists() else []


