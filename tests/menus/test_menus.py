"""Menus driven through real questionary prompts fed by a pipe (no terminal needed)."""

from io import StringIO
from pathlib import Path

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from menus import collect_menu, main_menu, organize_menu, screens
from menus.settings import Settings
from models.configs import SMALL_DATA
from tests.conftest import placed

DOWN, ENTER, BACKSPACE, CTRL_C = "\x1b[B", "\r", "\x7f", "\x03"


@pytest.fixture
def session(ws, monkeypatch):
    screen = Console(file=StringIO(), width=120)
    for module in (main_menu, screens, organize_menu, collect_menu):
        monkeypatch.setattr(module, "console", screen)
    s = screens.Session(ws, Settings.load(ws))
    s.screen = screen
    return s


def drive(keys: list[str], action, *args):
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        for key in keys:
            pipe.send_text(key)
        return action(*args)


def test_steps_without_their_inputs_are_disabled_with_the_reason(session) -> None:
    entries = {title.split(" (")[0]: reason for title, _, reason in main_menu._entries(session)}
    assert entries["Train"] == "Organize a dataset first"
    assert entries["Evaluate & explain"] == "Train a model first"
    assert entries["Export & predict"] == "Train a model first"
    assert entries["Collect data"] is None and entries["One-click workflow"] is None


def test_the_main_menu_shows_the_workspace_and_quits(session) -> None:
    drive(["quit", ENTER], main_menu.main_menu, session)
    text = session.screen.file.getvalue()
    assert "MedAnomaly Workbench" in text and "Datasets" in text and "Goodbye" in text


def test_ctrl_c_in_a_submenu_goes_back(session) -> None:
    assert drive([CTRL_C], screens.workflow_menu, session) is None
    assert not session.ws.workflow_path("demo").exists(), "nothing ran"


def test_an_error_in_a_step_is_shown_and_the_menu_comes_back(session, tmp_path) -> None:
    # Organize -> Another folder... -> a folder with no image -> error -> back at the menu -> Quit.
    (tmp_path / "nothing").mkdir()
    keys = ["organize", ENTER, "a collected", ENTER, "another", ENTER, str(tmp_path / "nothing"), ENTER,
            BACKSPACE * 10, "x", ENTER, "quit", ENTER]
    drive(keys, main_menu.main_menu, session)
    text = session.screen.file.getvalue()
    assert "Error:" in text and "No readable image" in text and "Goodbye" in text


def test_settings_are_changed_and_saved(session) -> None:
    drive([ENTER, BACKSPACE, "7", ENTER], screens.settings_menu, session)
    assert Settings.load(session.ws).seed == 7


def test_the_privacy_audit_runs_from_settings(session, tmp_path) -> None:
    folder = tmp_path / "to-share"
    folder.mkdir()
    (folder / "Doe^Jane_19600101.txt").write_text("nothing else")
    drive(["privacy", ENTER, str(folder), ENTER], screens.settings_menu, session)
    text = session.screen.file.getvalue()
    assert "person name" in text and "possible identifier(s)" in text and "Doe^Jane" not in text


def test_settings_back_up_and_restore_the_workspace_after_a_confirmation(session) -> None:
    (session.ws.data_dir / "workflows").mkdir()
    (session.ws.data_dir / "workflows" / "demo.json").write_text("{}")
    drive(["Back up", ENTER, ENTER], screens.settings_menu, session)
    assert "Backup written" in session.screen.file.getvalue()
    [archive] = (session.ws.root / "backups").glob("medanomaly-backup-*.tar")
    (session.ws.data_dir / "workflows" / "demo.json").write_text("damaged")
    drive(["Back up", ENTER, "Restore", ENTER, "n", ENTER], screens.settings_menu, session)  # said no: kept as is
    assert (session.ws.data_dir / "workflows" / "demo.json").read_text() == "damaged"
    drive(["Back up", ENTER, "Restore", ENTER, "y", ENTER], screens.settings_menu, session)
    assert (session.ws.data_dir / "workflows" / "demo.json").read_text() == "{}"
    text = session.screen.file.getvalue()
    assert archive.name in text and "Restored" in text and "backups/replaced-" in text


