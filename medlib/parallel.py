"""Training in several processes (`accelerate launch`): which process this is, FSDP2 sharding of the blocks that
train, and the all-reduces the training loop makes itself (docs/several_processes.md)."""

from __future__ import annotations

import atexit
import os

import torch
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor


def data_parallel() -> tuple[int, int]:
    """(rank, number of processes). Under `accelerate launch` with several processes, accelerate's
    `PartialState` joins the process group (NCCL on GPUs, gloo on CPUs); otherwise (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    # imported here: only under accelerate launch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True is what selects gloo
    _leave_process_group_at_exit()
    return state.process_index, state.num_processes


_LEAVE_REGISTERED = False


def _leave_process_group_at_exit() -> None:
    """Tear the process group down before the interpreter does. Left to interpreter shutdown, the
    backend's C++ threads are destroyed while still joinable, and a process that got there first
    aborts ("terminate called without an active exception", SIGABRT) after its work is done, which
    fails the whole launch. A barrier first, so no process leaves while another still talks to it."""
    global _LEAVE_REGISTERED
    if _LEAVE_REGISTERED:
        return

    def leave():
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()

    atexit.register(leave)
    _LEAVE_REGISTERED = True


def shard_trained_blocks(model: torch.nn.Module) -> list:
    """FSDP2 (`fully_shard`) on every block of each stack of repeated blocks (decoder / encoder
    layers: nearly all of a 7B model's weights) in which something trains; each process then holds
    1/N of those blocks' weights, gradients and optimizer state, and gathers a block's weights only
    while it runs. Stacks that are wholly frozen stay whole in every process: a frozen encoder may
    run for only some processes' samples (box augmentation), and FSDP needs every process to run
    every sharded block. Gradients are summed, not averaged, across processes (the loss is already
    weighted by each process's share). Returns the sharded blocks."""

    chosen, prefixes = [], []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) < 2 or len({type(b) for b in mod}) != 1:
            continue
        if any(name.startswith(p + ".") for p in prefixes) or not any(q.requires_grad for q in mod.parameters()):
            continue
        prefixes.append(name)
        for block in mod:
            fully_shard(block)
            block.set_gradient_divide_factor(1.0)
            block.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
            chosen.append(block)
    return chosen


def is_sharded(t: torch.Tensor) -> bool:
    return isinstance(t, DTensor)


def clip_sharded(params: list[torch.Tensor], max_norm: float) -> None:
    """`clip_grad_norm_` over sharded (DTensor) and whole gradients together: the squared norms of the
    shards are summed across processes; the whole ones are already the same in every process."""
    grads = [p.grad for p in params if p.grad is not None]
    local = [g.to_local() if is_sharded(g) else g for g in grads]
    zero = torch.zeros((), dtype=torch.float64, device=local[0].device)
    sharded = sum((x.double().pow(2).sum() for g, x in zip(grads, local) if is_sharded(g)), zero)
    whole = sum((x.double().pow(2).sum() for g, x in zip(grads, local) if not is_sharded(g)), zero)
    torch.distributed.all_reduce(sharded)
    coef = min(1.0, max_norm / (float((sharded + whole).sqrt()) + 1e-6))
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)


def sum_across_processes(tensors: list[torch.Tensor]) -> None:
    """All-reduce (sum) a list of tensors in place, as one flat buffer."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    torch.distributed.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
