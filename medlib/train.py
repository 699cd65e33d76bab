"""The one training loop: AdamW with warm-up, gradient accumulation and clipping, bf16 autocast
on GPU, checkpoints that a resumed run continues from exactly, the loss curve, a progress bar.

The loop knows nothing about the three papers: it takes a list of samples, a `collate`
function that turns a list of samples into a batch, and a `loss_fn(model, batch) -> loss` (or
`(loss, n)` for a mean over n items, e.g. answer tokens).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medlib import fileio
from medlib.parallel import (
    clip_sharded,
    data_parallel,
    is_sharded,
    shard_trained_blocks,
    sum_across_processes,
)


@dataclass
class TrainConfig:
    num_epochs: int = 1              # passes over the training samples
    lr: float = 1e-4                 # AdamW peak learning rate
    batch_size: int = 16             # samples per micro-batch
    grad_accum: int = 1              # micro-batches per optimizer step
    warmup_ratio: float = 0.05       # share of optimizer steps spent warming up linearly
    schedule: str = "linear"         # after warm-up: "linear" decays to 0 at the budget's last step; "plateau" holds
                                     # the peak and halves it at each validation check without a new lowest loss
    weight_decay: float = 0.0        # AdamW weight decay
    max_grad_norm: float = 1.0       # gradient clipping; 0 turns it off
    seed: int = 0                    # order of samples in every epoch
    checkpoint_every: int = 0        # optimizer steps between checkpoints; 0 = none
    desc: str = "train"              # progress-bar label
    fsdp: bool = False               # with several processes, shard the trained blocks (also: accelerate launch --use_fsdp)
    length_groups: int = 0           # with `lengths`: sort each run of this many shuffled batches by length (0: off)
    validate_every: int = 0          # with `validate`: optimizer steps between validation-loss checks
    patience: int = 0                # with `validate`: checks without a new lowest loss before stopping (0: never stops)


def epoch_order(num_samples: int, seed: int, epoch: int, lengths: Sequence[int] | None = None,
                batch_size: int = 1, length_groups: int = 0) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) only, so a resumed run sees
    exactly the batches an uninterrupted one would. With `lengths` and `length_groups` k, each run of
    k batches of the shuffled order is sorted by length (stably), so a batch holds samples of about one
    length and pads little; which samples meet in a run stays random (Hugging Face's `group_by_length`)."""
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    if lengths is None or length_groups <= 0:
        return order
    lengths = np.asarray(lengths)
    if len(lengths) != num_samples:
        raise ValueError(f"epoch_order: {len(lengths)} lengths for {num_samples} samples")
    run = batch_size * length_groups
    return np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")] for chunk in np.split(order, list(range(run, num_samples, run)))])


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def use_fsdp(config: TrainConfig) -> bool:
    return config.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


def train(model: torch.nn.Module, samples: Sequence, collate: Callable, loss_fn: Callable, config: TrainConfig,
          device: torch.device | str = "cpu", checkpoint_path: str | Path | None = None,
          stop_after_steps: int | None = None, lengths: Sequence[int] | None = None,
          validate: Callable | None = None) -> dict:
    """Train the parameters of `model` that require grad. Returns the loss curve and timings.

    With `checkpoint_path`, state is saved every `config.checkpoint_every` optimizer steps and,
    if a checkpoint exists there, training resumes from it. `stop_after_steps` ends early
    (what a crash would do), for testing resume.

    `lengths` (one per sample, e.g. its token count) with `config.length_groups` batch samples of about
    one length together (`epoch_order`): less padding, the same samples every epoch.

    `loss_fn` returns the loss, or `(loss, n)` when the loss is a mean over `n` items other than the batch's
    samples (answer tokens, say). Under `accelerate launch --num_processes N` each process takes every N-th sample
    of each global batch and the gradients are summed across processes, each weighted by its share of the items
    (`_accumulate`): the same update and loss curve as one process. The model is not wrapped (loss functions may
    call its submodules): an explicit all-reduce, not DDP.

    Early stopping: with `validate(model) -> loss` and `config.validate_every` k > 0, the validation loss
    is computed every k optimizer steps and at the end; training stops after `config.patience` checks without a
    new lowest loss (0: never stops early) and the trainable weights of the lowest check are put back.
    `num_epochs` is then the most the run may train: every arm of an ablation trains to its own
    plateau within one budget. The checks are returned as `val_curve`, the chosen step as `best_step`.
    """
    device = torch.device(device)
    rank, world = data_parallel()
    if len(samples) == 0:
        raise ValueError("train: no training samples")
    if validate is not None and config.validate_every <= 0:
        raise ValueError("train: validate needs config.validate_every > 0 (optimizer steps between validation checks)")
    params, whole, sharded, opt = _optimizer(model, config, device, world)
    micro_per_epoch = math.ceil(len(samples) / config.batch_size)
    total_steps = max(1, math.ceil(micro_per_epoch * config.num_epochs / config.grad_accum))
    sched = _scheduler(opt, config, total_steps)
    ckpt, state = _resume(checkpoint_path, bool(sharded), model, opt, sched, config)

    model.train()
    started = time.time()
    bar = tqdm(total=micro_per_epoch * config.num_epochs, initial=state["micro_step"], desc=config.desc, unit="batch",
               mininterval=1.0, disable=rank != 0)
    running = []
    micro = 0
    for epoch in range(config.num_epochs):
        order = epoch_order(len(samples), config.seed, epoch, lengths, config.batch_size, config.length_groups)
        for b in range(micro_per_epoch):
            micro += 1
            if micro <= state["micro_step"]:
                continue  # done before the resume
            chunk = order[b * config.batch_size:(b + 1) * config.batch_size]
            running.append(_accumulate(model, [samples[i] for i in chunk], collate, loss_fn, config, device, params,
                                       bool(sharded), state["step"]))
            state["micro_step"] = micro
            bar.update(1)
            if micro % config.grad_accum == 0 or micro == micro_per_epoch * config.num_epochs:
                _update(params, whole, sharded, opt, sched, config)
                state["step"] += 1
                state["loss_curve"].append([state["step"], float(np.mean(running))])
                bar.set_postfix(loss=f"{np.mean(running):.3f}")
                running = []
                if validate is not None and state["step"] % config.validate_every == 0:
                    if _check(model, validate, state, config.patience):
                        state["patience_ran_out"] = True
                        break
                    if config.schedule == "plateau" and state["best_step"] != state["step"]:
                        sched.base_lrs = [lr / 2 for lr in sched.base_lrs]  # kept in the scheduler's state: resumes keep it
                if ckpt and config.checkpoint_every and state["step"] % config.checkpoint_every == 0 and rank == 0:
                    _save_checkpoint(ckpt, model, opt, sched, state, config)  # after the check: a resume repeats none
                if stop_after_steps is not None and state["step"] >= stop_after_steps:
                    bar.close()
                    return {**_public(state), "stopped_early": True}
        else:
            continue
        break  # early stopping: patience ran out
    _finish(model, validate, state, config, sharded)
    bar.close()
    return {**_public(state), "train_seconds": round(time.time() - started, 2), "total_steps": total_steps, "processes": world,
            **({"fsdp_blocks": len(sharded)} if sharded else {})}