def test_the_review_screen_saves_a_correction_and_reorganizes(session, tmp_path) -> None:
    from app.organize.organizer import organize, read_rows
    from tests.app.organize.layouts import LAYOUTS, png

    LAYOUTS["busi"](tmp_path / "d")
    png(tmp_path / "d" / "extra" / "img.png")
    organize(session.ws, tmp_path / "d", "busi", workers=1)
    drive([ENTER, "extra", ENTER, "label", ENTER, "malignant", ENTER, CTRL_C], organize_menu.review_screen, session)
    rows = placed(session.ws, read_rows(session.ws.organized_path("busi") / "labeled.csv"))
    row = next(r for r in rows if "extra" in r["path"])
    assert (row["label"], row["label_rule"]) == ("tumor", "user_correction")
    assert "Saved" in session.screen.file.getvalue()


def test_the_first_ctrl_c_asks_to_stop_cleanly_the_second_stops_at_once() -> None:
    import os
    import signal

    from menus.stopping import clean_stop

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite was started in the background
    with clean_stop() as should_stop:
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert should_stop(), "the first Ctrl-C only asks"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before, "the handler found is put back"


def test_training_stopped_cleanly_is_marked_stopped_and_resumes(demo_ws) -> None:
    from app.training import train

    calls = []
    result = train(demo_ws, "demo", "supervised", run="m-stop", epochs=3, image_size=32, batch_size=16,
                   pretrained=False, should_stop=lambda: calls.append(1) or True)
    assert result.epochs_done == 1 and demo_ws.run_metadata("m-stop")["status"] == "stopped"
    again = train(demo_ws, "demo", "supervised", run="m-stop", epochs=3, image_size=32, batch_size=16,
                  pretrained=False)
    assert again.epochs_done == 3 and demo_ws.run_metadata("m-stop")["status"] == "complete"


def test_the_train_menu_trains_with_the_small_dataset_regularization_when_asked(session, demo_ws) -> None:
    session.ws = demo_ws

    def clear(text: str) -> list[str]:
        return [BACKSPACE * len(text)]

    # Dataset demo, phase supervised, recipe set by hand, backbone resnet18, 32 px, 1 epoch, standard
    # augmentation, no CLAHE, then yes to the small-dataset question.
    from app.training import resumable_runs

    new_run = ["Train a new run", ENTER] if resumable_runs(demo_ws, "demo") else []  # other tests' stopped runs
    keys = ["demo", ENTER, *new_run, "Supervised", ENTER, "Set it myself", ENTER, *clear("efficientnet_b0"), "resnet18", ENTER,
            *clear("64"), "32", ENTER, *clear("15"), "1", ENTER, ENTER, ENTER, "y"]
    before = {m["run"] for m in demo_ws.runs()}
    drive(keys, screens.train_menu, session)
    [run] = [m for m in demo_ws.runs() if m["run"] not in before]
    assert run["phase"] == "supervised" and run["status"] == "complete"
    assert run["config"]["ema"] == dict(SMALL_DATA)["ema"] and run["config"]["mixup"] == dict(SMALL_DATA)["mixup"]
    assert run["config"]["backbone"] == "resnet18" and run["config"]["image_size"] == 32


def test_the_train_menu_lets_the_tool_choose_the_recipe_by_default(session, demo_ws, monkeypatch) -> None:
    import app.recipes
    from app.recipes import Recipe
    from app.training import resumable_runs

    session.ws = demo_ws
    quick = (Recipe("still", "resnet10t", 32, "none", lr=1e-7), Recipe("quick", "resnet10t", 32, "none"))
    monkeypatch.setattr(app.recipes, "RECIPES_2D", quick)
    search = app.recipes.search_and_train
    asked: list[float] = []

    def shorter(ws, dataset, budget_s, **kwargs):  # the menu's minute, as a few seconds
        asked.append(budget_s)
        return search(ws, dataset, 8.0, epochs={"still": 1, "quick": 1}, **kwargs)

    monkeypatch.setattr(app.recipes, "search_and_train", shorter)
    new_run = ["Train a new run", ENTER] if resumable_runs(demo_ws, "demo") else []
    before = {m["run"] for m in demo_ws.runs()}
    drive(["demo", ENTER, *new_run, "Supervised", ENTER, ENTER, BACKSPACE * 2, "2", ENTER], screens.train_menu, session)
    assert asked == [120.0], "the recipe search is the first answer, its minutes asked"
    made = [m for m in demo_ws.runs() if m["run"] not in before]
    final = next(m for m in made if "trial" not in m["run"])
    assert final["recipe"]["name"] in ("still", "quick") and len(final["trials"]) == 2
    assert "chosen on the validation split" in session.screen.file.getvalue()


