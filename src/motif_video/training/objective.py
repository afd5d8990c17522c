"""The objective: what a batch is turned into, and the loss of a (micro-)batch.

    batch ─ make_inputs ─▶ Inputs (x_t, t, target velocity, text, condition, route, pixels) ─ losses ─▶ flow, REPA

Every random draw is made per sample, from a generator seeded by (seed, step, global sample index):
noise, time, caption dropout, caption variant and the TREAD route of a sample do not depend on how
the global batch is split over ranks or micro-batches, and a resumed run repeats what the interrupted
one would have done. The step (training/step.py) decides nothing here; it only slices `Inputs`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from motif_video.model.routing import Route
from motif_video.training.alignment import repa_loss, resample_tokens
from motif_video.training.distill import trajectory_inputs
from motif_video.training.flow import (
    TIMESTEP_SCALE,
    flow_loss,
    interpolate,
    resolution_shift,
    sample_times,
    velocity_target,
    without_detail,
)
from motif_video.training.parallel import autocast


def sample_generator(seed: int, step: int, index: int) -> torch.Generator:
    """The generator of sample `index` (global, over ranks) at `step`; index -1: the step's own draws."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 100_003 + index)


def step_kind(cfg, step: int) -> str | None:
    """ "I" (an image batch) or "V" (a video batch) from a curriculum stage's interleave pattern."""
    return cfg.stage.interleave[step % len(cfg.stage.interleave)] if cfg.stage.name else None


def first_frames(batch: dict) -> dict:
    """An image batch from a video batch: the first latent frame (the causal VAE encodes the first
    frame alone, so it is that frame's image latent), and the first pixel frame for REPA."""
    out = {**batch, "latents": batch["latents"][:, :, :1]}
    if "video" in batch:
        out["video"] = batch["video"][:, :, :1]
    return out


def variant_index(probabilities: tuple[float, float, float], generator: torch.Generator) -> int:
    """0 (long), 1 (short) or 2 (truncated), drawn with the given probabilities."""
    u = torch.rand(1, generator=generator).item()
    return 0 if u < probabilities[0] else 1 if u < probabilities[0] + probabilities[1] else 2


def without_words(caption: str, probability: float, generator: torch.Generator) -> str:
    """The caption with each word left out with `probability` (at least one word is kept)."""
    words = caption.split()
    if probability <= 0 or not words:
        return caption
    kept = [
        w for w, u in zip(words, torch.rand(len(words), generator=generator).tolist(), strict=True) if u >= probability
    ]
    return " ".join(kept) if kept else words[int(torch.randint(0, len(words), (1,), generator=generator))]


def caption_variant(caption: str, probabilities: tuple[float, float, float], generator: torch.Generator) -> str:
    """For data with one caption: the caption, a short one (its first clause) or a truncated one (cut
    after a random word), with the given probabilities (the report's 0.5 / 0.3 / 0.2 in its curriculum).
    Data with its own three variants draws among them with `variant_index` instead."""
    if probabilities[0] >= 1.0:
        return caption
    u = torch.rand(1, generator=generator).item()
    words = caption.split()
    if u < probabilities[0] or len(words) < 3:
        return caption
    if u < probabilities[0] + probabilities[1]:
        return re.split(r" and | on | with |, ", caption, maxsplit=1)[0]
    keep = 2 + int(torch.randint(0, len(words) - 2, (1,), generator=generator))
    return " ".join(words[:keep])


def pure_noise_share(cfg, step: int) -> float:
    """The share of step `step`'s samples trained at t = 1: `flow.noise_phase_fraction` inside the
    phase `flow.noise_phase` (shares of the run: [0.5, 0.9] of 1,000 steps is steps 500..899),
    `flow.noise_fraction` elsewhere. (A phase at pure noise, where the caption alone must say what
    the clip is, is where the shapes-tiny model learns what a direction word means; the steps after
    it bring back the rest of the path.)"""
    start, end = (round(share * cfg.train.steps) for share in cfg.flow.noise_phase)
    return cfg.flow.noise_phase_fraction if start <= step < end else cfg.flow.noise_fraction


