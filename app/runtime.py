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

    def scaler(self) -> Any:
        """A gradient scaler for float16 on GPU; a no-op otherwise."""
        import torch

        enabled = self.cuda and not torch.cuda.is_bf16_supported()
        return torch.amp.GradScaler("cuda", enabled=enabled)


def current_runtime() -> Runtime:
    """The runtime of this process, joining the process group under torchrun."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = os.environ.get("MEDANOMALY_DEVICE", "")
    if wanted:
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