def test_the_train_menu_resumes_a_stopped_run(session, demo_ws) -> None:
    from app.training import train

    session.ws = demo_ws
    train(demo_ws, "demo", "supervised", run="m-resume", epochs=2, image_size=32, batch_size=16,
          backbone="resnet10t", should_stop=lambda: True)
    assert demo_ws.run_metadata("m-resume")["status"] == "stopped"
    drive(["demo", ENTER, "m-resume", ENTER], screens.train_menu, session)
    meta = demo_ws.run_metadata("m-resume")
    assert (meta["status"], meta["epoch"]) == ("complete", 2)
    assert "Finished run m-resume (2 epochs)" in session.screen.file.getvalue()


def test_the_train_menu_shows_phases_that_cannot_work_disabled_with_the_reason(session, tmp_path, monkeypatch) -> None:
    from app.organize.organizer import organize
    from tests.app.organize.layouts import png

    for k in range(8):
        png(tmp_path / "scans" / f"img{k}.png", value=20 + 20 * k)
    organize(session.ws, tmp_path / "scans", "unlabeled", workers=1)
    asked = {}

    def answer(message, choices, **kwargs):
        asked[message] = {c.value: c.disabled for c in choices}
        return "unlabeled" if message == "Dataset" else None

    monkeypatch.setattr(screens, "ask_choice", answer)
    screens.train_menu(session)
    phases = asked["Phase"]
    assert phases["supervised"] == phases["transfer"] == phases["cube3d"] == "not on this dataset, see above"
    assert phases["vae"] is None and phases["hybrid"].startswith("train supervised")
    said = session.screen.file.getvalue()
    assert "Not possible on unlabeled" in said and "needs labeled images" in said and "needs 3D volumes" in said


def test_the_workflow_menu_offers_resume_and_restart(session, monkeypatch) -> None:
    from app.state import Kind, write_state
    from app.workflow import WorkflowOptions, _stored

    ran = []
    monkeypatch.setattr(screens, "run_workflow_with_progress",
                        lambda ws, options, restart=False: ran.append((options.fast, restart)) or {"dataset": "demo", "steps": {}})
    monkeypatch.setattr(screens, "show_workflow_results", lambda *args: None)
    saved = _stored(session.ws, WorkflowOptions(dataset="demo", fast=True))
    write_state(session.ws.workflow_path("demo"), Kind.WORKFLOW, {"dataset": "demo", "options": saved, "steps": {
        "collect": {"status": "done"}, "organize": {"status": "done", "items": 9, "labeled": 9},
        "supervised": {"status": "stopped", "run": "demo-supervised-1", "epochs": 4, "planned": 15}}})
    drive(["demo", ENTER, "y", "Resume", ENTER], screens.workflow_menu, session)
    drive(["demo", ENTER, "y", "Restart", ENTER], screens.workflow_menu, session)
    assert ran == [(True, False), (True, True)]
    assert "epoch 4 of 15" in session.screen.file.getvalue()
    # Other options (not fast) for an unfinished workflow: a restart, or back.
    drive(["demo", ENTER, "n", "Back", ENTER], screens.workflow_menu, session)
    drive(["demo", ENTER, "n", "Restart", ENTER], screens.workflow_menu, session)
    assert ran[2:] == [(False, True)] and "started with other options" in session.screen.file.getvalue()


