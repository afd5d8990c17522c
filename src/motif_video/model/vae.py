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


class PatchAutoencoder:
    """A linear space-time patch autoencoder (PCA), the embedded model's choice over a small Wan VAE.

    The clip is cut like the Wan VAE cuts it (the first frame alone, then chunks of 4 frames) into
    `patch x patch` squares; each first-frame patch (3 x p x p values) and each chunk patch
    (3 x 4 x p x p) is projected on its own `z_dim` principal components, fitted on training clips
    (`fit_patch_autoencoder`), and normalised per channel. So latents have the Wan layout
    [B, Z, (F-1)/4+1, H/p, W/p], the same interface as `VideoAutoencoder` and no learned
    nonlinearity: encoding is deterministic (`generator` and `sample` are accepted and unused).
    On the flat-coloured shapes world 16 components reconstruct 64 x 64 clips to a mean absolute
    error of ~0.015 (pixels in [-1, 1]); a small AutoencoderKLWan trained for 35 CPU-minutes did
    not yet draw the objects (docs/shapes-world.md).
    """

    def __init__(self, config: dict, tensors: dict[str, Tensor]) -> None:
        self.config = config
        self.z_dim: int = config["z_dim"]
        self.spatial_factor: int = config["scale_factor_spatial"]
        self.temporal_factor: int = config["scale_factor_temporal"]
        self.tensors = {k: v.float() for k, v in tensors.items()}  # first/rest _mean [D], _basis [D, Z]
        self.mean = torch.tensor(config["latents_mean"]).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(config["latents_std"]).view(1, -1, 1, 1, 1)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> PatchAutoencoder:
        import json

        from safetensors.torch import load_file

        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        return cls(config, load_file(str(path / "model.safetensors"))).to(device)

    def save_pretrained(self, path: str | Path) -> None:
        import json

        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(path / "model.safetensors"))

    @property
    def device(self) -> torch.device:
        return self.tensors["first_basis"].device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        s = self.spatial_factor
        return self.z_dim, (frames - 1) // self.temporal_factor + 1, height // s, width // s

    @torch.no_grad()
    def encode(self, video: Tensor, generator=None, sample: bool = True) -> Tensor:
        t = self.tensors
        first, rest = split_patches(video.to(self.device, torch.float32), self.spatial_factor, self.temporal_factor)
        z = torch.cat(
            [(first - t["first_mean"]) @ t["first_basis"], (rest - t["rest_mean"]) @ t["rest_basis"]], dim=1
        )  # [B, F', h, w, Z]
        z = z.permute(0, 4, 1, 2, 3)
        return (z - self.mean.to(z)) / self.std.to(z)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        t = self.tensors
        z = latents.to(self.device, torch.float32) * self.std.to(self.device) + self.mean.to(self.device)
        z = z.permute(0, 2, 3, 4, 1)  # [B, F', h, w, Z]
        first = z[:, :1] @ t["first_basis"].T + t["first_mean"]
        rest = z[:, 1:] @ t["rest_basis"].T + t["rest_mean"]
        parts = [_unpatchify(first, self.spatial_factor, 1)]
        if rest.shape[1]:
            parts.append(_unpatchify(rest, self.spatial_factor, self.temporal_factor))
        return torch.cat(parts, dim=2)

    def to(self, device: str | torch.device) -> PatchAutoencoder:
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        return self


def split_patches(video: Tensor, size: int, frames: int) -> tuple[Tensor, Tensor]:
    """[B, 3, F, H, W] -> first-frame patches [B, 1, h, w, 3 s^2] and chunk patches [B, k, h, w, 3 t s^2]."""
    return _patchify(video[:, :, :1], size, 1), _patchify(video[:, :, 1:], size, frames)


def _patchify(video: Tensor, size: int, frames: int) -> Tensor:
    b, c, f, h, w = video.shape
    x = video.reshape(b, c, f // frames, frames, h // size, size, w // size, size)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, f // frames, h // size, w // size, c * frames * size * size)


def _unpatchify(x: Tensor, size: int, frames: int) -> Tensor:
    b, f, h, w, _ = x.shape
    x = x.reshape(b, f, h, w, 3, frames, size, size).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(b, 3, f * frames, h * size, w * size)


def load_autoencoder(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> VideoAutoencoder | PatchAutoencoder:
    """The `vae/` of a pipeline directory: a PatchAutoencoder by its config's `_class_name`, else
    diffusers' AutoencoderKLWan."""
    import json

    config = json.loads((Path(path) / "config.json").read_text())
    if config.get("_class_name") == "PatchAutoencoder":
        return PatchAutoencoder.from_pretrained(path, dtype, device)
    return VideoAutoencoder.from_pretrained(path, dtype, device)
