"""The one-click workflow for real: killed mid-training, resumed, then checked.

These run the actual `python main.py` in subprocesses (and a pseudo-terminal), on
the demo data, in fast mode: a few minutes in all.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.state import Kind, read_state
from app.workspace import Workspace
from tests.conftest import ROOT, planted_phi, workspace_files_without_raw

pytestmark = pytest.mark.slow
WORKFLOW = ["workflow", "--dataset", "demo", "--yes", "--fast"]


def _epochs_done(ws_root: Path) -> int:
    for meta in (ws_root / "checkpoints").glob("*supervised*/metadata.json"):
        try:
            return int(json.loads(meta.read_text()).get("epoch", 0))
        except (json.JSONDecodeError, OSError):
            return 0
    return 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory, installed) -> tuple[Workspace, str]:
    """Start the workflow with the `medanomaly` command a wheel of this checkout installed
    (tests/conftest.py), kill -9 it mid-training, run it again to the end."""
    root = tmp_path_factory.mktemp("wf")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
    first = subprocess.Popen([str(installed), *WORKFLOW, "--workspace", str(root)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 420
    while _epochs_done(root) < 2:
        assert first.poll() is None, "the workflow ended before it could be interrupted"
        assert time.time() < deadline, "training did not start in time"
        time.sleep(0.5)
    time.sleep(1.5)  # land somewhere inside the next epoch
    first.send_signal(signal.SIGKILL)
    first.wait()
    # Where a resume starts: the checkpoint's epoch. The run's metadata.json is written just
    # after last.pt, so a kill between the two leaves it one epoch behind (seen once in CI).
    from app.checkpoints import load_checkpoint

    killed_at = load_checkpoint(next((root / "checkpoints").glob("*supervised*/last.pt")))["epoch"]
    assert killed_at >= 2 and _epochs_done(root) in (killed_at, killed_at - 1)
    state = json.loads((root / "data" / "workflows" / "demo.json").read_text())
    assert state["steps"]["supervised"]["status"] == "running"
    second = subprocess.run([str(installed), *WORKFLOW, "--workspace", str(root)], capture_output=True, text=True,
                            timeout=900, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    output = second.stdout + second.stderr
    assert f"from epoch {killed_at}" in output, output[-3000:]
    return Workspace.open(root), output


def test_rerun_skips_finished_steps_and_completes(finished) -> None:
    ws, output = finished
    assert "Collect data: done before" in output and "Organize dataset: done before" in output
    state = read_state(ws.workflow_path("demo"), Kind.WORKFLOW)
    assert all(step["status"] == "done" for step in state["steps"].values())
    sup = ws.run_metadata(state["steps"]["supervised"]["run"])
    assert sup["status"] == "complete" and [h["epoch"] for h in sup["history"]] == list(range(1, 16))


def test_it_wrote_every_documented_file(finished) -> None:
    ws, _ = finished
    organized = ws.organized_path("demo")
    for name in ("metadata.json", "training_config.json", "labeled.csv", "unlabeled.csv", "splits/test.csv"):
        assert (organized / name).exists()
    for run in ws.runs():
        folder = ws.run_dir(run["run"])
        for name in ("metadata.json", "best.pt", "last.pt", "model.onnx", "evaluation/report.md"):
            assert (folder / name).exists(), f"{run['run']}/{name}"
        assert list((folder / "evaluation").glob("*.png")), "plots"
        for name in ("model.onnx", "metadata.json", "README.md"):
            assert (ws.exports_dir / run["run"] / name).exists(), f"bundle {run['run']}/{name}"


def test_predict_on_new_scans_from_the_command_line(finished) -> None:
    """The demo's raw files as 'new scans': every item routed to the hybrid bundle, results written."""
    ws, _ = finished
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--workspace", str(ws.root), "predict",
                           str(ws.raw_dir / "demo" / "demo" / "chest_xray"), "--no-overlays"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Predictions" in done.stdout
    folder = sorted(ws.predictions_dir.iterdir())[-1]
    rows = (folder / "predictions.csv").read_text().splitlines()
    assert len(rows) > 10 and all(",hybrid" in r or "-hybrid-" in r for r in rows[1:]), rows[:3]


def test_the_demo_models_are_worth_showing(finished) -> None:
    """Issue 25's bar for the first model a user sees: every class found, AUC >= 0.90, calibrated."""
    from app.verdict import model_verdict

    ws, _ = finished
    sup = next(r for r in ws.runs() if r["phase"] == "supervised")
    test = sup["evaluation"]["test"]
    assert test["roc_auc_ovr"] >= 0.90, test["roc_auc_ovr"]
    assert all(c["sensitivity"] > 0 for c in test["per_class"].values() if c["support"]), test["per_class"]
    # Fitted, or kept as trained where validation is told apart without an error (seen on an
    # AVX-512 machine: no temperature has an optimum there); the test ECE is the measure either way.
    assert "skipped" not in sup["calibration"] and test["ece"] <= 0.10, (sup["calibration"], test["ece"])
    assert sup["pretrained_weights"] is None and sup["config"]["backbone"] == "resnet10t"
    for run in ws.runs():
        assert model_verdict(run).level in ("fit", "weak"), (run["run"], model_verdict(run).text)


