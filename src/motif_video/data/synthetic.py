"""Procedural training batches in latent space: learnable, deterministic, no files.

A stand-in for encoded clips until real shards are used: each sample belongs to one of K
"captions"; its latent video is a Gaussian blob with a caption-specific channel signature that
moves in a caption-specific direction over a low-amplitude background. The caption is a fixed
random text embedding (variable length, padded, with its mask); the empty caption (for caption
dropout) is one fixed token. Image tokens for I2V are a fixed projection of the first latent
frame, and `pixels()` upsamples latents to a stand-in video for REPA teachers.

Batches are a pure function of (seed, step, rank): the data position of a run is its step, and
resuming needs nothing else. Image (1-frame) and video batches interleave in a fixed pattern,
so every batch has one shape.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def batch_indices(count: int, seed: int, step: int, batch_size: int, rank: int = 0, world: int = 1) -> list[int]:
    """The sample indices of this rank's share of the global batch `step`, for a set of `count` samples
    taken in a new random order every epoch: a pure function of its arguments, so the data position of a
    run is its step."""
    if batch_size % world:
        raise ValueError(f"global batch {batch_size} does not divide over {world} ranks")
    per_rank = batch_size // world
    epoch, offset = divmod(step * batch_size, count)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    return order[(offset + rank * per_rank + torch.arange(per_rank)) % count].tolist()


class SyntheticLatents:
    def __init__(
        self,
        latent_channels: int,
        text_dim: int,
        image_dim: int | None,
        frames: int = 3,
        height: int = 8,
        width: int = 8,
        text_len: int = 16,
        num_samples: int = 512,
        num_captions: int = 8,
        image_fraction: float = 0.25,
        seed: int = 0,
    ) -> None:
        self.z, self.frames, self.height, self.width = latent_channels, frames, height, width
        self.text_len, self.num_samples, self.num_captions = text_len, num_samples, num_captions
        self.image_fraction, self.seed = image_fraction, seed
        g = torch.Generator().manual_seed(seed)
        self.signature = torch.randn(num_captions, latent_channels, generator=g)
        angles = torch.rand(num_captions, generator=g) * 2 * math.pi
        self.direction = torch.stack([angles.cos(), angles.sin()], dim=1)  # (dy, dx) per frame, in cells
        lengths = torch.randint(3, text_len + 1, (num_captions,), generator=g)
        self.text = torch.zeros(num_captions, text_len, text_dim)
        self.text_mask = torch.zeros(num_captions, text_len, dtype=torch.bool)
        for c, n in enumerate(lengths.tolist()):
            self.text[c, :n] = torch.randn(n, text_dim, generator=g)
            self.text_mask[c, :n] = True
        self.null_text = torch.zeros(text_len, text_dim)
        self.null_text[0] = torch.randn(text_dim, generator=g)
        self.null_mask = torch.zeros(text_len, dtype=torch.bool)
        self.null_mask[0] = True
        self.image_proj = None if image_dim is None else torch.randn(4, latent_channels, image_dim, generator=g) * 0.5

    def is_image_step(self, step: int) -> bool:
        if self.image_fraction <= 0:
            return False
        return step % max(1, round(1 / self.image_fraction)) == 0

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> dict[str, Tensor]:
        """This rank's share of the global batch of `step`."""
        index = batch_indices(self.num_samples, self.seed, step, batch_size, rank, world)
        frames = 1 if self.is_image_step(step) else self.frames
        samples = [self.sample(int(i), frames) for i in index]
        return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}

    def sample(self, index: int, frames: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 7919 + index)
        caption = index % self.num_captions
        h, w = self.height, self.width
        start = torch.rand(2, generator=g) * torch.tensor([h, w])
        ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
        t = torch.arange(frames).view(frames, 1, 1)
        cy = (start[0] + t * self.direction[caption, 0]) % h
        cx = (start[1] + t * self.direction[caption, 1]) % w
        blob = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 4.0)  # [F, H, W]
        latents = self.signature[caption].view(-1, 1, 1, 1) * blob + 0.1 * torch.randn(
            self.z, frames, h, w, generator=g
        )
        out = {"latents": latents, "text": self.text[caption], "text_mask": self.text_mask[caption]}
        if self.image_proj is not None:
            first = latents[:, 0].mean(dim=(1, 2))  # [Z]
            out["image_tokens"] = torch.einsum("z,mzd->md", first, self.image_proj)
        return out

    @staticmethod
    def pixels(latents: Tensor, temporal: int = 4, spatial: int = 8) -> Tensor:
        """A stand-in decoded video [B, 3, (F-1)*temporal+1, H*spatial, W*spatial] in [-1, 1]."""
        rgb = torch.tanh(latents[:, :3].float())
        video = rgb.repeat_interleave(temporal, dim=2)[:, :, : (latents.shape[2] - 1) * temporal + 1]
        return video.repeat_interleave(spatial, dim=3).repeat_interleave(spatial, dim=4)