def test_the_evaluate_menu_averages_runs_picked_as_an_ensemble(session, demo_ws) -> None:
    from app.training import train

    for run, seed in (("m-ens-a", 0), ("m-ens-b", 1)):
        train(demo_ws, "demo", "supervised", run=run, epochs=1, image_size=32, batch_size=16, pretrained=False,
              backbone="resnet18", seed=seed)
    session.ws = demo_ws
    # Pick m-ens-a (typing filters), then tick the first run offered to average with it, no TTA.
    drive(["m-ens-a  (", ENTER, " ", ENTER, "n"], screens.evaluate_menu, session)
    text = session.screen.file.getvalue()
    assert "m-ens-a + " in text and "nothing written" in text and "Report:" not in text
    # m-ens-b alone (no partner ticked), with test-time augmentation: evaluated, written and reported.
    drive(["m-ens-b  (", ENTER, ENTER, "y"], screens.evaluate_menu, session)
    assert "Report:" in session.screen.file.getvalue()
    assert demo_ws.run_metadata("m-ens-b")["evaluation"]["test"]["tta"] is True


def test_the_catalog_shows_the_details_and_downloads_nothing_unless_confirmed(session) -> None:
    keys = ["collect", ENTER, "catalog", ENTER, ENTER, "n", "quit", ENTER]  # "n" answers at once
    drive(keys, main_menu.main_menu, session)
    text = session.screen.file.getvalue()
    assert "Recommended public datasets" in text and "licence:" in text and "Goodbye" in text
    assert session.ws.load_index() == {}, "nothing collected"


def test_an_unreachable_pacs_is_an_error_shown_in_the_menu(session) -> None:
    keys = ["collect", ENTER, "DICOMweb", ENTER, "http://127.0.0.1:9/dicom-web", ENTER, ENTER, ENTER,
            "quit", ENTER]
    drive(keys, main_menu.main_menu, session)
    text = session.screen.file.getvalue()
    assert "Cannot reach the DICOMweb service" in text and "Goodbye" in text


def test_progress_rows_end_as_one_line_each_and_fit_80_columns(monkeypatch) -> None:
    from menus import console as console_module

    screen = Console(file=StringIO(), width=80)
    monkeypatch.setattr(console_module, "console", screen)
    with console_module.progress_bars() as bar:
        for k in (1, 2, 3):
            bar("Loading train images", k, 3)
        bar("Loading train images", 3, 3)  # a loop's closing report: no second line
        for epoch in (1, 2):
            for b in (1, 2):
                bar("Batches", b, 2, epoch=f"{epoch}/15", loss=0.5)
            bar("Epochs", epoch, 15, train_loss=0.25, val_accuracy=0.75, val_balanced_accuracy=0.5, val_auc=0.9)
        bar("Loading train images", 1, 2)  # the next phase's own row and clock
        bar("Loading train images", 2, 2)
        for done in (1000, 2_000_000):  # a download after rows have ended: found by id, not position
            bar("model.zip", done, 2_000_000, unit="bytes")
    lines = [line for line in screen.file.getvalue().splitlines() if line.strip()]
    assert [line.split("  ")[0] for line in lines] == ["✓ Loading train images", "✓ Loading train images",
                                                        "✓ model.zip", "- Epochs"], lines
    assert "2.0/2.0 MB" in lines[2]
    assert "2/15" in lines[3] and "(not finished)" in lines[3] and all(len(line) <= 80 for line in lines)
    assert not [line for line in lines if "Batches" in line]


def test_help_and_the_header_wrap_inside_their_frames_at_80_columns(session, monkeypatch) -> None:
    narrow = Console(file=StringIO(), width=80, soft_wrap=True)  # as menus.console's
    monkeypatch.setattr(screens, "console", narrow)
    monkeypatch.setattr(main_menu, "console", narrow)
    screens.help_menu(session)
    main_menu._header(session)
    text = narrow.file.getvalue()
    assert "docs/user_guide.md" in text and "it resumes" in text, text
    assert str(session.ws.root.name) in text and all(len(line) <= 80 for line in text.splitlines())


def test_metrics_are_named_as_a_reader_says_them() -> None:
    from menus import render

    screen = Console(file=StringIO(), width=80)
    screen.print(render.metrics_table("test", {"roc_auc_ovr": 0.9, "threshold_at_val_threshold": 0.5, "new_key": 1,
                                               "tta": False}))
    text = screen.file.getvalue()
    assert "False" not in text and "no" in text.split()
    assert "ROC AUC (macro" in text and "anomaly threshold (chosen on validation)" in text and "new key" in text
    assert "_" not in text


def test_escape_goes_back_like_ctrl_c(session) -> None:
    assert drive(["\x1b"], screens.workflow_menu, session) is None
    assert not session.ws.workflow_path("demo").exists(), "nothing ran"