def test_onnx_matches_pytorch_on_test_images(finished) -> None:
    import onnxruntime as ort
    import torch

    from app.data import load_images, split_rows
    from app.training import load_run_phase

    ws, _ = finished
    sup = next(r for r in ws.runs() if r["phase"] == "supervised")
    phase = load_run_phase(ws, sup["run"])
    images = load_images(ws, split_rows(ws, "demo", "test")[:16], phase.config.image_size)
    with torch.no_grad():
        expected = phase.export_module()(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(str(ws.run_dir(sup["run"]) / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": images})[0]
    assert np.abs(got - expected).max() <= 1e-4


def test_no_planted_patient_data_anywhere_the_app_wrote(finished) -> None:
    ws, output = finished
    phi = planted_phi(ws.raw_dir)
    assert len(phi) > 50
    written = workspace_files_without_raw(ws)
    assert any(p.name == "workbench.log" for p in written) and any(p.suffix == ".onnx" for p in written)
    # Whole values only: a birth date like 19420317 may turn up by chance inside a file's
    # nanosecond modification time (the scan cache's signatures), which is no leak.
    pattern = re.compile(b"(?<![0-9A-Za-z])(?:" + b"|".join(re.escape(v.encode()) for v in sorted(phi)) + b")(?![0-9A-Za-z])")
    for path in written:
        found = pattern.search(path.read_bytes())
        assert found is None, f"{path} holds {found.group(0)!r}"
    assert not [v for v in phi if v in output], "nor on screen"


def _still_running(pid: int) -> str:
    """What the process ``pid`` and its children are doing (state, signals, command), for a failure message."""
    done = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,wchan:20,cmd", "--pid", str(pid), "--ppid", str(pid)],
                          capture_output=True, text=True)
    status = Path(f"/proc/{pid}/status")
    signals = [line for line in status.read_text().splitlines() if line.startswith(("State", "Sig"))] \
        if status.exists() else ["(gone)"]
    return done.stdout + "\n".join(signals)


def test_the_menu_runs_the_workflow_stopped_by_ctrl_c_and_resumed_at_80_columns(tmp_path) -> None:
    """Real keystrokes in an 80x24 pseudo-terminal: main menu -> One-click workflow -> demo;
    one Ctrl-C mid-training stops after that epoch; the menu then resumes it to the end."""
    import pexpect

    env = {**os.environ, "TERM": "xterm", "PYTHONUNBUFFERED": "1"}
    child = pexpect.spawn(sys.executable, [str(ROOT / "main.py"), "--workspace", str(tmp_path)],
                          env=env, encoding="utf-8", dimensions=(24, 80), timeout=60)

    def start_workflow(then: str) -> None:
        child.expect("What would you like to do")
        child.send("one-click")
        child.expect("One-click workflow")
        child.send("\r")
        child.expect("Run the whole workflow on")
        child.send("\r")  # demo, the first choice
        child.expect("Fast mode")
        child.send("\r")  # yes (the default)
        child.expect(then)
        child.send("\r")  # Start; or Resume, the first choice

    try:
        start_workflow("Start")
        child.expect("Collect data", timeout=60)  # the step rules (rich colours the numbers)
        child.expect("Train supervised classifier", timeout=300)
        child.expect("Epochs", timeout=300)
        time.sleep(1.0)
        child.sendintr()  # the first Ctrl-C: finish this epoch, then stop
        child.expect("Stopping after this epoch", timeout=30)
        child.expect("Stopped (in|after)", timeout=300)
        stopped = _epochs_done(tmp_path)
        start_workflow("How to go on")
        child.expect("Export ONNX bundles", timeout=600)
        child.expect("What would you like to do", timeout=300)
        child.send("quit")
        child.expect("Quit")
        child.send("\r")
        try:
            child.expect(pexpect.EOF, timeout=60)
        except pexpect.TIMEOUT:
            pytest.fail(f"the menu did not exit after Quit:\n{_still_running(child.pid)}")
    finally:
        child.close(force=True)
    ws = Workspace.open(tmp_path)
    state = read_state(ws.workflow_path("demo"), Kind.WORKFLOW)
    assert all(step["status"] == "done" for step in state["steps"].values())
    assert 1 <= stopped < 15 and state["steps"]["supervised"]["resumed_from"] == stopped
    sup = ws.run_metadata(state["steps"]["supervised"]["run"])
    assert [h["epoch"] for h in sup["history"]] == list(range(1, 16)), "no epoch lost or done twice"
    assert len(list(tmp_path.glob("checkpoints/*/model.onnx"))) == 3
    assert len(list(tmp_path.glob("exports/*/metadata.json"))) == 3
    assert len(ws.runs()) == 3
