"""AdamW and the learning-rate schedule (linear warmup, then constant or cosine to a floor)."""

from __future__ import annotations

import math

import torch
from torch import nn

from motif_video.training.config import OptimSection


def build_optimizer(params: list[nn.Parameter], cfg: OptimSection) -> torch.optim.AdamW:
    # No weight decay on vectors (norm scales, biases), as in most DiT recipes.
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def lr_factor(step: int, cfg: OptimSection, total_steps: int) -> float:
    """Multiplier of the base lr at `step` (0-based)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
