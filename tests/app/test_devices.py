"""Where training runs (MEDANOMALY_DEVICE, Runtime) and what must hold on a GPU.

The first tests run anywhere; those marked ``gpu`` run where PyTorch sees a CUDA device
(``MEDANOMALY_DEVICE=cuda ./test.sh -m gpu``) and skip with the reason elsewhere.
"""

from __future__ import annotations

import pytest
import torch

from core.errors import DeviceError
from app.runtime import Runtime, current_runtime

TINY = {"image_size": 32, "batch_size": 16}


def test_the_device_named_in_the_environment_is_used_or_refused_clearly(monkeypatch) -> None:
    monkeypatch.setenv("MEDANOMALY_DEVICE", "cpu")
    assert current_runtime().device == "cpu" and current_runtime().describe().startswith("CPU (")
    monkeypatch.setenv("MEDANOMALY_DEVICE", "tpu")
    with pytest.raises(DeviceError, match="use 'cpu', 'cuda' or 'cuda:N'"):
        current_runtime()
    if not torch.cuda.is_available():
        monkeypatch.setenv("MEDANOMALY_DEVICE", "cuda")
        with pytest.raises(DeviceError, match="sees no CUDA device.*Unset it to run on the CPU"):
            current_runtime()


def test_exact_mode_turns_tf32_and_kernel_races_off_on_a_gpu_and_puts_them_back() -> None:
    """Runtime.exact only flips PyTorch's switches; no GPU is needed to see them flipped."""
    backends = torch.backends
    before = (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32, backends.cudnn.deterministic,
              backends.cudnn.benchmark)
    with Runtime("cuda:0").exact():
        assert not backends.cudnn.allow_tf32 and not backends.cuda.matmul.allow_tf32
        assert backends.cudnn.deterministic and not backends.cudnn.benchmark
    assert (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32, backends.cudnn.deterministic,
            backends.cudnn.benchmark) == before
    with Runtime("cpu").exact():  # nothing to change on the CPU
        assert (backends.cudnn.allow_tf32, backends.cudnn.deterministic) == before[::2]


def test_a_run_records_the_device_it_trained_on_and_its_report_names_it(demo_ws) -> None:
    from app.evaluate import evaluate_run
    from app.training import train

    train(demo_ws, "demo", "supervised", run="dev-cpu", epochs=1, pretrained=False, backbone="resnet18", **TINY)
    device = demo_ws.run_metadata("dev-cpu")["device"]
    assert device == current_runtime().describe()
    evaluate_run(demo_ws, "dev-cpu", "test")
    assert f"- trained on: {device}" in (demo_ws.run_dir("dev-cpu") / "evaluation" / "report.md").read_text()


@pytest.mark.gpu
def test_a_gpu_trained_run_names_its_gpu_and_exports(demo_ws, monkeypatch) -> None:
    """Trained on the GPU (mixed precision), checked and exported on the CPU in float32."""
    from app.export import export_run
    from app.training import train

    monkeypatch.setenv("MEDANOMALY_DEVICE", "cuda")
    train(demo_ws, "demo", "supervised", run="dev-gpu", epochs=2, pretrained=False, backbone="resnet18", **TINY)
    meta = demo_ws.run_metadata("dev-gpu")
    assert meta["device"] == current_runtime().describe() and "CPU" not in meta["device"]
    assert export_run(demo_ws, "dev-gpu").max_abs_diff <= 1e-4


def test_two_dimensional_networks_train_channels_last_on_the_cpu_and_are_kept_plain(demo_ws, monkeypatch) -> None:
    """The layout is a speed choice only: the same outputs, the usual layout after training."""
    from app.runtime import fast_layout, plain_layout
    from app.training import train
    from models.cube3d import create_resnet3d
    from models.supervised import ClassifierPhase, create_backbone

    net = create_backbone("resnet10t", 2, pretrained=False).eval()
    x = torch.rand(3, 1, 32, 32)
    before = net(x)
    fast_layout(net, "cpu")
    conv = net.layer1[0].conv1.weight  # (the first conv, one channel in, is both layouts at once)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert torch.allclose(net(x), before, atol=1e-5)
    assert plain_layout(net).layer1[0].conv1.weight.is_contiguous()
    assert fast_layout(create_backbone("resnet10t", 2, pretrained=False), "cuda:0").layer1[0].conv1.weight.is_contiguous()
    volume = fast_layout(create_resnet3d("resnet10", 8, 2), "cpu")
    assert all(p.is_contiguous() for p in volume.parameters())

    seen = []
    step = ClassifierPhase.step

    def watching(self, batch):
        seen.append(self.model.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last))
        return step(self, batch)

    monkeypatch.setattr(ClassifierPhase, "step", watching)
    train(demo_ws, "demo", "supervised", run="layout", epochs=1, pretrained=False, backbone="resnet10t", **TINY)
    assert seen and all(seen)
    from app.checkpoints import load_checkpoint

    saved = load_checkpoint(demo_ws.run_dir("layout") / "best.pt")["model_state"]
    fresh = create_backbone("resnet10t", len(demo_ws.run_metadata("layout")["classes"]), pretrained=False)
    fresh.load_state_dict(saved)  # a checkpoint written channels-last loads into a plain model


def test_the_cpu_optimizer_is_adamw_fused_with_the_same_updates_and_state(demo_ws, monkeypatch) -> None:
    """The fused kernel is a speed choice only: the same steps to float rounding, a state that
    an unfused optimizer's checkpoint loads into, and the training loop and its time probe use it."""
    import copy

    from app import timing, training
    from app.runtime import optimizer_options
    from models.supervised import create_backbone

    assert optimizer_options("cpu") == {"fused": True} and optimizer_options("cuda:0") == {}

    def step(optimizer, net, grads=None):
        if grads is None:
            optimizer.zero_grad()
            net(torch.rand(4, 1, 32, 32)).square().mean().backward()
        else:
            for p, g in zip(net.parameters(), grads):
                p.grad = g.clone()
        optimizer.step()

    torch.manual_seed(0)
    one = create_backbone("resnet10t", 2, pretrained=False)
    plain = torch.optim.AdamW(one.parameters(), lr=1e-2, weight_decay=0.05)
    for _ in range(2):
        step(plain, one)  # a state with moments and a step count, as a checkpoint holds
    two = create_backbone("resnet10t", 2, pretrained=False)
    two.load_state_dict(one.state_dict())
    fused = torch.optim.AdamW(two.parameters(), lr=1e-2, weight_decay=0.05, **optimizer_options("cpu"))
    # a run checkpointed before the change resumes with it (a copy, as a checkpoint file gives:
    # loading a live state dict shares its tensors)
    fused.load_state_dict(copy.deepcopy(plain.state_dict()))
    step(plain, one)
    step(fused, two, [p.grad for p in one.parameters()])  # the same gradients, one step each
    # (compared step by step: over several steps Adam amplifies rounding where gradients are near 0)
    for a, b in zip(one.parameters(), two.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), "the fused step computes what the plain one does"
    for a, b in zip(plain.state_dict()["state"].values(), fused.state_dict()["state"].values()):
        assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-10) for k in a)

    made = []
    real = torch.optim.AdamW

    def watching(*args, **kwargs):
        made.append(kwargs.get("fused"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", watching)
    timing.probe_seconds_per_epoch(create_backbone("resnet10t", 2, pretrained=False), (1, 32, 32), 64, 8)
    training.train(demo_ws, "demo", "supervised", run="fused", epochs=1, pretrained=False, backbone="resnet10t", **TINY)
    assert made == [True, True], "the probe and the training loop step as each other"
