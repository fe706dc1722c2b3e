"""Process groups, model wrapping (DDP or FSDP2) and full state dicts through PyTorch's engine.

Launch with ``torchrun --nproc_per_node K -m iha train CONFIG``: the environment variables torchrun
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) are all this
module reads. gloo serves CPUs, nccl GPUs. Without them everything runs in one process and the
helpers below are no-ops.

State dicts go through :mod:`torch.distributed.checkpoint.state_dict` with full (unsharded)
tensors offloaded to the CPU, so a checkpoint written by an FSDP run, a DDP run or a single
process is the same file, keyed by parameter names, and loads into any of them.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    """Where this process sits: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU when there is one, else the CPU."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device {preference!r} is not a device: use auto, cpu, cuda or cuda:N ({e})"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={preference!r} but no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {preference!r}: there are only {torch.cuda.device_count()} CUDA devices"
            )
    return device


def setup(device: str = "auto", backend: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    initialized_here = False
    if world > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if dev.type == "cuda" else None,
        )
        initialized_here = True
    if dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    return DistInfo(rank, world, local_rank, dev, initialized_here)


def teardown(info: DistInfo) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, strategy: str, info: DistInfo) -> nn.Module:
    """The module to call for training steps.

    ``ddp``: :class:`~torch.nn.parallel.DistributedDataParallel` (gradients all-reduced,
    averaged). ``fsdp``: FSDP2 ``fully_shard`` applied to each of :func:`outer_blocks` and then
    to the root, in place (parameters become sharded DTensors; the returned module is ``model``
    itself). One process: ``model`` unchanged.
    """
    if not info.distributed:
        return model
    if strategy == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        try:
            from torch.distributed.fsdp import fully_shard
        except ImportError:  # torch < 2.6
            from torch.distributed._composable.fsdp import fully_shard

        for block in outer_blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"distributed.strategy={strategy!r}: accepted values are 'ddp', 'fsdp'")


def outer_blocks(model: nn.Module) -> list[nn.Module]:
    """Elements of the outermost :class:`~torch.nn.ModuleList` s (e.g. a decoder's layers).

    These are the FSDP units: each gathers its parameters for its own forward and backward.
    ModuleLists nested inside a block stay part of that block.
    """
    blocks: list[nn.Module] = []
    taken: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(t + ".") for t in taken) or not isinstance(module, nn.ModuleList):
            continue
        taken.append(name)
        blocks.extend(module)
    return blocks


# torch.distributed.checkpoint is imported inside these functions: it takes seconds to import.


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full model state dict on rank 0 (CPU tensors); empty on other ranks. Collective."""
    from torch.distributed.checkpoint import state_dict as sd

    options = sd.StateDictOptions(full_state_dict=True, cpu_offload=True)
    return sd.get_model_state_dict(model, options=options)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Full optimizer state dict keyed by parameter names, on rank 0. Collective."""
    from torch.distributed.checkpoint import state_dict as sd

    options = sd.StateDictOptions(full_state_dict=True, cpu_offload=True)
    return sd.get_optimizer_state_dict(model, optimizer, options=options)


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (every rank passes the whole dict) into a plain/DDP/FSDP model."""
    from torch.distributed.checkpoint import state_dict as sd

    sd.set_model_state_dict(model, state, options=sd.StateDictOptions(full_state_dict=True))


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a full optimizer state dict written by :func:`full_optimizer_state`."""
    from torch.distributed.checkpoint import state_dict as sd

    options = sd.StateDictOptions(full_state_dict=True)
    sd.set_optimizer_state_dict(model, optimizer, state, options=options)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``t`` over all ranks (in place; returns ``t``)."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Maximum of ``t`` over all ranks (in place; returns ``t``)."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``obj`` of every rank, in rank order (on every rank)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
