"""torch.distributed glue: the same script runs alone or under ``torchrun`` unchanged.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) each process joins the default
process group (NCCL on GPUs, gloo on CPU), uses the GPU ``LOCAL_RANK`` when on CUDA, sees a
distinct shard of the training subjects every epoch and a shard of the validation volumes;
only rank 0 writes logs, TensorBoard and checkpoints.
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext", "init_distributed", "shard_indices", "wrap_ddp", "unwrap", "mean_over_ranks"]


@dataclass
class DistContext:
    """Rank information of this process (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: Called by :meth:`close` (e.g. releasing the run-folder locks).
    on_close: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` when not distributed).

        A collective: every rank must call it. Tensors inside ``obj`` come back on the CPU.
        """
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, _to_bytes(obj))
        return [_from_bytes(data) for data in out]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a collective; tensors come back on the CPU)."""
        if not self.distributed:
            return obj
        box: list[Any] = [_to_bytes(obj) if self.is_main else None]  # rank 0's bytes on every rank after the call
        dist.broadcast_object_list(box, src=0)
        return _from_bytes(box[0])

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        return any(self.gather(bool(flag)))

    def close(self) -> None:
        while self.on_close:
            self.on_close.pop()()
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _to_bytes(obj: Any) -> bytes:
    """``obj`` serialised with ``torch.save``.

    ``all_gather_object`` pickles tensors through torch's legacy storage path, which fails to
    load some dtypes (``uint32``, e.g. the NumPy RNG state in a checkpoint's ``rng``); the
    zip serialisation of ``torch.save`` handles every dtype, and the bytes pickle plainly.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by ``torchrun``; return the context and the device.

    On CUDA each process takes the GPU ``LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank), device


def shard_indices(n: int, ctx: DistContext) -> list[int]:
    """Indices ``rank, rank + world_size, ...`` of ``range(n)``: disjoint, covering, no padding."""
    return list(range(ctx.rank, n, ctx.world_size))


def wrap_ddp(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel when distributed, else the model itself."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return cast(nn.Module, model.module) if hasattr(model, "module") else model


def mean_over_ranks(sums: Mapping[str, float], steps: int, ctx: DistContext) -> dict[str, float]:
    """Per-step means of the sums, averaged over processes."""
    parts = ctx.gather({k: v / max(steps, 1) for k, v in sums.items()})
    return {k: sum(p[k] for p in parts) / len(parts) for k in sums}
