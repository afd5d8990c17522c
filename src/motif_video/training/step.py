"""One optimizer step: fetch, micro-batches with gradient accumulation, clipping, update, EMA.

The objective (training/objective.py) makes every draw per sample before the batch is split, so
`train.grad_accum` micro-batches change no input; each micro-batch's mean loss is weighted by its
share of the rank's batch, so the accumulated gradient is the full batch's. A step whose loss or
gradient is not finite on any rank is skipped on all of them and counted.
"""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist
from torch import Tensor

from motif_video.training.objective import first_frames, losses, make_inputs, step_kind
from motif_video.training.optim import lr_factor


def train_step(state, step: int) -> dict[str, float]:
    """`state`: the trainer's TrainState. Returns the step's metrics (loss averaged over ranks)."""
    cfg, world = state.cfg, state.world
    fetch = time.perf_counter()
    kind = step_kind(cfg, step)
    batch_size = (cfg.stage.image_batch_size or cfg.data.batch_size) if kind == "I" else cfg.data.batch_size
    batch = state.data.batch(step, batch_size, world.rank, world.size)
    data_seconds = time.perf_counter() - fetch
    if kind == "I" and batch["latents"].shape[2] > 1:
        batch = first_frames(batch)
    inputs = make_inputs(state, batch, step)
    b = inputs.xt.shape[0]

    repa_on = state.teacher is not None and (cfg.repa.until_step <= 0 or step < cfg.repa.until_step)
    device = world.device
    lr = cfg.optim.lr * lr_factor(step, cfg.optim, cfg.train.steps)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    state.optimizer.zero_grad(set_to_none=True)

    if b % cfg.train.grad_accum:
        raise ValueError(f"this rank's batch of {b} does not split into train.grad_accum={cfg.train.grad_accum} parts")
    micro = b // cfg.train.grad_accum
    loss_flow = torch.zeros((), device=device)
    loss_repa = torch.zeros((), device=device)
    for lo in range(0, b, micro):
        share = micro / b
        part_flow, part_repa = losses(state, inputs, slice(lo, lo + micro), repa_on)
        ((part_flow + cfg.repa.weight * part_repa) * share).backward()
        loss_flow = loss_flow + part_flow.detach() * share
        loss_repa = loss_repa + part_repa.detach() * share
    loss = loss_flow + cfg.repa.weight * loss_repa

    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in state.model.parameters() if p.requires_grad], cfg.optim.grad_clip
    )
    grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    finite = all_ranks(torch.isfinite(loss.detach()).float(), dist.ReduceOp.MIN).item() > 0
    if finite and math.isfinite(grad_norm):
        state.optimizer.step()
        state.ema.update(state.model)
    else:  # skip the update, count it; too many in a run stop it
        state.optimizer.zero_grad(set_to_none=True)
        state.skipped += 1
        if state.skipped > cfg.train.max_skipped_steps:
            raise FloatingPointError(
                f"{state.skipped} steps had a non-finite loss or gradient (limit train.max_skipped_steps="
                f"{cfg.train.max_skipped_steps}); lower optim.lr or check the data"
            )
    return {
        "step": step,
        "loss": all_ranks(loss_flow.detach().float(), dist.ReduceOp.SUM).item() / world.size,
        "repa_loss": all_ranks(loss_repa.detach().float(), dist.ReduceOp.SUM).item() / world.size,
        "grad_norm": grad_norm,
        "lr": lr,
        "tokens": inputs.tokens * b * world.size,
        "samples": b * world.size,
        "text_tokens": int(inputs.text_mask.shape[1]),
        "skipped": state.skipped,
        "data_seconds": data_seconds,  # waiting for the batch (the loop turns it into a share of the step)
        # how many of this rank's samples got the long / short / truncated caption (data with three variants)
        **({"caption_variants": inputs.variant_counts} if inputs.variant_counts is not None else {}),
    }


def all_ranks(x: Tensor, op) -> Tensor:
    if dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x, op=op)
    return x
