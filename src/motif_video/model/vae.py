"""The video autoencoder: diffusers' `AutoencoderKLWan` (Wan2.1 VAE) with its latent normalisation.

Pixels [B, 3, F, H, W] in [-1, 1] <-> normalised latents [B, Z, (F-1)/4+1, H/8, W/8]; the
transformer sees `(z - mean) / std` with the per-channel `latents_mean` / `latents_std` of the
VAE config. The compression factors come from the config too (4x time, 8x space for Wan2.1).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


class VideoAutoencoder:
    def __init__(self, vae) -> None:
        self.vae = vae.eval().requires_grad_(False)
        config = vae.config
        self.z_dim: int = config.z_dim
        self.temporal_factor: int = getattr(config, "scale_factor_temporal", 4)
        self.spatial_factor: int = getattr(config, "scale_factor_spatial", 8)
        self.mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(config.latents_std).view(1, -1, 1, 1, 1)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> VideoAutoencoder:
        from diffusers import AutoencoderKLWan

        return cls(AutoencoderKLWan.from_pretrained(path, torch_dtype=dtype).to(device))

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(Z, F', H', W') of the latents of a frames x height x width video."""
        s = self.spatial_factor
        return self.z_dim, (frames - 1) // self.temporal_factor + 1, height // s, width // s

    @torch.no_grad()
    def encode(
        self, video: Tensor, generator: torch.Generator | list[torch.Generator] | None = None, sample: bool = True
    ) -> Tensor:
        """Pixels in [-1, 1] -> normalised latents: sampled from the posterior with `generator`, or
        its mean with `sample=False` (precomputed training latents)."""
        posterior = self.vae.encode(video.to(self.device, self.dtype)).latent_dist
        z = posterior.sample(generator=generator) if sample else posterior.mode()
        return (z - self.mean.to(z)) / self.std.to(z)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents -> pixels in [-1, 1] (not clamped)."""
        z = latents.to(self.device, self.dtype)
        return self.vae.decode(z * self.std.to(z) + self.mean.to(z), return_dict=False)[0]

    def to(self, device: str | torch.device) -> VideoAutoencoder:
        self.vae.to(device)
        return self
