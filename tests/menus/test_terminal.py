"""First-hour walks in a real pseudo-terminal at 80x24, read back as the user sees them (pyte).

The long walk (the workflow stopped by Ctrl-C and resumed) is tests/e2e; these take seconds.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from app.organize.organizer import organize
from app.workspace import Workspace
from tests.app.organize.layouts import dicom, png
from tests.menus.terminal import DOWN, ENTER, ESC, Terminal

pytest.importorskip("pyte")


@pytest.fixture
def terminal(tmp_path: Path):
    opened: list[Terminal] = []

    def start(workspace: Path) -> Terminal:
        opened.append(Terminal(workspace))
        opened[-1].wait("What would you like to do")
        return opened[-1]

    yield start
    for t in opened:
        t.close()


def _pick(t: Terminal, words: str, shown: str) -> None:
    """Type to filter a menu, wait for the entry, choose it."""
    t.send(words)
    t.wait(shown)
    t.send(ENTER)


def _quit(t: Terminal) -> None:
    _pick(t, "quit", "» Quit")
    t.wait("Quit MedAnomaly Workbench|Goodbye")
    if "Goodbye" not in t.display():
        t.send(ENTER)
    t.child.expect(__import__("pexpect").EOF, timeout=30)


def test_a_new_workspace_shows_its_header_and_the_whole_menu_on_one_80x24_screen(terminal, tmp_path: Path) -> None:
    t = terminal(tmp_path / "ws")
    t.wait("Quit")
    screen = t.display()
    assert "MedAnomaly Workbench" in screen, "the header is still on screen:\n" + screen
    assert "Datasets: none yet" in screen and "Training runs: none yet" in screen
    _quit(t)


def test_help_wraps_inside_its_frame_at_80_columns(terminal, tmp_path: Path) -> None:
    t = terminal(tmp_path / "ws")
    _pick(t, "help", "» Help")
    t.wait("docs/user_guide.md")
    lines = t.scrollback().splitlines()
    top = next(k for k, line in enumerate(lines) if "─ Help ─" in line)
    bottom = next(k for k in range(top, len(lines)) if lines[k].startswith("╰"))
    frame = lines[top : bottom + 1]
    assert all(len(line) == 80 for line in frame), "the frame spans the terminal, nothing past it"
    assert all(line.startswith("│") and line.endswith("│") for line in frame[1:-1]), "\n".join(frame)
    text = " ".join(line.strip("│ ") for line in frame[1:-1])
    for sentence in ("run it again after an interruption and it resumes.", "The user guide is docs/user_guide.md."):
        assert sentence in re.sub(r"\s+", " ", text), text
    t.wait("What would you like to do")
    _quit(t)


def test_train_on_an_unlabeled_dataset_shows_the_classifiers_disabled_with_the_reason(terminal, tmp_path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    for k in range(6):
        png(tmp_path / "scans" / f"scan_{k}.png", value=40 + 10 * k)
    organize(ws, tmp_path / "scans", "scans", workers=1)
    t = terminal(ws.root)
    _pick(t, "train", "» Train")
    t.wait("Dataset")
    t.send(ENTER)  # the only dataset
    t.wait(r"\? Phase")
    screen = t.display()
    supervised = next(line for line in screen.splitlines() if "Supervised classifier" in line and "-" in line[:6])
    assert "see above" in supervised, screen
    said = re.sub(r"\s+", " ", t.scrollback())
    assert "Supervised classifier needs labeled images; this dataset has none. Give it labels" in said, said
    assert all(len(line) <= 80 for line in t.scrollback().splitlines())
    t.send(ESC)
    t.wait("What would you like to do")
    _quit(t)
    assert not list((ws.root / "checkpoints").glob("*/metadata.json")), "no run was started"


def test_the_review_screen_corrects_one_series_of_a_folder_holding_two(terminal, tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    from app.organize.rows import read_rows

    export = tmp_path / "export"
    for patient in ("P1", "P2"):  # two series, their files side by side in one folder
        series = generate_uid()
        for k in range(3):
            dicom(export / f"{patient}_{k}.dcm", modality="CT", patient=patient, series=series, position=float(k))
    ws = Workspace.open(tmp_path / "ws")
    organize(ws, export, "pacs", workers=1)
    t = terminal(ws.root)
    _pick(t, "organize", "» Organize")
    _pick(t, "review", "» Review")
    t.wait("Review which dataset")
    t.send(ENTER)
    t.wait("Correct which folder")
    assert len(set(re.findall(r"\(series (S[0-9a-f]{12})\)", t.display()))) == 2, t.display()
    assert all(len(line) <= 80 for line in t.scrollback().splitlines())
    t.send(DOWN)
    t.send(ENTER)  # the second series
    _pick(t, "label", "» label")
    t.wait("New label")
    t.send("hemorrhage" + ENTER)
    t.wait("Saved")
    t.send(ESC)
    t.wait("What would you like to do")
    _quit(t)
    out = ws.organized_path("pacs")
    rows = read_rows(out / "labeled.csv") + read_rows(out / "unlabeled.csv")
    assert sorted((r["label"], r["label_rule"]) for r in rows) == [("", ""), ("hemorrhage", "user_correction")]


def test_a_workflow_started_with_other_options_is_restarted_from_the_menu(terminal, tmp_path: Path) -> None:
    from app.state import Kind, read_state
    from app.workflow import WorkflowOptions, run_workflow

    ws = Workspace.open(tmp_path / "ws")
    for k in range(4):
        png(tmp_path / "scans" / f"scan_{k}.png", value=40 + 10 * k)
    try:  # a mistyped folder: the collect step fails and the workflow stays unfinished
        run_workflow(ws, WorkflowOptions(dataset="scans", source=str(tmp_path / "scnas"), fast=True))
    except Exception:
        pass
    assert read_state(ws.workflow_path("scans"), Kind.WORKFLOW)["steps"]["collect"]["status"] == "failed"
    t = terminal(ws.root)
    _pick(t, "one-click", "» One-click")
    t.wait("Run the whole workflow on")
    _pick(t, "local", "» A local folder")
    t.wait("Folder with the images")
    t.send(str(tmp_path / "scans") + ENTER)
    t.wait("Name for this dataset")
    t.send("scans" + ENTER)
    t.wait("Fast mode")
    t.send(ENTER)
    t.wait("How to go on")
    assert "started with other options" in t.scrollback()
    t.send(ENTER)  # Restart from the beginning
    t.wait("Organize", timeout=120)
    # The workflow ends by itself soon after (these scans have no labels to train a
    # classifier on); a Ctrl-C sent now may land in it or, a moment later, in the main
    # menu, which then asks whether to quit: either is fine, the menu must come back.
    t.child.sendintr()
    t.wait("What would you like to do|Quit MedAnomaly Workbench", timeout=120)
    time.sleep(1)
    t._read()
    if "Quit MedAnomaly Workbench" in t.display().strip().splitlines()[-1]:
        t.send("n")
        t.wait("What would you like to do")
    _quit(t)
    state = read_state(ws.workflow_path("scans"), Kind.WORKFLOW)
    assert state["steps"]["collect"]["status"] == "done", "restarted with the right folder"
    assert state["options"]["source"] != str(tmp_path / "scnas")