def _scheduler(opt, config: TrainConfig, total_steps: int):
    """Warm-up, then a linear decay to 0 at the budget's end, or ("plateau") a constant rate that the loop halves at
    each validation check without a new lowest loss."""
    # imported here: heavy (about 2 s to import): only where a model trains
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    if config.schedule not in ("linear", "plateau"):
        raise ValueError(f"train: schedule must be 'linear' or 'plateau', not {config.schedule!r}")
    warmup = int(config.warmup_ratio * total_steps)
    # "plateau" lets early stopping find each arm's own plateau: a linear decay tied to the budget keeps validation
    # loss falling until the budget's last step, so the budget, not the arm, would decide when training ends
    if config.schedule == "linear":
        return get_linear_schedule_with_warmup(opt, warmup, total_steps)
    return get_constant_schedule_with_warmup(opt, warmup)


def _resume(checkpoint_path, sharded: bool, model, opt, sched, config: TrainConfig) -> tuple:
    """(the checkpoint file or None, the loop's state): a fresh state, or the one a checkpoint there holds."""
    state = {"micro_step": 0, "step": 0, "loss_curve": [], "val_curve": [], "best_step": None, "best_loss": None, "best_weights": None,
             "patience_ran_out": False}
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    if sharded and ckpt:
        ckpt = None  # a checkpoint of sharded weights would need every process's shard; not written
        print("train: FSDP run, so no resumable checkpoints are written (checkpoint_every ignored)")
    if ckpt and ckpt.exists():
        state = _load_checkpoint(ckpt, model, opt, sched, config)
    return ckpt, state


def _finish(model, validate, state: dict, config: TrainConfig, sharded) -> None:
    """After the last step: the end of the budget is a validation check too, the weights of the lowest validation
    loss are put back, and the model is left whole and in eval mode."""
    if validate is not None and (not state["val_curve"] or state["val_curve"][-1][0] != state["step"]):
        _check(model, validate, state, config.patience)
    if state["best_weights"] is not None:
        model.load_state_dict(state["best_weights"], strict=False)
    for block in sharded:  # evaluation runs in every process on whole weights, as without FSDP
        block.unshard()
        block.set_reshard_after_forward(False)
    model.eval()


