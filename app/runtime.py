"""Where training runs: CPU or GPU, one process or many (torchrun / DistributedDataParallel).

Under ``torchrun`` every process runs the same command; the environment (RANK,
WORLD_SIZE, LOCAL_RANK) says which part it plays. Rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.errors import DeviceError


@dataclass(frozen=True)
class Runtime:
    device: str
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def autocast(self) -> Any:
        """Mixed precision on GPU (bfloat16 where supported, else float16); nothing on CPU."""
        import torch

        if not self.cuda:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def synchronize(self) -> None:
        """Wait for the GPU's queued work, so that a clock read after it measures that work."""
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def exact(self) -> Iterator[None]:
        """Full float32, same result every time, on the GPU (nothing changes on the CPU).

        By default CUDA convolutions use TF32 (a 10-bit mantissa: about 1e-3 relative) and
        cuDNN picks its fastest, not always deterministic, algorithm. What a run keeps and
        compares later on the CPU or in ONNX Runtime (the best epoch's validation figures,
        the VAE's choice of score, batch-norm statistics) is computed without either.
        """
        if not self.cuda:
            yield
            return
        import torch

        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                 torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved

    def describe(self) -> str:
        """The device in words, for tables and reports: 'CPU (2 cores)', 'NVIDIA H200'."""
        if self.cuda:
            import torch

            name = torch.cuda.get_device_name(torch.device(self.device))
            return name + (f" x {self.world}" if self.world > 1 else "")
        return f"CPU ({os.cpu_count() or 1} cores)"

    def scaler(self) -> Any:
        """A gradient scaler for float16 on GPU; a no-op otherwise."""
        import torch

        enabled = self.cuda and not torch.cuda.is_bf16_supported()
        return torch.amp.GradScaler("cuda", enabled=enabled)


def fast_layout(model: Any, device: str) -> Any:
    """``model`` in the memory layout its training runs fastest in on ``device``; the values
    are unchanged, only their order in memory.

    On the CPU, 2-D convolutional networks train faster channels-last (NHWC): oneDNN's
    convolutions work in that order and otherwise reorder every activation
    (``python benchmarks/layout.py``, 2 cores of an AMD EPYC, batch 128: EfficientNet-B0
    64 px 2.0x, RegNetX-200MF 1.6x, ResNet-10-T 64 px 1.3x, with CBAM 1.2x, the 32 px
    ResNets and the VAE 1.0-1.15x, ConvNeXt-atto 1.0x). 3-D networks gained 1.08x and stay
    as they are; so does the GPU, where this was not measured.
    """
    import torch

    if device == "cpu" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        return model.to(memory_format=torch.channels_last)
    return model


def plain_layout(model: Any) -> Any:
    """``model`` back in the usual (contiguous) layout, for whatever comes after training."""
    import torch

    if any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters()):
        return model.to(memory_format=torch.contiguous_format)
    return model


def optimizer_options(device: str) -> dict[str, Any]:
    """Keyword arguments for ``torch.optim.AdamW`` on ``device``.

    On the CPU, the fused kernel: one vectorized pass over each parameter tensor instead of
    a dozen tensor operations per parameter called one by one from Python (torch's default
    on the CPU; its multi-tensor path is no faster there). AdamW's step for ResNet-18 took
    34 ms, fused 7 (2 cores of an AMD EPYC); profiled, the step had been 16% of an epoch of
    PneumoniaMNIST at 32 px. The update is the same arithmetic, to float rounding (tested),
    and the optimizer's state the same, so a run resumes across the change. The GPU keeps
    torch's default (its multi-tensor path), not measured here.
    """
    return {"fused": True} if device == "cpu" else {}


def current_runtime() -> Runtime:
    """The runtime of this process, joining the process group under torchrun."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = os.environ.get("MEDANOMALY_DEVICE", "").strip().lower()
    if wanted and wanted != "cpu" and not wanted.startswith("cuda"):
        raise DeviceError(f"MEDANOMALY_DEVICE is {wanted!r}; use 'cpu', 'cuda' or 'cuda:N' (or unset it).")
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"MEDANOMALY_DEVICE is {wanted!r} but PyTorch (torch {torch.__version__}) sees no "
                          "CUDA device: no GPU or driver here, or a CPU-only build of torch. Unset it to run "
                          "on the CPU.")
    if wanted == "cuda":
        device = f"cuda:{local}"
    elif wanted:
        device = wanted
    elif torch.cuda.is_available():
        device = f"cuda:{local}"
    else:
        device = "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Runtime(device, rank, world)


@contextlib.contextmanager
def wrapped_for_training(model: Any, runtime: Runtime) -> Iterator[Any]:
    """The model as the training step should call it: DDP-wrapped when there are several processes."""
    if runtime.world == 1:
        yield model
        return
    from torch.nn.parallel import DistributedDataParallel

    ids = [int(runtime.device.split(":")[1])] if runtime.cuda else None
    yield DistributedDataParallel(model, device_ids=ids)


def barrier(runtime: Runtime) -> None:
    if runtime.world > 1:
        import torch.distributed as dist

        dist.barrier()
