"""The denoising loop: from noise (t = 1) to data (t = 0) with a flow-matching scheduler.

Per step: the transformer predicts the velocity for the conditional (and, with guidance, the
unconditional) text, guidance combines them, the scheduler steps. The two guidance passes run
either as one batched call (the shorter text padded, a key mask marks the real tokens) or as two
calls, each text at its own length: no mask, so a GPU's fused attention kernels (flash, cuDNN)
apply, at the cost of launching every kernel twice. `resolve_passes("auto", device)` chooses:
batched on a CPU (one larger matmul is faster there, and there are no mask-free kernels to gain),
two calls on an accelerator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from motif_video.sampling.cache import StepCache
from motif_video.sampling.guidance import Guidance


@dataclass(frozen=True)
class Conditioning:
    """Everything the transformer gets besides the noisy latents, for cond and uncond text."""

    condition: Tensor  # [B, Z+1, F, H, W] first-frame latent | mask (zeros for text-to-video)
    text: Tensor  # [B, S, Dt]
    text_mask: Tensor  # [B, S]
    negative_text: Tensor | None  # [B, S', Dt]
    negative_mask: Tensor | None
    image_tokens: Tensor | None  # [B, M, Di]


PASSES = ("auto", "batched", "split")


def resolve_passes(passes: str, device: torch.device | str) -> str:
    """ "batched" or "split" for the guidance passes; "auto": batched on a CPU, split elsewhere."""
    if passes not in PASSES:
        raise ValueError(f"unknown guidance passes {passes!r}; choose one of {list(PASSES)}")
    if passes == "auto":
        return "batched" if torch.device(device).type == "cpu" else "split"
    return passes


def sample(
    transformer: torch.nn.Module,
    latents: Tensor,
    conditioning: Conditioning,
    scheduler,
    timesteps: Tensor,
    guidance: Guidance,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    cache: StepCache | None = None,
    passes: str = "batched",
    given: Tensor | None = None,
    trace: list[Tensor] | None = None,
) -> Tensor:
    """Run the loop; returns the final latents. `on_step(i, n)` is called after every step
    (progress displays, cancellation: raise from it to stop). `cache`: step caching (cache.py).
    `passes`: "batched" or "split" guidance passes (see the module text). `given`: clean latents
    [B, Z, N, h, w] of the first N latent frames (an extension's prefix): before every step those
    frames of the state are set to where the path puts them at that time, (1 - t) given + t noise,
    as training noised them (their own predictions are not trained), and at the end to `given`.
    `trace`: a list that receives the state before every step and the final one (len(timesteps) + 1
    tensors): the teacher's trajectory that distillation (training/distill.py) learns from."""
    c = conditioning
    if trace is not None:  # the scheduler records every state it steps to, whichever loop runs
        trace.append(latents)
        scheduler = _Traced(scheduler, trace)
    two = guidance.config.active
    hold = None if given is None else Hold(given, latents[:, :, : given.shape[2]].clone())
    if two and passes == "split":
        latents = _sample_split(transformer, latents, c, scheduler, timesteps, guidance, progress, on_step, cache, hold)
        return latents if hold is None else hold.final(latents)
    if two:
        # One batched pass for both texts: pad the shorter to the longer, masks mark the real tokens.
        text, mask = _stack_texts(c.text, c.text_mask, c.negative_text, c.negative_mask)
        image = None if c.image_tokens is None else torch.cat([c.image_tokens, c.image_tokens])
        condition = torch.cat([c.condition, c.condition])
    else:
        text, mask, image, condition = c.text, c.text_mask, c.image_tokens, c.condition
    dtype = next(transformer.parameters()).dtype
    text = text.to(dtype)  # the conditioning in the transformer's dtype, whatever the encoders ran in
    image = None if image is None else image.to(dtype)
    for i, t in enumerate(tqdm(timesteps, desc="denoising", disable=not progress)):
        latents = latents if hold is None else hold(latents, t)
        x = torch.cat([latents, latents]) if two else latents
        x = torch.cat([x, condition], dim=1).to(dtype)
        velocity = None
        if cache is not None:
            velocity = cache.lookup(transformer.modulated_input(x, t.expand(x.shape[0])), i, len(timesteps))
        if velocity is None:
            velocity = transformer(x, t.expand(x.shape[0]), text, mask, image).velocity
            if cache is not None:
                cache.store(velocity)
        cond, uncond = velocity.chunk(2) if two else (velocity, None)
        latents = scheduler.step(guidance(cond, uncond), t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(i, len(timesteps))
    return latents if hold is None else hold.final(latents)


class _Traced:
    """A scheduler that appends every state it returns to `trace`."""

    def __init__(self, scheduler, trace: list[Tensor]) -> None:
        self.scheduler, self.trace = scheduler, trace

    def step(self, *args, **kwargs) -> tuple:
        out = self.scheduler.step(*args, **kwargs)
        self.trace.append(out[0])
        return out


class Hold:
    """The given first latent frames of an extension, held on the flow path during sampling."""

    def __init__(self, given: Tensor, noise: Tensor) -> None:
        self.given, self.noise = given.to(noise), noise

    def __call__(self, latents: Tensor, t: Tensor) -> Tensor:
        s = (t.float() / 1000.0).to(latents.dtype)  # timesteps are on the 0..1000 scale: sigma = t / 1000
        latents = latents.clone()
        latents[:, :, : self.given.shape[2]] = (1 - s) * self.given + s * self.noise
        return latents

    def final(self, latents: Tensor) -> Tensor:
        latents = latents.clone()
        latents[:, :, : self.given.shape[2]] = self.given
        return latents


def _sample_split(
    transformer, latents, c: Conditioning, scheduler, timesteps, guidance, progress, on_step, cache, hold
):
    """The loop with the conditional and unconditional passes as two calls, each text unpadded."""
    dtype = next(transformer.parameters()).dtype
    texts = [(c.text.to(dtype), c.text_mask), (c.negative_text.to(dtype), c.negative_mask)]
    image = None if c.image_tokens is None else c.image_tokens.to(dtype)
    for i, t in enumerate(tqdm(timesteps, desc="denoising", disable=not progress)):
        latents = latents if hold is None else hold(latents, t)
        x = torch.cat([latents, c.condition], dim=1).to(dtype)
        times = t.expand(x.shape[0])
        velocity = None
        if cache is not None:
            velocity = cache.lookup(transformer.modulated_input(x, times), i, len(timesteps))
        if velocity is None:
            velocity = torch.cat([transformer(x, times, text, mask, image).velocity for text, mask in texts])
            if cache is not None:
                cache.store(velocity)
        cond, uncond = velocity.chunk(2)
        latents = scheduler.step(guidance(cond, uncond), t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(i, len(timesteps))
    return latents


def _stack_texts(text: Tensor, mask: Tensor, neg: Tensor, neg_mask: Tensor) -> tuple[Tensor, Tensor]:
    length = max(text.shape[1], neg.shape[1])

    def pad(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        extra = length - x.shape[1]
        return torch.nn.functional.pad(x, (0, 0, 0, extra)), torch.nn.functional.pad(m, (0, extra))

    (a, am), (b, bm) = pad(text, mask), pad(neg, neg_mask)
    return torch.cat([a, b]), torch.cat([am, bm])
