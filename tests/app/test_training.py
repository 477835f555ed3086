"""The training loop, checkpoints, hybrid fitting, evaluation and ONNX export on tiny runs."""

import pickle
import time

import numpy as np
import pytest
import torch

from app.checkpoints import load_checkpoint
from core.errors import DatasetError, TrainingError
from app.evaluate import ensemble_partners, evaluate_ensemble, evaluate_run
from app.export import export_run
from app.training import load_run_phase, train

TINY = {"image_size": 32, "batch_size": 16}


@pytest.fixture(scope="module")
def runs(demo_ws):
    sup = train(demo_ws, "demo", "supervised", run="t-sup", epochs=2, pretrained=False, **TINY)
    vae = train(demo_ws, "demo", "vae", run="t-vae", epochs=2, latent_dim=8, **TINY)
    hyb = train(demo_ws, "demo", "hybrid", run="t-hyb", supervised_run=sup.run, vae_run=vae.run)
    return {"supervised": sup, "vae": vae, "hybrid": hyb}


def test_runs_write_self_describing_checkpoints(demo_ws, runs) -> None:
    for result in runs.values():
        payload = torch.load(result.path / "best.pt", map_location="cpu", weights_only=True)
        assert {"model_state", "model_args", "config", "classes", "phase"} <= set(payload)
        phase = load_run_phase(demo_ws, result.run)  # rebuilt from the checkpoint alone
        assert phase.spec.name == result.phase
    meta = demo_ws.run_metadata("t-sup")
    assert meta["status"] == "complete" and len(meta["history"]) == 2
    assert meta["config"]["image_size"] == 32


def test_hybrid_weight_follows_the_labeled_fraction(runs) -> None:
    # The demo is mostly labeled (86%): the classifier gets 0.8 of the say.
    assert runs["hybrid"].metrics["weight"] == pytest.approx(0.8)
    assert 0.0 <= runs["hybrid"].metrics["threshold"] <= 1.0


def test_evaluation_writes_metrics_plots_and_a_report(demo_ws, runs) -> None:
    result = evaluate_run(demo_ws, "t-sup", "test")
    assert {"accuracy", "balanced_accuracy", "roc_auc_ovr", "confusion_matrix", "anomaly_auroc"} <= set(result.metrics)
    n = len(result.metrics["confusion_matrix"])
    assert n == 5 and sum(map(sum, result.metrics["confusion_matrix"])) == result.metrics["n"]
    assert all(p.exists() and p.stat().st_size > 1000 for p in result.plots)
    assert "| balanced accuracy |" in result.report.read_text()
    vae = evaluate_run(demo_ws, "t-vae", "test")
    assert 0.0 <= vae.metrics["anomaly_auroc"] <= 1.0 and "sensitivity" in vae.metrics
    assert demo_ws.run_metadata("t-vae")["evaluation"]["test"]["n"] == vae.metrics["n"]


def test_the_calibration_bias_puts_back_the_training_splits_own_class_shares(demo_ws, runs) -> None:
    """Class weights and resampling even the classes out; the calibration's bias puts back the
    shares of the training split as organized (before any resampling); training that kept
    them (balance none) gets no bias."""
    from app.data import split_rows
    from app.training import evened_counts
    from models import create_phase

    phase = load_run_phase(demo_ws, "t-sup")
    labels = [r["label"] for r in split_rows(demo_ws, "demo", "train") if r["labeled"] and r["label"] in phase.classes]
    organized = [labels.count(c) for c in phase.classes]
    assert len(set(organized)) > 1, "the demo's classes are uneven: a bias has something to put back"
    assert evened_counts(demo_ws, phase, "demo", "class_weights") == organized
    plain = create_phase("supervised", phase.classes, pretrained=False, class_weights=False)
    assert evened_counts(demo_ws, plain, "demo", "oversample") == organized  # not the resampled counts
    assert evened_counts(demo_ws, plain, "demo", "undersample") == organized
    assert evened_counts(demo_ws, plain, "demo", "none") is None