def test_ctrl_c_at_the_main_menu_asks_before_quitting(session) -> None:
    drive([CTRL_C, "n", "quit", ENTER], main_menu.main_menu, session)
    text = session.screen.file.getvalue()
    assert text.count("MedAnomaly Workbench  workspace") == 2, "the menu came back after 'no'"
    assert "Goodbye" in text


def test_a_mistyped_folder_is_refused_as_it_is_typed(tmp_path) -> None:
    from menus.ask import ask_path

    missing = str(tmp_path / "nowhere")
    answer = drive([missing, ENTER, BACKSPACE * len("nowhere"), ENTER], ask_path, "Folder:")
    assert Path(answer) == tmp_path, "Enter on the missing folder was refused; the fixed one answered"


def test_the_catalog_wraps_whole_words_with_labels_and_licence_at_80_columns() -> None:
    from app.collectors.catalog import CATALOG
    from menus import render

    screen = Console(file=StringIO(), width=80)
    screen.print(render.catalog_table(CATALOG), soft_wrap=False)
    lines = screen.file.getvalue().splitlines()
    words = set(" ".join(lines).split())
    assert all(len(line) <= 80 for line in lines)
    for entry in CATALOG:
        assert set(f"{entry.title} {entry.labels} {entry.licence}".split()) <= words, entry.key  # no word cut
    assert sum(line.lstrip().startswith("licence:") for line in lines) == len(CATALOG)


def test_the_status_tables_fit_80_columns_with_names_whole_and_figures_unwrapped() -> None:
    from app.status import WorkspaceStatus
    from app.verdict import Verdict
    from menus import render

    long = "chest_xray_pneumonia_kaggle"
    status = WorkspaceStatus(
        root="/w", collected={long: {"files": 5856}, "demo": {"files": 1632}},
        organized={long: {"items": 5856, "labeled": 5856, "classes": ["normal", "[b]pneumonia"],
                          "by_split": {"train": 4100, "val": 878, "test": 878}}},
        runs=[{"run": "demo-supervised-20261207-190522", "phase": "supervised", "status": "complete", "epochs": 15,
               "test": {"roc_auc_ovr": 0.987654, "balanced_accuracy": 0.95}, "verdict": Verdict("fit"),
               "exported": True},
              {"run": "breast-search", "phase": "supervised", "status": "stopped", "epochs": 100, "test": {},
               "verdict": Verdict("weak", ["lowest class sensitivity 0.12"]), "exported": False},
              {"run": "demo-hybrid-20261207-190632", "phase": "hybrid", "status": "complete", "epochs": None,
               "test": {"anomaly_auroc": 0.998}, "verdict": Verdict("fit"), "exported": True},
              {"run": "demo-vae-20261207-190608", "phase": "vae", "status": "complete", "epochs": 40, "test": {},
               "verdict": Verdict("unknown", ["not evaluated on the test split yet (run Evaluate)"]),
               "exported": False}],
        trials=14)
    screen = Console(file=StringIO(), width=80)
    for table in render.status_tables(status):
        screen.print(table)
    lines = screen.file.getvalue().splitlines()
    text = "\n".join(lines)
    assert all(len(line) <= 80 for line in lines)
    joined = "".join(line.split(" ")[0] for line in lines)  # a folded name's pieces start their lines
    assert long in joined and "demo-supervised-20261207-190522" in joined and "demo-vae-20261207-190608" in joined
    row = next(line for line in lines if line.startswith("demo-supervised"))
    assert "supervised" in row and "complete" in row and "0.988" in row and "0.950" in row and "fit" in row
    assert next(line for line in lines if line.startswith(long[:10])).rstrip().endswith("4100/878/878")
    hybrid = next(line for line in lines if line.startswith("demo-hybrid")).split()
    assert hybrid[1:6] == ["hybrid", "complete", "-", "0.998", "-"], "a run fitted on validation has no epochs"
    assert "[b]pneumonia" in text, "a class named with brackets is shown as written, not read as markup"
    assert "breast-search: weak: lowest class sensitivity 0.12" in text  # the reasons, whole, under the table
    assert text.count("not evaluated on the test split yet") == 1 and "14 hidden run(s)" in text
