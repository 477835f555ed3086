"""The recipe search screens on validation only and continues the winner's own run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.organize.organizer import organize
from app.recipes import SCREEN_SHARE, Recipe, round_shares, round_sizes, screen_epochs, search_and_train

# "slow" cannot learn in two epochs (a learning rate of 1e-7); "fast" learns the lesion.
RECIPES = (Recipe("slow", "resnet10t", 32, "standard", lr=1e-7), Recipe("fast", "resnet10t", 32, "standard"))
OPTIONS = {"pretrained": False, "batch_size": 8}


def _npz(path: Path, shuffle_test: bool = False) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        labels = (np.arange(n) % 2).reshape(n, 1)
        images = (rng.random((n, 28, 28)) * 80).astype(np.uint8)
        images[labels[:, 0] == 1, 10:18, 10:18] = 250  # a bright lesion: learnable
        if split == "test" and shuffle_test:
            labels = np.random.default_rng(1).permutation(labels)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(path, **arrays)
    return path


def test_the_search_halves_the_recipes_on_validation_and_continues_the_winner(ws, tmp_path: Path) -> None:
    """Successive halving: round 0 screens all three recipes, round 1 goes on with the better
    two from their own weights, and the better of those goes on to the end of the budget."""
    organize(ws, _npz(tmp_path / "toymnist.npz"), "toy")
    three = (*RECIPES, Recipe("stiller", "resnet10t", 32, "standard", lr=1e-7))
    result, record = search_and_train(ws, "toy", 12.0, run="r", recipes=three,
                                      epochs={"slow": 2, "fast": 2, "stiller": 2}, **OPTIONS)
    first = {t["recipe"]: t for t in record["trials"] if t["round"] == 0}
    second = {t["recipe"]: t for t in record["trials"] if t["round"] == 1}
    assert set(first) == {"slow", "fast", "stiller"} and len(record["trials"]) == 5
    assert all(t["epochs"] == 2 for t in record["trials"])
    dropped = ({"slow", "stiller"} - set(second)).pop()
    assert "fast" in second and len(second) == 2, "the better two go on"
    assert first[dropped]["val_monitor"] <= min(first[k]["val_monitor"] for k in second)
    for name, trial in second.items():  # each from its own weights of round 0
        assert trial["run"] == f"{first[name]['run']}-round1"
        assert ws.run_metadata(trial["run"])["initialized_from"] == first[name]["run"]
        assert ws.run_metadata(trial["run"])["trial_of"] == "r"
    # Hidden trials never predict: no out-of-distribution gate is fitted for them (seconds each on a large set).
    assert not any((ws.run_dir(t["run"]) / "ood_gate.json").exists() for t in record["trials"])
    assert (ws.run_dir("r") / "ood_gate.json").exists() and ws.run_metadata("r")["ood_gate"]["threshold"] > 0
    assert second["fast"]["val_monitor"] > min(t["val_monitor"] for t in second.values())
    assert record["recipe"]["name"] == "fast" and record["recipe"]["lr"] == 3e-3
    meta = ws.run_metadata(result.run)
    assert result.run == "r" and meta["initialized_from"] == second["fast"]["run"], "the winner's weights go on"
    assert meta["status"] == "complete" and meta["config"]["lr"] == 3e-3 and meta["history"]
    assert meta["recipe"] == record["recipe"] and meta["trials"] == record["trials"]
    from app.evaluate import evaluate_run

    evaluate_run(ws, result.run, "test")
    report = (ws.run_dir(result.run) / "evaluation" / "report.md").read_text()
    assert "## Recipe: fast (chosen on the validation split)" in report and "| 0 | slow | 2 |" in report
    assert "| 1 | fast (chosen) | 2 |" in report and "successive halving" in report
    # A run searched before halving (equal shares, no round in its trials): no round column, no halving sentence.
    from app.runs import Run

    Run(ws, result.run).merge(trials=[{k: v for k, v in t.items() if k != "round"} for t in record["trials"]])
    evaluate_run(ws, result.run, "test")
    report = (ws.run_dir(result.run) / "evaluation" / "report.md").read_text()
    assert "successive halving" not in report and "| round |" not in report and "equal share" in report
    assert "| fast (chosen) | 2 |" in report


def test_successive_halving_gives_every_round_the_same_time() -> None:
    assert round_sizes(8) == [8, 4, 2] and round_sizes(7) == [7, 4, 2] and round_sizes(3) == [3, 2]
    assert round_sizes(2) == [2] and round_sizes(1) == [1]
    shares = round_shares(8, 600.0)  # 180 s of screening, 60 s a round
    assert shares == [7.5, 15.0, 30.0]
    assert sum(n * s for n, s in zip(round_sizes(8), shares)) == SCREEN_SHARE * 600.0


def test_the_search_never_reads_the_test_split(ws, tmp_path: Path, monkeypatch) -> None:
    """Shuffled test labels change nothing the search sees: the same figures, the same choice."""
    import app.training
    from app import data

    read: list[str] = []
    split_rows = data.split_rows

    def watched(ws_, dataset, split):
        read.append(split)
        return split_rows(ws_, dataset, split)

    figures = []
    for k, shuffled in enumerate((False, True)):
        organize(ws, _npz(tmp_path / f"toy{k}mnist.npz", shuffle_test=shuffled), f"toy{k}")
        with monkeypatch.context() as patch:
            patch.setattr(app.training, "split_rows", watched)
            patch.setattr(data, "split_rows", watched)
            _, record = search_and_train(ws, f"toy{k}", 10.0, run=f"s{k}", recipes=RECIPES,
                                         epochs={"slow": 2, "fast": 2}, **OPTIONS)
        figures.append([(t["recipe"], t["val_monitor"]) for t in record["trials"]])
    assert figures[0] == figures[1]
    assert read and "test" not in read


def test_screening_fits_epochs_to_the_share_with_two_epochs_at_least() -> None:
    assert screen_epochs({"a": 10.0, "b": 40.0}, 90.0) == {"a": 9, "b": 2}
    assert screen_epochs({"a": 1000.0}, 18.0) == {"a": 2}


def test_a_run_starts_only_from_the_weights_of_the_same_model(ws, tmp_path: Path) -> None:
    import pytest

    from core.errors import TrainingError
    from app.training import train

    organize(ws, _npz(tmp_path / "toymnist.npz"), "toy")
    train(ws, "toy", "supervised", run="first", epochs=1, image_size=32, backbone="resnet10t", **OPTIONS)
    with pytest.raises(TrainingError, match="cannot start from its weights"):
        train(ws, "toy", "supervised", run="other", init_from="first", epochs=1, image_size=32, backbone="resnet18",
              **OPTIONS)
    assert not ws.run_dir("other").exists(), "nothing is left of the refused run"


def test_train_recipe_auto_from_the_command_line(capsys, tmp_path: Path, monkeypatch) -> None:
    """The command-line twin: the search's trials and choice are printed; recipe flags are refused."""
    import app.recipes
    import main

    # Two quick recipes instead of the four real ones (the search itself is tested above).
    monkeypatch.setattr(app.recipes, "RECIPES_2D", RECIPES)
    workspace = str(tmp_path / "w")
    assert main.main(["organize", str(_npz(tmp_path / "toymnist.npz")), "--name", "toy", "--workspace", workspace]) == 0
    code = main.main(["train", "--dataset", "toy", "--phase", "supervised", "--recipe", "auto", "--minutes", "0.3",
                      "--batch-size", "8", "--run", "auto", "--workspace", workspace])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "chosen on the validation split" in out and "  slow: 0." in out and "  fast: 1." in out
    for argv, problem in ((["--backbone", "resnet18"], "chooses --backbone itself"),
                          (["--epochs", "3"], "leave out --epochs"),
                          (["--phase", "vae"], "trains the supervised phase")):
        args = ["train", "--dataset", "toy", "--phase", "supervised", "--recipe", "auto", "--workspace", workspace]
        if argv[0] == "--phase":
            args[args.index("supervised")] = argv[1]
            argv = []
        code = main.main([*args, *argv])
        err = capsys.readouterr()
        assert code == 2 and problem in err.out + err.err, (argv, err)
    code = main.main(["train", "--dataset", "toy", "--phase", "supervised", "--recipe", "auto", "--minutes", "0.2",
                      "--run", "auto", "--workspace", workspace])
    err = capsys.readouterr()
    assert code == 2 and "already exists" in err.out + err.err