def test_an_evaluation_cut_short_leaves_the_previous_one_whole(demo_ws, runs, monkeypatch) -> None:
    from app import plots

    first = evaluate_run(demo_ws, "t-sup", "val")
    folder = first.report.parent
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    meta_before = demo_ws.run_metadata("t-sup")["evaluation"]

    def cut_short(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl+C after the first figures of the new evaluation

    monkeypatch.setattr(plots, "roc_plot", cut_short)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(demo_ws, "t-sup", "test")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert demo_ws.run_metadata("t-sup")["evaluation"] == meta_before
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    test = evaluate_run(demo_ws, "t-sup", "test")  # keeps the val figures beside its own
    names = {p.name for p in folder.iterdir()}
    assert {"confusion_val.png", "confusion_test.png", "report.md"} <= names
    assert "test split" in test.report.read_text()


def test_an_ensemble_averages_classifier_runs_and_refuses_a_mix(demo_ws, runs) -> None:
    single = evaluate_run(demo_ws, "t-sup", "test").metrics
    twice = evaluate_ensemble(demo_ws, ["t-sup", "t-sup"], "test")  # the average of one run is that run
    for key in ("accuracy", "roc_auc_ovr", "anomaly_auroc", "n"):
        if key in twice:
            assert twice[key] == pytest.approx(single[key]), key
    assert twice["accuracy_at_val_threshold"] == pytest.approx(single["accuracy_at_val_threshold"])
    train(demo_ws, "demo", "supervised", run="t-sup-b", epochs=1, pretrained=False, seed=1, **TINY)
    pair = evaluate_ensemble(demo_ws, ["t-sup", "t-sup-b"], "test", tta=True)
    assert pair["n"] == single["n"] and 0.0 <= pair["roc_auc_ovr"] <= 1.0 and pair["runs"] == ["t-sup", "t-sup-b"]
    with pytest.raises(TrainingError, match="same classes"):
        evaluate_ensemble(demo_ws, ["t-sup", "t-vae"], "test")
    partners = ensemble_partners(demo_ws, "t-sup")  # what the Evaluate menu offers to average with
    assert "t-sup-b" in partners and not {"t-sup", "t-vae", "t-hyb"} & set(partners)
    assert ensemble_partners(demo_ws, "t-vae") == [] and ensemble_partners(demo_ws, "t-hyb") == []


@pytest.mark.parametrize("run", ["t-sup", "t-vae", "t-hyb"])
def test_onnx_export_matches_pytorch(demo_ws, runs, run) -> None:
    import onnxruntime as ort

    result = export_run(demo_ws, run)
    assert result.max_abs_diff <= (1e-3 if run == "t-hyb" else 1e-4)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    outputs = session.run(None, {"image": batch})
    assert outputs[0].shape[0] == 3, "the batch axis is dynamic"
    assert demo_ws.run_metadata(run)["export"]["sha256"] == result.sha256


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(demo_ws) -> None:
    straight = train(demo_ws, "demo", "vae", run="r-straight", epochs=3, latent_dim=4, **TINY)
    calls = iter([False, True])  # stop cleanly after the second epoch
    stopped = train(demo_ws, "demo", "vae", run="r-split", epochs=3, latent_dim=4,
                    should_stop=lambda: next(calls), **TINY)
    assert stopped.epochs_done == 2 and demo_ws.run_metadata("r-split")["status"] == "stopped"
    resumed = train(demo_ws, "demo", "vae", run="r-split")  # settings come from the checkpoint
    assert resumed.resumed_from == 2 and resumed.epochs_done == 3
    a = load_checkpoint(straight.path / "last.pt")["model_state"]
    b = load_checkpoint(resumed.path / "last.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = train(demo_ws, "demo", "vae", run="r-split")
    assert again.epochs_done == 3, "a finished run returns at once"


def test_a_weight_average_is_validated_kept_and_resumed_exactly(demo_ws) -> None:
    common = {"epochs": 2, "pretrained": False, "ema": 0.9, "backbone": "resnet18", **TINY}
    straight = train(demo_ws, "demo", "supervised", run="e-straight", **common)
    calls = iter([True])  # stop cleanly after the first epoch
    train(demo_ws, "demo", "supervised", run="e-split", should_stop=lambda: next(calls), **common)
    resumed = train(demo_ws, "demo", "supervised", run="e-split")
    assert resumed.resumed_from == 1 and resumed.epochs_done == 2
    a, b = load_checkpoint(straight.path / "last.pt"), load_checkpoint(resumed.path / "last.pt")
    assert all(torch.equal(a["ema_state"][k], b["ema_state"][k]) for k in a["ema_state"])
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    # What was validated (the average) is what the best checkpoint holds, not the last step's weights.
    # (Weights: the average's; batch-norm statistics: measured afresh for them, see _precise_bn.)
    best = load_checkpoint(straight.path / "best.pt")["model_state"]
    averaged = {k.removeprefix("module."): v for k, v in a["ema_state"].items() if k.startswith("module.")}
    weights = [k for k in best if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    if load_checkpoint(straight.path / "best.pt")["epoch"] == 2:
        assert all(torch.equal(best[k], averaged[k]) for k in weights)
    assert not all(torch.equal(best[k], a["model_state"][k]) for k in weights)
    with pytest.raises(TrainingError, match="between 0 and 1"):
        train(demo_ws, "demo", "supervised", run="e-bad", epochs=1, pretrained=False, ema=1.5, **TINY)


def test_the_weight_average_of_a_short_run_holds_its_steps_not_its_first_weights() -> None:
    """A fixed decay of 0.99 keeps 0.99^t of the first weights after t steps: a screened
    recipe of 18 steps was validated at 84% its initial weights. Bias-corrected, the
    average weighs the steps seen as the exponential average does, and tends to the decay."""
    from torch.optim.swa_utils import AveragedModel

    from app.training import _ema_update, ema_decay

    assert ema_decay(0.99, 0) == 0.0 and ema_decay(0.99, 1) == pytest.approx(0.99 / 1.99)
    assert ema_decay(0.99, 2000) == pytest.approx(0.99, abs=1e-9)
    model = torch.nn.Linear(1, 1, bias=False)
    average = AveragedModel(model, multi_avg_fn=_ema_update(0.99), use_buffers=True)
    for step in range(18):  # the weight walks from 0 to 17
        model.weight.data.fill_(float(step))
        average.update_parameters(model)
    shares = [0.99 ** (17 - step) for step in range(18)]
    expected = sum(share * step for step, share in enumerate(shares)) / sum(shares)  # about 8.7; 0.99 fixed: 1.5
    assert float(average.module.weight) == pytest.approx(expected, abs=1e-4)


def test_a_time_limited_run_fits_its_schedule_to_the_time_left(demo_ws, monkeypatch) -> None:
    from app import training
    from app.training import fitted_epochs

    assert fitted_epochs(3, 100, 2.0, 40.0) == 3 + 19  # 95% of the time left, whole epochs
    assert fitted_epochs(3, 10, 2.0, 400.0) == 10  # never more than planned
    assert fitted_epochs(3, 100, 2.0, -5.0) == 4  # out of time already: the next epoch ends it
    monkeypatch.setattr(training, "FIT_EPOCHS", 1)  # time one epoch, not three
    _slow_batches(monkeypatch, 0.05)  # 60 epochs take minutes on any device, a GPU included
    result = train(demo_ws, "demo", "supervised", run="tl", epochs=60, pretrained=False, backbone="resnet18",
                   time_limit_s=10.0, **TINY)
    meta = demo_ws.run_metadata("tl")
    planned = meta["config"]["epochs"]
    assert 1 < planned < 60, "the plan shrank to what fits"
    assert result.epochs_done <= planned and meta["status"] == "complete"
    assert load_checkpoint(result.path / "last.pt")["config"]["epochs"] == planned, "a resume keeps the fitted plan"


def _slow_batches(monkeypatch, seconds: float) -> None:
    """Every training batch takes at least ``seconds`` longer (a slow device, whatever this one is)."""
    from app import training

    augment = training._augment

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return augment(*args, **kwargs)

    monkeypatch.setattr(training, "_augment", slow)


def test_a_time_limited_run_plans_more_epochs_when_time_is_left(demo_ws, monkeypatch) -> None:
    """A plan guessed before anything was timed (a probe that counted CUDA's start-up) grows
    to what the time holds, up to max_epochs; the schedule is fitted to it; a resume keeps it."""
    from app import training

    seen: list[int] = []
    fitted = training.fitted_epochs
    monkeypatch.setattr(training, "fitted_epochs", lambda *a: seen.append(fitted(*a)) or seen[-1])
    monkeypatch.setattr(training, "FIT_EPOCHS", 1)
    result = train(demo_ws, "demo", "supervised", run="tl-grow", epochs=2, max_epochs=4, pretrained=False,
                   backbone="resnet18", time_limit_s=3600.0, **TINY)
    meta = demo_ws.run_metadata("tl-grow")
    assert seen[0] == 4 and set(seen) == {4} and meta["config"]["epochs"] == 4, "the plan grew to its ceiling"
    assert result.epochs_done == 4 and len(meta["history"]) == 4 and meta["status"] == "complete"
    assert load_checkpoint(result.path / "last.pt")["config"]["epochs"] == 4
    assert meta["setting_sources"]["epochs"] == "run" and meta["settings"]["training"]["epochs"] == 4, \
        "the run says it changed the plan it was given"
    assert meta["setting_sources"]["backbone"] == "user" and meta["setting_sources"]["channels"] == "dataset"
    assert load_checkpoint(result.path / "last.pt")["setting_sources"]["epochs"] == "run", "and a resume keeps it"
    assert training.fitted_epochs(1, 4, 2.0, 3600.0) == 4


def test_a_plan_refitted_mid_run_is_recorded_and_resumed_exactly(demo_ws, monkeypatch) -> None:
    """A load during the first epoch shrinks the plan to 3; when it is gone the plan grows back to
    6 and the schedule stretches from where it was. A run stopped after its third epoch and
    resumed follows the same stretched schedule to the same weights (the stretch is in last.pt)."""
    from app import training

    monkeypatch.setattr(training, "FIT_EPOCHS", 1)
    monkeypatch.setattr(training, "fitted_epochs", lambda done, ceiling, per_epoch, left: 3 if done == 1 else 6)
    monkeypatch.setattr(training.TimeBudget, "window", 1)  # refit on the next epoch, not nine later
    common = {"epochs": 6, "max_epochs": 6, "latent_dim": 4, "time_limit_s": 3600.0, **TINY}
    straight = train(demo_ws, "demo", "vae", run="tp-straight", **common)
    meta = demo_ws.run_metadata("tp-straight")
    assert [(p["after_epoch"], p["epochs"]) for p in meta["time_plan"]] == [(1, 3), (2, 6)]
    assert straight.epochs_done == 6 and meta["config"]["epochs"] == 6 and meta["status"] == "complete"
    report = evaluate_run(demo_ws, "tp-straight", "val").report.read_text()
    assert "## Time plan" in report and "| 2 |" in report and report.count("| 6 |") >= 1
    calls = iter([False, False, True])
    train(demo_ws, "demo", "vae", run="tp-split", should_stop=lambda: next(calls), **common)
    resumed = train(demo_ws, "demo", "vae", run="tp-split", time_limit_s=3600.0, max_epochs=6)
    assert resumed.resumed_from == 3 and resumed.epochs_done == 6
    assert len(demo_ws.run_metadata("tp-split")["time_plan"]) == 2, "the resumed run keeps the plan's record"
    a = load_checkpoint(straight.path / "last.pt")["model_state"]
    b = load_checkpoint(resumed.path / "last.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_time_limited_run_stops_at_its_fitted_plan_when_time_is_left(demo_ws, monkeypatch) -> None:
    # Epochs past the fitted plan would train at a learning rate of zero and show "Epoch 4/3".
    from app import training

    monkeypatch.setattr(training, "FIT_EPOCHS", 1)
    monkeypatch.setattr(training, "fitted_epochs", lambda done, planned, per_epoch, left: 3)
    result = train(demo_ws, "demo", "supervised", run="tl-plan", epochs=6, pretrained=False, backbone="resnet18",
                   time_limit_s=3600.0, **TINY)
    meta = demo_ws.run_metadata("tl-plan")
    assert meta["config"]["epochs"] == 3 and len(meta["history"]) == 3 and result.epochs_done == 3
    assert meta["status"] == "complete"


def test_mixup_blends_images_and_labels_alike() -> None:
    from app.training import mix_batch

    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone()
    labels = torch.tensor([0, 1, 2, 1])
    mixed, soft = mix_batch(images, labels, 3, 0.7, torch.Generator().manual_seed(0))
    partner = torch.randperm(4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(mixed[:, 0, 0, 0], 0.7 * images[:, 0, 0, 0] + 0.3 * images[partner, 0, 0, 0])
    assert torch.allclose(soft.sum(dim=1), torch.ones(4))
    for i in range(4):  # each target is the same blend of the two images' labels
        assert soft[i, labels[i]] >= 0.7 - 1e-6 and soft[i, labels[partner[i]]] >= 0.3 - 1e-6
    same, hard = mix_batch(images, labels, 3, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(same, images) and torch.equal(hard.argmax(1), labels)


def test_mixup_resumes_exactly_and_rejects_a_negative_alpha(demo_ws) -> None:
    common = {"epochs": 2, "pretrained": False, "backbone": "resnet18", **TINY}
    a = train(demo_ws, "demo", "supervised", run="m-a", mixup=0.4, **common)
    calls = iter([True])  # stop cleanly after the first epoch, then resume
    train(demo_ws, "demo", "supervised", run="m-b", mixup=0.4, should_stop=lambda: next(calls), **common)
    b = train(demo_ws, "demo", "supervised", run="m-b")
    assert b.resumed_from == 1 and b.epochs_done == 2
    plain = train(demo_ws, "demo", "supervised", run="m-plain", **common)
    wa, wb, wp = (load_checkpoint(r.path / "last.pt")["model_state"] for r in (a, b, plain))
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "a resumed run blends exactly as an uninterrupted one"
    assert not all(torch.equal(wa[k], wp[k]) for k in wa), "mixup changes what is learned"
    assert demo_ws.run_metadata("m-a")["config"]["mixup"] == 0.4
    with pytest.raises(TrainingError, match="Mixup"):
        train(demo_ws, "demo", "supervised", run="m-bad", mixup=-1.0, **common)


def test_the_kept_model_has_batch_norm_statistics_measured_for_its_weights(demo_ws) -> None:
    """Precise BN: the best checkpoint's running statistics are the plain average over
    training images with its own weights, not the trailing average gathered in training."""
    from torch.optim.swa_utils import update_bn

    from app.data import phase_images, split_rows
    from app.training import bn_image_count

    run = train(demo_ws, "demo", "supervised", run="bn", epochs=1, pretrained=False, backbone="resnet18", **TINY)
    phase = load_run_phase(demo_ws, run.run)
    rows = phase.select_rows(split_rows(demo_ws, "demo", "train"))
    images = torch.from_numpy(phase_images(demo_ws, phase, rows))
    spread = torch.linspace(0, len(images) - 1, bn_image_count(len(images))).long()
    kept = {k: v.clone() for k, v in phase.model.state_dict().items()}
    update_bn([images[spread[i : i + 16]] for i in range(0, len(spread), 16) if len(spread[i : i + 16]) > 1], phase.model)
    again = phase.model.state_dict()
    means = [k for k in kept if k.endswith("running_mean")]
    assert means and all(torch.allclose(kept[k], again[k], atol=1e-5) for k in means)
    last = load_checkpoint(run.path / "last.pt")["model_state"]
    assert not all(torch.allclose(last[k], kept[k], atol=1e-5) for k in means), "the training model is left as it was"


def test_batch_norm_is_re_measured_on_a_bounded_share_of_the_epoch() -> None:
    from app.training import bn_image_count

    assert bn_image_count(40) == 40  # small sets: every image
    assert bn_image_count(1188) == 128  # the fewest that pin the statistics
    assert bn_image_count(4096) == 256  # a sixteenth of the epoch
    assert bn_image_count(100_000) == 512  # the most


def test_a_crafted_pickle_checkpoint_is_refused_and_never_run(demo_ws, tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model_state": Exploit(), "model_args": {}}, handle)
    with pytest.raises(TrainingError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_training_errors_are_clear(demo_ws) -> None:
    with pytest.raises(DatasetError, match="Run Organize first"):
        train(demo_ws, "absent", "vae")
    with pytest.raises(TrainingError, match="needs a trained supervised run"):
        train(demo_ws, "demo", "hybrid", run="bad-hybrid")
    with pytest.raises(TrainingError, match="multiple of 16"):
        train(demo_ws, "demo", "vae", run="bad-vae", image_size=40)


def test_two_process_ddp_on_cpu(demo_ws, tmp_path) -> None:
    """torchrun starts two processes (gloo on loopback); they train one epoch together."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "main.py"), "train", "--dataset", "demo", "--phase", "supervised", "--epochs", "1",
               "--image-size", "32", "--batch-size", "8", "--run-name", "ddp", "--workspace", str(demo_ws.root)]
    # TMPDIR: torchrun's agent keeps a folder there, which a test must not leave in /tmp
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    meta = demo_ws.run_metadata("ddp")
    assert meta["status"] == "complete" and len(meta["history"]) == 1
    payload = load_checkpoint(demo_ws.run_dir("ddp") / "best.pt")
    assert not any(k.startswith("module.") for k in payload["model_state"]), "saved unwrapped"


def test_kill_9_mid_epoch_then_resume_ends_like_an_uninterrupted_run(demo_ws) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    settings = ["--epochs", "4", "--image-size", "32", "--batch-size", "8", "--seed", "3"]
    command = [sys.executable, str(ROOT / "main.py"), "train", "--dataset", "demo", "--phase", "supervised",
               *settings, "--workspace", str(demo_ws.root)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*command, "--run-name", "k-straight"], check=True, capture_output=True, timeout=600, env=env)
    victim = subprocess.Popen([*command, "--run-name", "k-killed"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env)
    meta = demo_ws.run_dir("k-killed") / "metadata.json"
    deadline = time.time() + 300
    while not (meta.exists() and '"epoch": 2' in meta.read_text()):
        assert victim.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.4)  # inside the third epoch
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert load_checkpoint(demo_ws.run_dir("k-killed") / "last.pt")["epoch"] < 4
    resumed = subprocess.run([*command, "--run-name", "k-killed"], capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0 and "Resuming k-killed" in resumed.stdout + resumed.stderr
    a = load_checkpoint(demo_ws.run_dir("k-straight") / "last.pt")
    b = load_checkpoint(demo_ws.run_dir("k-killed") / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    assert [h["val_auc"] for h in a["history"]] == [h["val_auc"] for h in b["history"]]


def test_a_checkpoint_from_an_older_model_is_a_clear_error() -> None:
    from app.checkpoints import rebuild_phase
    from models.cube3d import create_resnet3d

    state = create_resnet3d("resnet10", 8, 2).state_dict()
    state.pop(next(iter(state)))  # as if written before a layer was added
    payload = {"phase": "cube3d", "config": {"width": 8}, "classes": ["normal", "x"],
               "model_args": {"backbone": "resnet10", "width": 8, "num_classes": 2}, "model_state": state}
    with pytest.raises(TrainingError, match="written by an older version of the app"):
        rebuild_phase(payload)


def test_the_export_check_allows_each_output_its_own_rounding_spread_and_no_more() -> None:
    """ORT and PyTorch round differently; at a step of a normal tail that flips the output.
    Such inputs are excused by how far the output moves under rounding-size input noise;
    a graph that differs everywhere, or beyond that spread, is refused."""
    from app.export import parity_problem, rounding_spread

    class Step(torch.nn.Module):  # 1 above the step at 0.5, else 0: as a tail's empirical part
        def forward(self, x):
            return (x.flatten(1).mean(dim=1) >= 0.5).float()

    inputs = np.stack([np.full((1, 4, 4), v, np.float32) for v in (0.1, 0.5, 0.9, 0.3)])
    expected = [Step()(torch.from_numpy(inputs))]
    spread = rounding_spread(Step(), inputs, expected)
    assert spread[0][1] == 1.0 and not spread[0][[0, 2, 3]].any(), "only the input on the step moves"
    flipped = expected[0].numpy().copy()
    flipped[1] = 1 - flipped[1]  # the other engine rounds that one input to the other side
    assert parity_problem([flipped], [expected[0].numpy()], spread, 1e-4) == ""
    wrong = expected[0].numpy().copy()
    wrong[0] = 1.0  # far from any step: a wrong graph
    assert "rounding noise" in parity_problem([wrong], [expected[0].numpy()], spread, 1e-4)
    loose = [np.ones(4, np.float32)]
    assert "on 4 of 4 inputs" in parity_problem([expected[0].numpy() + 0.01], [expected[0].numpy()], loose, 1e-4)