@dataclass
class Inputs:
    """One rank's batch, ready for the model: every per-sample draw made."""

    xt: Tensor  # [B, Z, F, H, W] noised latents
    t: Tensor  # [B] times in [0, 1]
    target: Tensor  # [B, Z, F, H, W] velocity
    condition: Tensor  # [B, Z + 1, F, H, W] first-frame latent and mask (image-to-video), else zeros
    text: Tensor | None  # [B, S, D] states (None: token ids for the word-level encoder trained here)
    ids: Tensor | None  # [B, S] token ids of the word-level encoder
    text_mask: Tensor
    image_tokens: Tensor | None
    route: Route | None
    pixels: Tensor | None  # [B, 3, F', H', W'] for the REPA teacher
    tokens: int  # video tokens per sample
    loss_from: int  # the first latent frame in the loss (after an extension's conditioned prefix)
    sample_weights: Tensor | None  # [B] weights of the samples in the loss (None: all 1)
    variant_counts: list[int] | None  # samples given the long / short / truncated caption


def make_inputs(state, batch: dict, step: int) -> Inputs:
    """All draws of step `step` for this rank's `batch` (`state`: the trainer's TrainState)."""
    cfg, world = state.cfg, state.world
    model_cfg = state.model.transformer.cfg
    x0 = batch["latents"]
    b, z, frames, height, width = x0.shape
    first = world.rank * b  # global index of this rank's first sample
    gens = [sample_generator(cfg.train.seed, step, first + i) for i in range(b)]
    tokens = model_cfg.num_video_tokens(frames, height, width)
    flow = cfg.flow
    shift = resolution_shift(tokens, flow.shift, flow.base_tokens)

    noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens])
    at_one = pure_noise_share(cfg, step)
    t = torch.cat([sample_times(1, g, flow.timesteps, flow.logit_mean, flow.logit_std, shift, at_one) for g in gens])
    drop = torch.cat([torch.rand(1, generator=g) < flow.caption_dropout for g in gens])

    text = ids = None
    variants = cfg.stage.caption_variants
    # the data's own [long, short, truncated] captions (a captioner wrote them), drawn with the stage's probabilities
    given = batch.get("caption_variants") or [None] * b
    pick = [variant_index(variants, g) for g in gens] if variants[0] < 1.0 and all(given) else None
    if state.model.text_encoder is not None or state.frozen_text is not None:  # captions are encoded here
        if pick is not None:
            captions = [v[i] for v, i in zip(given, pick, strict=True)]
        else:
            captions = [caption_variant(c, variants, g) for c, g in zip(batch["captions"], gens, strict=True)]
        if flow.word_dropout > 0:  # a stream of its own (index -3 - i), so the other draws do not move
            captions = [
                without_words(c, flow.word_dropout, sample_generator(cfg.train.seed, step, -3 - first - i))
                for i, c in enumerate(captions)
            ]
        captions = ["" if d else c for d, c in zip(drop.tolist(), captions, strict=True)]  # dropped: empty prompt
        if state.model.text_encoder is not None:  # trained with the transformer: encoded inside the graph
            ids, text_mask = state.model.text_encoder.tokenize(captions)
        else:
            text, text_mask = state.frozen_text.encode(captions)
    else:
        text, text_mask = batch["text"], batch["text_mask"]
        if pick is not None and "text_variants" in batch:  # precomputed states of the three caption variants
            rows, chosen = torch.arange(b), torch.tensor(pick)
            text, text_mask = batch["text_variants"][chosen, rows], batch["text_variant_masks"][chosen, rows]
        text = torch.where(drop[:, None, None], state.data.null_text, text)
        text_mask = torch.where(drop[:, None], state.data.null_mask, text_mask)

    # The condition, for a whole batch at a time (the model takes one set of image tokens per batch):
    # image-to-video (the first latent frame), or extension (a random prefix of latent frames, the loss
    # on the frames after it), or none.
    u = torch.rand(1, generator=sample_generator(cfg.train.seed, step, -1)).item()
    prefix = 0  # conditioned latent frames
    if frames > 1 and u < flow.i2v_fraction:
        prefix = 1
    elif frames > 1 and u < flow.i2v_fraction + flow.prefix_fraction:
        prefix = 1 + int(torch.randint(0, frames - 1, (1,), generator=sample_generator(cfg.train.seed, step, -2)))
    condition = torch.zeros(b, z + 1, frames, height, width)
    image_tokens = None
    if prefix:
        condition[:, :z, :prefix] = x0[:, :, :prefix]
        condition[:, z, :prefix] = 1.0
        image_tokens = batch.get("image_tokens")
    loss_from = prefix if u >= flow.i2v_fraction else 0  # image-to-video keeps the loss on every frame
    # a clip whose caption does not say where its object is (free_layout) teaches continuing a video, not
    # text-to-video: without a condition it is left out of the loss
    free = batch.get("free_layout")
    sample_weights = (~free).float() if free is not None and bool(free.any()) and not prefix else None

    route = None
    if cfg.tread.enabled:
        keep = max(1, round(tokens * cfg.tread.keep_ratio))
        last = cfg.tread.last_block(model_cfg.num_dual_blocks + model_cfg.num_single_blocks)
        chosen = torch.stack([torch.rand(tokens, generator=g).argsort()[:keep].sort().values for g in gens])
        route = Route(cfg.tread.start, last, chosen.to(world.device))

    pixels = None
    if state.teacher is not None:
        pixels = batch["video"] if "video" in batch else state.data.pixels(x0)
    if "trajectory" in batch:  # a distillation: the teacher's states, not a noised clip (training/distill.py)
        xt, t, target = trajectory_inputs(batch["trajectory"], state.data.sigmas, cfg.distill.objective, t, gens)
    else:
        xt, target = interpolate(x0, noise, t), velocity_target(x0, noise)
        if flow.detail_dropout > 0:  # drawn last, so a run without it keeps its random stream
            low, high = flow.detail_times
            chosen = torch.cat([torch.rand(1, generator=g) < flow.detail_dropout for g in gens])
            chosen &= (t >= low) & (t <= high)
            if chosen.any():
                dropped = without_detail(x0[chosen], noise[chosen], t[chosen], flow.detail_from)
                xt[chosen], target[chosen] = dropped  # both fresh tensors of this step
    return Inputs(
        xt,
        t,
        target,
        condition,
        text,
        ids,
        text_mask,
        image_tokens,
        route,
        pixels,
        tokens,
        loss_from,
        sample_weights,
        None if pick is None else [pick.count(i) for i in range(3)],
    )


