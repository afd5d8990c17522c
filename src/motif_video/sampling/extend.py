"""Longer videos than the model makes at once: extension and storyboards.

    video ─ its last N latent frames ─▶ condition (mask 1) ─ pipeline(prompt) ─▶ segment
    video + segment without the N frames' pixels ─▶ the longer video

Each new segment is generated with the end of what exists as its condition, and the frames that
reproduce that end are dropped, so the segments join without a repeated frame:
- `overlap = 1`: the last frame alone, as a first-frame (image-to-video) condition: what any model
  trained for image-to-video can do (the released 2B weights: its first-frame latent and mask
  channel, and the frame's image tokens). Appearance carries over the seam, motion only as far as
  the prompt asks for it.
- `overlap = N > 1`: the last 4 (N - 1) + 1 frames, encoded as a clip of their own (N latent frames,
  as the causal VAE encodes a clip's start), for models trained with a prefix condition
  (`flow.prefix_fraction`): motion carries across the seam too.
Chained segments drift in colour and brightness; `match_colors` (on by default) moves every new
segment's per-channel mean and spread to the first segment's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from motif_video.sampling import HANDOVER_FRAMES


@dataclass
class Extended:
    frames: np.ndarray  # [F, H, W, 3] uint8, the whole video
    seams: list[int] = field(default_factory=list)  # index of each segment's first new frame
    prompts: list[str] = field(default_factory=list)
    overlap: int = 0  # latent frames each segment was conditioned on


def overlap_frames(overlap: int, temporal: int) -> int:
    """Pixel frames of `overlap` latent frames at the start of a clip (causal VAE)."""
    return temporal * (overlap - 1) + 1


def default_overlap(pipe) -> int:
    """2 latent frames for a model trained with a prefix condition (its manifest's config says so), else 1."""
    config = (pipe.manifest or {}).get("config", {})
    return 2 if config.get("flow", {}).get("prefix_fraction", 0) > 0 else 1


def check_video(pipe, video: np.ndarray, overlap: int, segment_frames: int) -> None:
    """Clear errors for a video the model cannot continue."""
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a video [frames, height, width, 3], got shape {video.shape}")
    frames, height, width = video.shape[:3]
    pipe.check_request(["x"], height, width, segment_frames, 1)
    size = (pipe.manifest or {}).get("defaults", {})
    if size.get("height") and (height, width) != (size["height"], size["width"]):
        raise ValueError(
            f"the video is {width}x{height}; this model makes {size['width']}x{size['height']} (the size it was "
            "trained on): resize the video or generate one with it"
        )
    temporal = pipe.vae.temporal_factor
    latent_frames = (segment_frames - 1) // temporal + 1
    if latent_frames < 2:
        raise ValueError(
            f"segments of {segment_frames} frames leave nothing to add: continuing a video needs segments of at "
            f"least {temporal + 1} frames"
        )
    if not 1 <= overlap < latent_frames:
        raise ValueError(
            f"--overlap must be 1 to {latent_frames - 1} latent frames for {segment_frames}-frame segments"
        )
    if frames < overlap_frames(overlap, temporal):
        raise ValueError(
            f"the video has {frames} frames; an overlap of {overlap} latent frames needs the last "
            f"{overlap_frames(overlap, temporal)}"
        )


@torch.no_grad()
def extend(
    pipe,
    video: np.ndarray,
    prompts: list[str],
    *,
    overlap: int | None = None,
    frames: int = 17,
    match_colors: bool = True,
    handover: int = HANDOVER_FRAMES,
    reference: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = True,
    **options,
) -> Extended:
    """`video` [F, H, W, 3] uint8 continued by one segment per prompt (`frames` each, the overlap
    included); `options` go to the pipeline call (steps, guidance, negative_prompt, ...).
    `reference`: the frames whose colour statistics the new segments are matched to (default `video`)."""
    if not prompts:
        raise ValueError("at least one segment is needed (--segments >= 1, or a storyboard with prompts)")
    overlap = default_overlap(pipe) if overlap is None else overlap
    check_video(pipe, video, overlap, frames)
    temporal = pipe.vae.temporal_factor
    keep = overlap_frames(overlap, temporal)
    out, seams = video, []
    stats = color_stats(reference if reference is not None else video)
    for i, prompt in enumerate(prompts):
        tail = torch.from_numpy(out[-keep:]).permute(3, 0, 1, 2).float() / 127.5 - 1  # [3, keep, H, W]
        kwargs = dict(image=tail[:, -1] if overlap == 1 else tail[:, 0])  # the frame that gives image tokens
        if overlap > 1:
            with pipe._on_device(pipe.vae):
                kwargs["prefix"] = pipe.vae.encode(tail[None], sample=False)[0]  # [Z, overlap, h, w]
        height, width = out.shape[1:3]
        result = pipe(
            prompt, height=height, width=width, frames=frames, seed=seed + i, progress=progress, **kwargs, **options
        )
        made = result.uint8()[0]
        if match_colors:
            made = match_color_stats(made, stats)
        segment = hand_over(out[-1], made[keep - 1], made[keep:], handover)  # the frames after the given ones
        seams.append(len(out))
        out = np.concatenate([out, segment])
    return Extended(out, seams, list(prompts), overlap)


def hand_over(given: np.ndarray, remade: np.ndarray, segment: np.ndarray, frames: int) -> np.ndarray:
    """`segment` [F, H, W, 3] with the difference between the video's last frame `given` and the model's
    own rendering of that moment `remade` (the condition frame, which a new segment draws again with its
    own noise: another texture, a slightly other colour) added to its first `frames` frames, fading
    linearly to nothing, so the change is spread over those frames instead of landing on one."""
    if frames <= 0:
        return segment
    delta = given.astype(np.float64) - remade.astype(np.float64)
    fade = np.clip(1 - np.arange(1, len(segment) + 1) / (frames + 1), 0, None)  # 1 - j / (frames + 1), then 0
    out = segment.astype(np.float64) + fade[:, None, None, None] * delta
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def color_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over all pixels of `frames` [F, H, W, 3]."""
    pixels = frames.reshape(-1, 3).astype(np.float64)
    return pixels.mean(axis=0), pixels.std(axis=0) + 1e-6


def match_color_stats(frames: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`frames` with each channel's mean and spread moved to `stats` (drift control)."""
    mean, std = color_stats(frames)
    target_mean, target_std = stats
    matched = (frames.astype(np.float64) - mean) / std * target_std + target_mean
    return np.clip(np.round(matched), 0, 255).astype(np.uint8)


def storyboard(pipe, prompts: list[str], *, frames: int, height: int, width: int, seed: int = 0, **options) -> Extended:
    """One segment per prompt: the first from text alone, each next one extending the video."""
    if not prompts:
        raise ValueError("the storyboard has no prompts")
    for i, prompt in enumerate(prompts, 1):  # every prompt readable before the first segment is made
        try:
            with pipe._on_device(pipe.text_encoder):
                pipe.text_encoder.encode([prompt])
        except ValueError as e:
            raise ValueError(f"storyboard prompt {i} ({prompt[:60]!r}): {e}") from None
    progress = options.pop("progress", True)
    overlap = options.pop("overlap", None)
    match_colors = options.pop("match_colors", True)
    handover = options.pop("handover", HANDOVER_FRAMES)
    first = pipe(prompts[0], height=height, width=width, frames=frames, seed=seed, progress=progress, **options)
    video = first.uint8()[0]
    if len(prompts) == 1:
        return Extended(video, [], prompts[:1], 0)
    rest = extend(
        pipe,
        video,
        prompts[1:],
        overlap=overlap,
        frames=frames,
        match_colors=match_colors,
        handover=handover,
        seed=seed + 1,
        progress=progress,
        **options,
    )
    return Extended(rest.frames, rest.seams, list(prompts), rest.overlap)


def seam_ratio(frames: np.ndarray, seams: list[int], span: int = 1) -> tuple[float, float]:
    """(largest mean absolute frame difference across a seam, median difference between neighbouring
    frames inside the segments), in levels of 0-255. `span`: how many frame differences from each seam on
    count as the seam's (1: the seam's own; 1 + the hand-over's frames: the whole stretch a spread seam's
    change goes to, which a fade can move off the seam itself but not remove); the rest are "inside"."""
    if span < 1:
        raise ValueError(f"span must be >= 1 frame difference, got {span}")
    if not seams or not all(1 <= s < len(frames) for s in seams):
        raise ValueError(f"seams must be frame indices 1 to {len(frames) - 1}, got {seams}")
    diffs = np.abs(np.diff(frames.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))  # diffs[i]: frame i -> i+1
    near = sorted({i for s in seams for i in range(s - 1, min(s - 1 + span, len(diffs)))})
    inside = np.delete(diffs, near)
    if not len(inside):
        raise ValueError(f"the seams' spans ({span} frame differences each) cover the whole video: nothing is inside")
    return float(diffs[near].max()), float(np.median(inside))