def _optimizer(model, config: TrainConfig, device: torch.device, world: int) -> tuple:
    """(trainable parameters, those whose gradients this loop sums across processes, FSDP's sharded blocks, AdamW).
    Under data parallelism every process starts from rank 0's weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: the model has no trainable parameters (check the trainable set)")
    sharded = []
    if world > 1:  # every process starts from rank 0's weights
        for p in params:
            torch.distributed.broadcast(p.data, 0)
        if use_fsdp(config):
            sharded = shard_trained_blocks(model)
            params = [p for p in model.parameters() if p.requires_grad]  # now DTensors where sharded
    whole = [p for p in params if not is_sharded(p)] if sharded else params  # FSDP reduces the sharded ones' gradients
    if sharded:  # sharded and whole parameters in separate groups: one foreach kernel never mixes them
        groups = [{"params": [p for p in params if is_sharded(p)]}, {"params": whole}]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=device.type == "cuda")
    return params, whole, sharded, opt


def _accumulate(model, chunk: list, collate: Callable, loss_fn: Callable, config: TrainConfig, device, params,
                sharded: bool, step: int) -> float:
    """One micro-batch (`chunk`: the global batch's samples): this process's share of it forward and backward, its
    gradient weighted by the share of the items the global batch's loss averages over. Returns the batch's loss."""
    rank, world = data_parallel()
    mine = chunk[rank::world]
    loss, weight = None, 0.0  # a last batch smaller than the number of processes leaves some without samples
    idle = not len(mine) and sharded  # FSDP needs every process in every block: run one sample at weight 0
    if len(mine) or idle:
        batch = collate(mine if len(mine) else chunk[:1])
        with _autocast(device):
            out = loss_fn(model, batch)
        loss, weight = out if isinstance(out, tuple) else (out, len(mine))
        weight = 0.0 if idle else float(weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train: loss became {loss.item()} at step {step} (try a lower lr)")
    total = weight
    if world > 1:  # every process's share of what the global batch's loss averages over
        counts = torch.tensor([weight], dtype=torch.float64, device=params[0].device)
        sum_across_processes([counts])
        total = counts.item()
    share = weight / total if total else 0.0
    seen = 0.0
    if loss is not None:
        (loss * share / config.grad_accum).backward()
        seen = loss.item() * share
    if world > 1:
        total = torch.tensor([seen], dtype=torch.float64, device=params[0].device)
        sum_across_processes([total])
        seen = total.item()
    return seen


def _update(params, whole, sharded, opt, sched, config: TrainConfig) -> None:
    """One optimizer step: gradients summed across processes, clipped, applied; the schedule advanced."""
    _, world = data_parallel()
    if world > 1:
        for p in whole:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if whole:
            sum_across_processes([p.grad for p in whole])
    if config.max_grad_norm and sharded:
        clip_sharded(params, config.max_grad_norm)
    elif config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def _check(model, validate: Callable, state: dict, patience: int) -> bool:
    """One validation check (model in eval mode, no gradients); True when patience has run out."""
    model.eval()
    with torch.no_grad():
        loss = float(validate(model))
    model.train()
    state["val_curve"].append([state["step"], loss])
    if state["best_step"] is None or loss < state["best_loss"]:
        state["best_step"], state["best_loss"], state["best_weights"] = state["step"], loss, trainable_state(model)
    since = sum(1 for s, _ in state["val_curve"] if s > state["best_step"])
    return patience > 0 and since >= patience


def _public(state: dict) -> dict:
    """What a run records: the state without the kept weights."""
    return {k: v for k, v in state.items() if k != "best_weights"}


def trainable_state(model: torch.nn.Module) -> dict:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    # Buffers (e.g. BatchNorm running statistics) belong with the weights that use them.
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k in names or not any(k == n for n, _ in model.named_parameters())}


def _save_checkpoint(path: Path, model, opt, sched, state: dict, config: TrainConfig) -> None:
    blob = {"model": trainable_state(model), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "state": state, "config": asdict(config), "torch_rng": torch.get_rng_state()}
    fileio.write_with(path, lambda p: torch.save(blob, p))


# What a checkpoint continues: training with another of these would resume someone else's run.
RESUME_KEYS = ("num_epochs", "lr", "batch_size", "grad_accum", "warmup_ratio", "weight_decay", "max_grad_norm", "seed",
               "length_groups", "validate_every", "patience")


def _load_checkpoint(path: Path, model, opt, sched, config: TrainConfig) -> dict:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"{path}: not a readable medlib checkpoint ({type(err).__name__}: {err}); delete it to start over") from err
    if not isinstance(blob, dict) or "model" not in blob or "state" not in blob:
        raise ValueError(f"{path}: not a medlib training checkpoint (no 'model'/'state' entries)")
    saved, now = blob.get("config", {}), asdict(config)
    differ = [k for k in RESUME_KEYS if k in saved and saved[k] != now[k]]
    if differ:
        raise ValueError(f"{path}: the checkpoint was written by training with {', '.join(f'{k}={saved[k]!r}' for k in differ)}; "
                         f"this training has {', '.join(f'{k}={now[k]!r}' for k in differ)}; delete it (medlib run --force) to start over")
    missing, unexpected = model.load_state_dict(blob["model"], strict=False)
    if unexpected:
        raise ValueError(f"{path}: checkpoint holds weights this model does not have, e.g. {unexpected[:3]}")
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["torch_rng"])
    return blob["state"]


def remove_checkpoint(path: str | Path | None) -> None:
    if path:
        Path(path).unlink(missing_ok=True)  # several processes may remove it at once