def _val_logits(ws, run: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's raw logits on the validation split, and the targets."""
    import torch

    from app.training import load_run_phase, split_tensors

    phase = load_run_phase(ws, run)
    images, targets = split_tensors(ws, phase, ws.run_metadata(run)["dataset"], "val", phase.select_rows, None)
    with torch.no_grad():
        return phase.model(images).numpy(), targets.numpy()


def _auc_of_mean(ws, runs: list[str]) -> float:
    from sklearn.metrics import roc_auc_score

    found = [_val_logits(ws, r) for r in runs]
    mean = np.mean([logits for logits, _ in found], axis=0)
    return float(roc_auc_score(found[0][1], mean[:, 1] - mean[:, 0]))


def test_time_left_after_the_winner_trains_members_each_kept_only_if_validation_agrees(ws, tmp_path: Path,
                                                                                       monkeypatch) -> None:
    """The best few: members while time is left (the last round's runner-up when it screened close, then the
    winner's recipe with the next seeds), at most MAX_MEMBERS runs, each kept only when the
    average of the logits with it scores at least the average without it on validation; the
    members are hidden runs, and the search's run is the average when one was kept."""
    import app.recipes
    from app.predict import candidate_runs

    monkeypatch.setattr(app.recipes, "MAX_EPOCHS", 3)  # every run ends early, leaving time for the next
    monkeypatch.setattr(app.recipes, "MAX_MEMBERS", 3)
    monkeypatch.setattr(app.recipes, "MIRROR_TIE", float("-inf"))  # members alone here; the mirror has its own test
    organize(ws, _npz(tmp_path / "toymnist.npz"), "toy")
    close = (Recipe("first", "resnet10t", 32, "standard"), Recipe("second", "resnet10t", 32, "standard", lr=1e-3),
             Recipe("larger", "resnet10t", 64, "standard", lr=1e-3))  # another input size: never a member
    # Every run stops at MAX_EPOCHS whatever the budget: a large one only keeps a loaded machine
    # from running out of time before the second member (a fifth of the budget must be left).
    _, record = search_and_train(ws, "toy", 600.0, run="e", recipes=close,
                                 epochs={"first": 2, "second": 2, "larger": 2}, **OPTIONS)
    found = record["ensemble"]
    members = found["members"]
    assert [m["member"] for m in members] == ["e-member1", "e-member2"], members  # MAX_MEMBERS - 1 of them
    assert all(ws.run_metadata(m["member"])["status"] == "complete" for m in members)
    assert all(ws.run_metadata(m["member"])["trial_of"] == "e" for m in members)
    assert not {"e-member1", "e-member2"} & set(candidate_runs(ws)), "members are not routed to on their own"
    winner = record["recipe"]["name"]  # of near-equals the first listed: not always the top figure
    last = [t for t in record["trials"] if t["round"] == 1]  # of three recipes, the last round has two
    best = next(t for t in last if t["recipe"] == winner)
    same_size = [t for t in last if t["recipe"] not in (winner, "larger")]
    runner_up_close = same_size and same_size[0]["val_monitor"] >= best["val_monitor"] - 2 * app.recipes.TIE
    expected = [(same_size[0]["recipe"], 0), (winner, 1)] if runner_up_close else [(winner, 1), (winner, 2)]
    assert [(m["recipe"], m["seed"]) for m in members] == expected
    alone = "e-member0" if any(m["kept"] for m in members) else "e"
    kept = [alone]
    assert found["val_auc_alone"] == round(_auc_of_mean(ws, kept), 4)
    for m in members:  # each judged against the average of those kept before it
        before, with_it = (_auc_of_mean(ws, runs) for runs in (kept, [*kept, m["member"]]))
        assert (m["val_auc_before"], m["val_auc_with"]) == (round(before, 4), round(with_it, 4))
        assert m["kept"] == (with_it >= before)
        kept += [m["member"]] if m["kept"] else []
    assert found["runs"] == kept and ws.run_metadata("e")["ensemble"] == found
    assert ws.run_dir("e-member0").exists() == (len(kept) > 1)
    assert not found["mirror"]["kept"], "refused: the run is the winner alone or the members' mean, single view"
    assert ("averaged_in" in found) == (len(kept) > 1)


def test_the_members_kept_are_one_model_that_evaluates_explains_exports_and_predicts(ws, tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """What the menus give is what the benchmark measures: the search's run is the average of the
    members kept, calibrated again, and goes through evaluation, Grad-CAM, export (ONNX parity)
    and a hybrid's rebuild like one model; the winner alone stays as a hidden run."""
    import torch

    import app.ensemble
    import app.recipes
    from app.evaluate import evaluate_run
    from app.explain import gradcam_overlays
    from app.bundle import export_bundle, load_bundle
    from app.training import load_run_phase
    from models.hybrid import HybridPhase
    from models.supervised import Averaged

    monkeypatch.setattr(app.recipes, "MAX_EPOCHS", 3)
    monkeypatch.setattr(app.recipes, "MAX_MEMBERS", 2)
    monkeypatch.setattr(app.recipes, "MIRROR_TIE", float("-inf"))  # never the mirror: the members' mean alone
    judge = app.ensemble.Members.judge

    def always_kept(self, member, complete):  # whatever this tiny validation split says
        self.score = float("-inf")
        return judge(self, member, complete)

    monkeypatch.setattr(app.ensemble.Members, "judge", always_kept)
    organize(ws, _npz(tmp_path / "toymnist.npz"), "toy")
    _, record = search_and_train(ws, "toy", 600.0, run="e", recipes=RECIPES[1:], epochs={"fast": 2}, **OPTIONS)
    assert record["ensemble"]["runs"] == ["e-member0", "e-member1"] and record["ensemble"]["averaged_in"] == "e"
    phase = load_run_phase(ws, "e")
    assert isinstance(phase.model, Averaged) and phase.model_args()["members"] == ["resnet10t", "resnet10t"]
    (winner, _), (member, _) = _val_logits(ws, "e-member0"), _val_logits(ws, "e-member1")
    averaged, _ = _val_logits(ws, "e")
    assert np.abs(averaged - (winner + member) / 2).max() < 1e-5, "the run's logits are the members' mean"
    meta = ws.run_metadata("e")
    assert meta["trials"] and meta["calibration"]["temperature"] == phase.temperature
    assert ws.run_metadata("e-member0")["trial_of"] == "e"

    test = evaluate_run(ws, "e", "test").metrics
    assert 0.0 <= test["roc_auc_ovr"] <= 1.0
    report = (ws.run_dir("e") / "evaluation" / "report.md").read_text()
    assert "## Members" in report and "This run is the average of 2 models" in report
    import app.explain

    titles: list[str] = []
    drawn = app.explain.heat_grid
    monkeypatch.setattr(app.explain, "heat_grid", lambda *a, **k: (titles.append(a[4]), drawn(*a, **k)))
    assert gradcam_overlays(ws, "e", "test", per_class=1).path.exists()
    assert "an average; the winner's layer" in titles[0] and "members." not in titles[0], titles
    exported = export_bundle(ws, "e")
    assert exported.max_abs_diff <= 1e-4, "one ONNX graph computes the average"
    card = json.loads((exported.path / "metadata.json").read_text())
    assert [m["run"] for m in card["provenance"]["ensemble"]] == ["e-member0", "e-member1"]
    assert "An average of 2 models" in (exported.path / "README.md").read_text()
    bundle = load_bundle(exported.path, keys_from=ws.data_dir)
    sample = np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)
    with torch.no_grad():
        expected = phase.predict(torch.from_numpy(sample)).numpy()
    assert np.abs(bundle.session().run(None, {"image": sample})[0] - expected).max() < 1e-4
    rebuilt = HybridPhase.rebuild({"supervised": phase.model_args(), "vae": {"image_size": 32, "latent_dim": 4},
                                   "normal_index": 0, "n_reference": 4, "vae_scorer": {"kind": "mse"}})
    assert isinstance(rebuilt.supervised, Averaged)
    rebuilt.supervised.load_state_dict(phase.model.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        images = torch.rand(2, 1, 32, 32)
        assert torch.allclose(rebuilt.supervised(images), phase.model(images), atol=1e-6)


def test_the_mirror_is_kept_unless_validation_scores_it_lower() -> None:
    """Test-time mirroring folded into the model: only for a recipe that trained on mirrored
    images, and kept unless the mirrored average scores more than MIRROR_TIE lower."""
    from app.recipes import MIRROR_TIE, _mirror_choice

    class Scored:
        def __init__(self, single: float, mirrored: float) -> None:
            self.score, self.mirrored = single, mirrored

        def mirrored_score(self) -> float:
            return self.mirrored

    flips = [Recipe("r", "resnet10t", 32, "strong"), Recipe("s", "resnet18", 32, "standard")]
    assert _mirror_choice(Scored(0.90, 0.91), flips) == {"val_auc_single": 0.9, "val_auc_mirrored": 0.91, "kept": True}
    assert _mirror_choice(Scored(0.90, 0.90 - MIRROR_TIE / 2), flips)["kept"], "within the tie: the mirror stays"
    assert not _mirror_choice(Scored(0.90, 0.90 - 2 * MIRROR_TIE), flips)["kept"], "clearly lower: refused"
    plain = Recipe("p", "resnet10t", 32, "none")
    assert _mirror_choice(Scored(0.90, 0.95), [*flips, plain]) == {}, "a member never trained on mirrors: not considered"


def test_a_mirrored_run_is_one_model_that_evaluates_explains_exports_and_says_so(ws, tmp_path: Path,
                                                                                monkeypatch) -> None:
    """The mirror chosen (without members): the search's run averages each image with its
    mirror inside the model, calibrated again; its logits are the winner's on both views;
    its report, summary, Grad-CAM, ONNX export (parity) and bundle card say it or do it."""
    import torch

    import app.recipes
    from app.bundle import export_bundle, load_bundle
    from app.evaluate import evaluate_run
    from app.explain import gradcam_overlays
    from app.training import load_run_phase
    from menus.render import recipe_summary
    from models.supervised import Averaged

    monkeypatch.setattr(app.recipes, "MAX_EPOCHS", 3)  # the winner's run ends early
    monkeypatch.setattr(app.recipes, "MIRROR_TIE", float("inf"))  # whatever this tiny validation split says
    organize(ws, _npz(tmp_path / "toymnist.npz"), "toy")
    result, record = search_and_train(ws, "toy", 600.0, run="m", recipes=RECIPES[1:], epochs={"fast": 2},
                                      ensemble=False, **OPTIONS)
    found = record["ensemble"]
    assert found["members"] == [] and found["mirror"]["kept"] and found["averaged_in"] == "m"
    assert found["runs"] == ["m-member0"] and ws.run_metadata("m-member0")["trial_of"] == "m"
    phase = load_run_phase(ws, "m")
    assert isinstance(phase.model, Averaged) and phase.model.mirror
    assert phase.model_args() == {"backbone": "resnet10t", "num_classes": 2, "in_chans": 1, "members": ["resnet10t"],
                                  "mirror": True}
    alone = load_run_phase(ws, "m-member0")
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        both = (alone.model(images) + alone.model(images.flip(-1))) / 2
        assert torch.allclose(phase.model(images), both, atol=1e-5), "the winner's logits on both views, averaged"
    assert found["mirror"]["val_auc_mirrored"] == round(_auc_of_mean(ws, ["m"]), 4)
    assert found["val_auc"] == found["mirror"]["val_auc_single"], "the members' average (here the winner), single view"
    assert found["val_auc_alone"] == found["mirror"]["val_auc_single"] == round(_auc_of_mean(ws, ["m-member0"]), 4)
    assert "Mirror view: the model averages each image with its left-right mirror" in recipe_summary(record, result)

    evaluate_run(ws, "m", "test")
    report = (ws.run_dir("m") / "evaluation" / "report.md").read_text()
    assert "Mirror view: the model averages" in report and "## Members" not in report
    assert "| round |" in report and "| 0 | fast (chosen) |" in report, "one round (one recipe) is still a round"
    assert gradcam_overlays(ws, "m", "test", per_class=1).path.exists()
    exported = export_bundle(ws, "m")
    assert exported.max_abs_diff <= 1e-4, "the ONNX graph mirrors too"
    card = json.loads((exported.path / "metadata.json").read_text())
    assert card["provenance"]["mirror_view"] is True and card["provenance"]["ensemble"] is None
    assert "mirrored views averaged" in card["metrics"]["setting"]
    assert "averages each image with its left-right mirror" in (exported.path / "README.md").read_text()
    sample = np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)
    with torch.no_grad():
        expected = phase.predict(torch.from_numpy(sample)).numpy()
    bundle = load_bundle(exported.path, keys_from=ws.data_dir)
    assert np.abs(bundle.session().run(None, {"image": sample})[0] - expected).max() < 1e-4


def test_the_report_says_what_validation_said_of_the_mirror() -> None:
    from app.evaluate import mirror_sentence

    kept = mirror_sentence({"val_auc_single": 0.9, "val_auc_mirrored": 0.91, "kept": True})
    assert kept.startswith("Mirror view: the model averages each image with its left-right mirror") and "0.9100" in kept
    refused = mirror_sentence({"val_auc_single": 0.9, "val_auc_mirrored": 0.88, "kept": False})
    assert refused == ("Mirror view not used: it scored lower on validation (validation AUC 0.9000 on the images as "
                       "given, 0.8800 averaged with their mirrors).")


def test_screening_runs_stay_out_of_routing_resuming_and_the_runs_table(ws, tmp_path: Path) -> None:
    from app.predict import candidate_runs
    from app.status import workspace_status
    from app.training import resumable_runs

    organize(ws, _npz(tmp_path / "toymnist.npz"), "toy")
    asked = []
    # Stopped in the second trial (asked after each epoch but a run's last): nothing chosen, the trials marked.
    result, record = search_and_train(ws, "toy", 10.0, run="s", recipes=RECIPES, epochs={"slow": 2, "fast": 2},
                                      should_stop=lambda: asked.append(1) or len(asked) >= 2, **OPTIONS)
    assert record["stopped"] and record["recipe"] is None and result.run == "s-trial1"
    assert all(ws.run_metadata(t["run"])["trial_of"] == "s" for t in record["trials"])
    assert resumable_runs(ws, "toy") == [], "a search stopped while screening starts again; its trials do not resume"
    assert "s-trial0" not in candidate_runs(ws)
    status = workspace_status(ws)
    assert status.trials == 2 and not status.runs


def test_every_recipe_the_search_may_choose_trains_explains_and_exports(ws, tmp_path: Path) -> None:
    """Whichever recipe wins (attention blocks, ConvNeXt and RegNet included), its run goes
    through Grad-CAM and a verified ONNX export like the others."""
    from app.bundle import export_bundle
    from app.explain import gradcam_overlays
    from app.recipes import RECIPES_2D
    from app.training import train

    organize(ws, _npz(tmp_path / "toymnist.npz"), "toy")
    for recipe in RECIPES_2D:
        run = recipe.name.replace("+", "-")
        train(ws, "toy", "supervised", run=run, epochs=1, **{**recipe.options(), "augment": "none"}, **OPTIONS)
        assert ws.run_metadata(run)["config"]["backbone"] == recipe.backbone
        assert export_bundle(ws, run).max_abs_diff <= 1e-4, recipe.name
        assert gradcam_overlays(ws, run, "test", per_class=1).path.exists(), recipe.name


def test_a_member_whose_training_fails_leaves_the_winner_and_is_hidden(ws, tmp_path: Path, monkeypatch) -> None:
    """A member is an extra: when its training raises (a full disk), the search ends with the
    winner's complete run and its record, the error named, and the broken member hidden.
    Writing the mirrored average fails on the same full disk: the run stays the winner."""
    import app.ensemble
    import app.recipes
    from app.predict import candidate_runs
    from app.training import load_run_phase
    from models.supervised import Averaged

    monkeypatch.setattr(app.recipes, "MAX_EPOCHS", 3)
    monkeypatch.setattr(app.recipes, "MIRROR_TIE", float("inf"))  # the mirror chosen, then its writing fails

    def full_disk(self, mirror=False):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(app.ensemble.Members, "assemble", full_disk)
    trained = app.recipes.train

    def full_disk_for_members(ws_, dataset, phase, *, run, **kwargs):
        result = trained(ws_, dataset, phase, run=run, **kwargs)
        if "member" in run:
            raise OSError(28, "No space left on device")
        return result

    monkeypatch.setattr(app.recipes, "train", full_disk_for_members)
    organize(ws, _npz(tmp_path / "toymnist.npz"), "toy")
    result, record = search_and_train(ws, "toy", 600.0, run="f", recipes=RECIPES[1:], epochs={"fast": 2}, **OPTIONS)
    assert result.run == "f" and result.status == "complete"
    assert "f-member1" in record["ensemble"]["failed"] and "No space left" in record["ensemble"]["failed"]
    assert record["ensemble"]["runs"] == ["f"] and ws.run_metadata("f")["recipe"]["name"] == "fast"
    assert ws.run_metadata("f-member1")["trial_of"] == "f" and "f-member1" not in candidate_runs(ws)
    from app.evaluate import evaluate_run
    from menus.render import recipe_summary

    evaluate_run(ws, "f", "test")
    said = "Training a member failed (f-member1: [Errno 28] No space left on device)"
    assert said in (ws.run_dir("f") / "evaluation" / "report.md").read_text() and said in recipe_summary(record, result)
    said = "Writing the average into the run failed ([Errno 28] No space left on device): it is the winner alone."
    assert said in recipe_summary(record, result) and "mirror" not in record["ensemble"]
    assert "it is the winner alone" in (ws.run_dir("f") / "evaluation" / "report.md").read_text()
    assert not isinstance(load_run_phase(ws, "f").model, Averaged)
