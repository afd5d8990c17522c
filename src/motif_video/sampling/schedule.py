"""Noise schedules: diffusers' flow-matching schedulers, configured from the weights' `scheduler/`.

Flow time runs from t = 1 (pure noise) to t = 0 (data); the transformer sees t * 1000. Euler uses
sigmas `linspace(1, 1/N, N)` with the config's static `shift` (sigma -> shift*s / (1 + (shift-1)*s)),
or, when the config turns dynamic shifting on, a shift that grows with the number of video tokens
(`mu`, FLUX-style). DPM-Solver++ and UniPC run in their flow-matching mode with the same shift.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from motif_video.sampling import SCHEDULERS


def load_scheduler(config: dict[str, Any], name: str | None = None, shift: float | None = None):
    """A scheduler from a `scheduler_config.json` dict; `name` and `shift` override it."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if name is not None and name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {list(SCHEDULERS)}")
    if shift is not None and not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    kind = name or {
        "DPMSolverMultistepScheduler": "dpm++",
        "UniPCMultistepScheduler": "unipc",
    }.get(config.get("_class_name", ""), "euler")
    base_shift = config.get("shift", config.get("flow_shift", 1.0))
    shift = base_shift if shift is None else shift
    if kind == "euler":
        if config.get("_class_name") == "FlowMatchEulerDiscreteScheduler":
            return FlowMatchEulerDiscreteScheduler.from_config(config, shift=shift)
        return FlowMatchEulerDiscreteScheduler(shift=shift)
    flow = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    if kind == "dpm++":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **flow)
    return UniPCMultistepScheduler(solver_order=2, **flow)


def set_timesteps(scheduler, steps: int, video_tokens: int, device: torch.device | str) -> torch.Tensor:
    """Prepare `scheduler` for `steps` steps; returns its timesteps (on the 0..1000 scale)."""
    if steps < 1:
        raise ValueError(f"the number of steps must be >= 1, got {steps}")
    from diffusers import FlowMatchEulerDiscreteScheduler

    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        config = scheduler.config
        sigmas = np.linspace(1.0, 1 / steps, steps)
        scheduler.set_timesteps(sigmas=sigmas, mu=dynamic_shift_mu(video_tokens, config), device=device)
    else:
        scheduler.set_timesteps(steps, device=device)
    return scheduler.timesteps


def dynamic_shift_mu(video_tokens: int, config) -> float:
    """log-shift for dynamic shifting, linear in the token count (used only when the config enables it)."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return video_tokens * slope + base_shift - slope * base_len