def losses(state, inputs: Inputs, rows: slice, repa_on: bool) -> tuple[Tensor, Tensor]:
    """(flow loss, REPA loss) of the samples `rows` of `inputs`, in the autograd graph."""
    cfg, device = state.cfg, state.world.device
    transformer = state.model.transformer
    with autocast(cfg.train.precision, device):
        if inputs.ids is not None:  # the word-level encoder, inside autocast and the graph
            text = state.model.text_encoder(inputs.ids[rows].to(device), inputs.text_mask[rows].to(device))
        else:
            text = inputs.text[rows].to(device)
        route = None if inputs.route is None else Route(inputs.route.start, inputs.route.end, inputs.route.keep[rows])
        out = transformer(
            torch.cat([inputs.xt[rows], inputs.condition[rows]], dim=1).to(device),
            (inputs.t[rows] * TIMESTEP_SCALE).to(device),
            text,
            inputs.text_mask[rows].to(device),
            None if inputs.image_tokens is None else inputs.image_tokens[rows].to(device),
            route=route,
            capture=[cfg.repa.block] if repa_on else (),
        )
        weights = None if inputs.sample_weights is None else inputs.sample_weights[rows]
        velocity = inputs.target[rows].to(device)
        flow = flow_loss(out.velocity, velocity, inputs.loss_from, cfg.flow.channel_weights, weights)
        repa = torch.zeros((), device=device)
        if repa_on:
            frames, height, width = inputs.xt.shape[2:]
            student = out.features[cfg.repa.block]  # [B, L or K, D]
            teacher_tokens, grid = state.teacher(inputs.pixels[rows].to(device))
            target = resample_tokens(teacher_tokens, grid, (frames, height // 2, width // 2))
            if route is not None and route.start <= cfg.repa.block < route.end:
                target = route.gather(target)  # the end block scatters before capture
            repa = repa_loss(state.model.projector(student), target)
    return flow, repa
