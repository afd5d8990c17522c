"""The rectified-flow convention, stated once and used everywhere (training and sampling).

    x_t = (1 - t) * x0 + t * noise,   t in [0, 1]: t = 0 is data, t = 1 is pure noise.
    target velocity v = dx_t/dt = noise - x0; the loss is the mean squared error of the prediction.
    Sampling integrates from t = 1 down to t = 0: x_{t - dt} = x_t - dt * v.
    The transformer receives 1000 * t as its timestep (the diffusers schedulers' scale).

Training times: logit-normal (SD3's choice, Esser et al. 2024: sigmoid of a normal; more steps at
mid noise) or uniform, then shifted towards noise for larger videos,
t' = s t / (1 + (s - 1) t) with s = shift * sqrt(tokens / base_tokens): more tokens keep more
signal at a given t, so they need more noise to be as hard (SD3, Sec. 5.3.2). Optionally a share of
the times is set to exactly 1: at pure noise the model must produce the condition's mean clip, which a
small model trained for minutes learns only from many such samples.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TIMESTEP_SCALE = 1000.0


def shift_times(t: Tensor, shift: float) -> Tensor:
    return shift * t / (1 + (shift - 1) * t)


def resolution_shift(num_tokens: int, base_shift: float, base_tokens: int) -> float:
    return base_shift * math.sqrt(num_tokens / base_tokens)


def sample_times(
    batch: int,
    generator: torch.Generator,
    kind: str = "logit_normal",
    mean: float = 0.0,
    std: float = 1.0,
    shift: float = 1.0,
    noise_fraction: float = 0.0,
) -> Tensor:
    """[batch] training times in (0, 1]: the drawn and shifted times, each replaced by 1 (pure noise,
    where only the condition tells what the clip is) with probability `noise_fraction`."""
    if kind == "logit_normal":
        t = torch.sigmoid(mean + std * torch.randn(batch, generator=generator))
    elif kind == "uniform":
        t = torch.rand(batch, generator=generator)
    else:
        raise ValueError(f"unknown timestep sampling {kind!r}; choose 'logit_normal' or 'uniform'")
    t = shift_times(t, shift)
    if noise_fraction > 0:  # drawn after the times, so a run without it keeps its random stream
        t = torch.where(torch.rand(batch, generator=generator) < noise_fraction, torch.ones_like(t), t)
    return t


def interpolate(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t for per-sample times t [B]."""
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    return noise - x0


def without_detail(x0: Tensor, noise: Tensor, t: Tensor, first: int) -> tuple[Tensor, Tensor]:
    """x_t and velocity target [B, Z, ...] of clips whose channels from `first` on are left out of x_t (noise
    alone there, as at t = 1), the target still the whole clip: the velocity v = (x_t - x0) / t whose clean
    estimate x_t - t v is x0. The model must draw those channels from the condition and the other channels."""
    kept = x0.clone()
    kept[:, first:] = 0  # the normalised latents' mean: a patch with no detail
    xt = interpolate(kept, noise, t)
    return xt, (xt - x0) / t.view(-1, *([1] * (x0.dim() - 1))).to(x0)


def flow_loss(
    prediction: Tensor,
    target: Tensor,
    first_frame: int = 0,
    channel_weights: tuple[float, ...] = (),
    sample_weights: Tensor | None = None,
) -> Tensor:
    """Mean squared error over the latent frames from `first_frame` on (the frames before it are a
    given condition: extension training), computed in float32; with `channel_weights`, each latent
    channel's squared error times its weight; with `sample_weights` [B], each sample's (a sample of
    weight 0 adds nothing, the mean is still over all B, so micro-batches add up to the batch)."""
    error = (prediction[:, :, first_frame:].float() - target[:, :, first_frame:].float()).square()
    if channel_weights:
        error = error * torch.tensor(channel_weights, device=error.device).view(1, -1, *[1] * (error.dim() - 2))
    if sample_weights is not None:
        error = error * sample_weights.to(error.device, error.dtype).view(-1, *[1] * (error.dim() - 1))
    return error.mean()
