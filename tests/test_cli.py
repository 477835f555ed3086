"""The command-line twin: global options anywhere, clear errors, exit codes."""

from pathlib import Path

import pytest

import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for command in ("workflow", "collect", "organize", "train", "evaluate", "export", "status"):
        assert command in text


@pytest.mark.parametrize("command", [["workflow"], ["collect", "demo"], ["organize"], ["train"], ["export"],
                                     ["collect", "kaggle"], ["collect", "tcia"], ["collect", "nih"],
                                     ["collect", "dicomweb"], ["collect", "local"], ["collect", "catalog"], ["serve"]])
def test_each_command_has_help(capsys, command) -> None:
    with pytest.raises(SystemExit) as exit_:
        main.main([*command, "--help"])
    assert exit_.value.code == 0
    assert "--workspace" in capsys.readouterr().out


@pytest.mark.parametrize("order", ["before", "after"])
def test_global_options_go_before_or_after_the_command(capsys, tmp_path: Path, order: str) -> None:
    argv = ["--workspace", str(tmp_path / "w"), "status"] if order == "before" else ["status", "--workspace", str(tmp_path / "w")]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert (tmp_path / "w" / "data" / "raw").is_dir() and (tmp_path / "w" / "checkpoints").is_dir()
    assert "Datasets: none yet" in out and "Training runs: none yet" in out


def test_errors_are_one_clear_line_and_exit_2(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "evaluate", "nope", "--workspace", str(tmp_path))
    assert code == 2 and "No training run named 'nope'" in err and "Traceback" not in err
    code, _, err = run(capsys, "evaluate", "nope", "--with", "other", "--workspace", str(tmp_path))
    assert code == 2 and "No training run named 'nope'" in err and "Traceback" not in err
    code, _, err = run(capsys, "collect", "local", str(tmp_path / "absent"), "--workspace", str(tmp_path))
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "train", "--dataset", "x", "--phase", "supervised", "--workspace", str(tmp_path))
    assert code == 2 and "Run Organize first" in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from core.errors import WorkbenchError

    with pytest.raises(WorkbenchError):
        main.main(["evaluate", "nope", "--workspace", str(tmp_path), "--debug"])


def test_questions_need_a_terminal_or_yes(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, out, _ = run(capsys, "workflow", "--workspace", str(tmp_path))
    assert code == 2 and "--yes" in out
    code, out, _ = run(capsys, "--workspace", str(tmp_path))
    assert code == 2 and "interactive terminal" in out


def test_collect_and_organize_from_the_command_line(capsys, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "xrays"
    for label in ("NORMAL", "PNEUMONIA"):
        (folder / label).mkdir(parents=True)
        for k in range(6):
            Image.new("L", (32, 32), 40 * k).save(folder / label / f"person{k}_{label}.png")
    ws = str(tmp_path / "ws")
    code, out, _ = run(capsys, "collect", "local", str(folder), "--name", "xr", "--workspace", ws)
    assert code == 0 and "Collected 12 files" in out
    code, out, _ = run(capsys, "organize", "xr", "--name", "xr", "--workspace", ws)
    assert code == 0 and "Organized 12 items" in out
    assert "classes: normal 6, infection 6" in out and "{" not in out, "counts in words, not a Python dict"
    assert (tmp_path / "ws" / "data" / "organized" / "xr" / "splits" / "test.csv").exists()


def test_dataset_commands(capsys, tmp_path: Path) -> None:
    from tests.app.organize.layouts import LAYOUTS, png

    LAYOUTS["busi"](tmp_path / "busi")
    png(tmp_path / "busi" / "extra" / "x.png")
    ws = ["--workspace", str(tmp_path / "ws")]
    assert run(capsys, "organize", str(tmp_path / "busi"), "--name", "busi", *ws)[0] == 0
    code, out, _ = run(capsys, "dataset", "review", "busi", *ws)
    assert code == 0 and "benign" in out and "(unlabeled)" in out
    assert "/extra: 1 item, " in out, out  # one image: "1 item", not "1 items"
    folder = next(line.split(":")[0] for line in out.splitlines() if line.rstrip().endswith("extra") or "/extra:" in line)
    code, out, _ = run(capsys, "dataset", "correct", "busi", folder, "label", "normal", *ws)
    assert code == 0 and "Saved and applied" in out
    code, out, _ = run(capsys, "dataset", "stats", "busi", *ws)
    assert code == 0 and "Plot:" in out and "normal: train" in out
    assert run(capsys, "dataset", "balance", "busi", "oversample", *ws)[0] == 0
    code, out, _ = run(capsys, "dataset", "export", "busi", str(tmp_path / "busi.json"), *ws)
    assert code == 0 and (tmp_path / "busi.json").exists()
    code, _, err = run(capsys, "dataset", "merge", "busi", "--name", "m", *ws)
    assert code == 2 and "at least two" in err


def test_the_catalog_lists_and_network_sources_fail_offline_with_one_clear_line(capsys, tmp_path, monkeypatch) -> None:
    code, out, _ = run(capsys, "collect", "catalog", "--workspace", str(tmp_path / "w"))
    assert code == 0 and "nih-chestxray14" in out and "brain-tumor-mri" in out
    for key in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, err = run(capsys, "collect", "kaggle", "someone/data", "--workspace", str(tmp_path / "w"))
    assert code == 2 and "Create New Token" in err and "Traceback" not in err
    code, _, err = run(capsys, "collect", "catalog", "no-such-entry", "--workspace", str(tmp_path / "w"))
    assert code == 2 and "nih-chestxray14" in err
    code, out, err = run(capsys, "collect", "dicomweb", "http://127.0.0.1:9/dicom-web", "--workspace", str(tmp_path / "w"))
    assert code == 2 and "Cannot reach the DICOMweb service" in err and "Traceback" not in err
    assert "Retrying" not in out + err, "connection retries are the log file's, not the screen's"
    assert "Retrying" in (tmp_path / "w" / "data" / "logs" / "workbench.log").read_text()
