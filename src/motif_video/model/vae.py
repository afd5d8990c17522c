"""The video autoencoder: diffusers' `AutoencoderKLWan` (Wan2.1 VAE) with its latent normalisation.

Pixels [B, 3, F, H, W] in [-1, 1] <-> normalised latents [B, Z, (F-1)/4+1, H/8, W/8]; the
transformer sees `(z - mean) / std` with the per-channel `latents_mean` / `latents_std` of the
VAE config. The compression factors come from the config too (4x time, 8x space for Wan2.1).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
    `patch x patch` squares; each chunk patch (3 x 4 x p x p values) is projected on `z_dim`
    principal components, fitted on training clips (`fit_patch_autoencoder`), and normalised. The
    first frame is encoded as a still chunk (the frame four times) with the same components and
    decoded as the mean of the chunk, so a channel means the same thing in every latent frame: the
    transformer cannot tell frame 0 from the others (its attention sees relative positions), and
    with a basis of its own for the first frame the embedded model painted a blue square orange in
    the later frames. Latents have the Wan layout [B, Z, (F-1)/4+1, H/p, W/p], the same interface
    as `VideoAutoencoder` and no learned nonlinearity: encoding is deterministic (`generator` and
    `sample` are accepted and unused). On the flat-coloured shapes world 16 components reconstruct
    64 x 64 clips to a mean absolute error of ~0.015 (pixels in [-1, 1]); a small AutoencoderKLWan
    trained for 35 CPU-minutes did not yet draw the objects (docs/shapes-world.md).

    The linear decode blurs what 16 numbers per 8 x 8 x 4 patch cannot hold: corners come out
    round and edges soft. With a config `"decoder"` entry, a `DetailDecoder` (its weights under
    `decoder.` in the same file) redraws each frame from the linear decode and the latent grid.
    With `"join_smoothing"` > 0 the decoded video's steps at the joins between latent frames are
    spread over the chunks beside them (`smooth_joins`).
    """

    def __init__(self, config: dict, tensors: dict[str, Tensor]) -> None:
        self.config = config
        self.z_dim: int = config["z_dim"]
        self.spatial_factor: int = config["scale_factor_spatial"]
        self.temporal_factor: int = config["scale_factor_temporal"]
        tensors = {k: v.float() for k, v in tensors.items()}
        self.tensors = {k: v for k, v in tensors.items() if not k.startswith("decoder.")}  # mean [D], basis [D, Z]
        self.decoder: DetailDecoder | None = None
        if config.get("decoder"):
            self.decoder = DetailDecoder(self.z_dim, self.spatial_factor, self.temporal_factor, **config["decoder"])
            weights = {k.removeprefix("decoder."): v for k, v in tensors.items() if k.startswith("decoder.")}
            self.decoder.load_state_dict(weights)
            self.decoder.eval().requires_grad_(False)
        self.mean = torch.tensor(config["latents_mean"]).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(config["latents_std"]).view(1, -1, 1, 1, 1)
        self.join_smoothing: float = config.get("join_smoothing", 0.0)

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
        tensors = dict(self.tensors)
        if self.decoder is not None:
            tensors |= {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        (path / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))

    @property
    def device(self) -> torch.device:
        return self.tensors["basis"].device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        s = self.spatial_factor
        return self.z_dim, (frames - 1) // self.temporal_factor + 1, height // s, width // s

    @torch.no_grad()
    def encode(self, video: Tensor, generator=None, sample: bool = True) -> Tensor:
        t = self.tensors
        patches = chunk_patches(video.to(self.device, torch.float32), self.spatial_factor, self.temporal_factor)
        z = ((patches - t["mean"]) @ t["basis"]).permute(0, 4, 1, 2, 3)  # [B, Z, F', h, w]
        return (z - self.mean.to(z)) / self.std.to(z)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        latents = latents.to(self.device, torch.float32)
        video = self.decode_linear(latents)
        if self.decoder is not None:
            # clip by clip: the decoder's full-resolution features are 32 channels a frame
            video = torch.cat([self.decoder(video[i : i + 1], latents[i : i + 1]) for i in range(len(video))])
        return smooth_joins(video, self.temporal_factor, self.join_smoothing)

    def decode_linear(self, latents: Tensor) -> Tensor:
        """Normalised latents -> pixels by the principal components alone (differentiable)."""
        t = self.tensors
        z = latents.to(self.device, torch.float32) * self.std.to(self.device) + self.mean.to(self.device)
        patches = z.permute(0, 2, 3, 4, 1) @ t["basis"].T + t["mean"]  # [B, F', h, w, D]
        video = _unpatchify(patches, self.spatial_factor, self.temporal_factor)  # [B, 3, 4 F', H, W]
        first = video[:, :, : self.temporal_factor].mean(dim=2, keepdim=True)  # the still first chunk
        return torch.cat([first, video[:, :, self.temporal_factor :]], dim=2)

    def to(self, device: str | torch.device) -> PatchAutoencoder:
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        if self.decoder is not None:
            self.decoder.to(device)
        return self


class DetailDecoder(nn.Module):
    """The patch autoencoder's non-linear decode: a correction added to the linear decode, frame by frame.

    Two paths meet at full resolution. The latent path reads the grid of latents (3 x 3
    convolutions over neighbouring patches: enough context to tell a circle from a square) plus
    the frame's place in its 4-frame chunk, and unfolds each latent into a patch of features
    (pixel shuffle). The pixel path reads the linear decode (where the soft edges are) beside
    those features and outputs the correction. Its last layer starts at zero, so an untrained
    decoder is the linear decode.

    With `context` = c > 0 the latent path also reads the c latent frames before and after the frame's
    own (the ends repeated): each 4-frame chunk is sampled with an error of its own, and a decoder that
    sees both sides of a join can draw the frames next to it so that they agree.
    """

    def __init__(
        self,
        z_dim: int,
        patch: int,
        chunk: int,
        latent_channels: int = 64,
        latent_layers: int = 3,
        pixel_channels: int = 32,
        pixel_layers: int = 2,
        unfold_channels: int = 8,
        context: int = 0,
    ) -> None:
        super().__init__()
        self.patch, self.chunk, self.context = patch, chunk, context
        self.settings = {  # what config.json records to rebuild it
            "latent_channels": latent_channels,
            "latent_layers": latent_layers,
            "pixel_channels": pixel_channels,
            "pixel_layers": pixel_layers,
            "unfold_channels": unfold_channels,
        } | ({"context": context} if context else {})
        self.latent_in = nn.Conv2d(z_dim * (2 * context + 1) + chunk, latent_channels, 3, padding=1)
        self.latent_blocks = nn.ModuleList(
            nn.Conv2d(latent_channels, latent_channels, 3, padding=1) for _ in range(latent_layers)
        )
        self.unfold = nn.Conv2d(latent_channels, unfold_channels * patch * patch, 1)
        self.pixel_in = nn.Conv2d(3 + unfold_channels, pixel_channels, 3, padding=1)
        self.pixel_blocks = nn.ModuleList(
            nn.Conv2d(pixel_channels, pixel_channels, 3, padding=1) for _ in range(pixel_layers)
        )
        self.out = nn.Conv2d(pixel_channels, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, linear: Tensor, latents: Tensor) -> Tensor:
        """linear [B, 3, F, H, W] (the linear decode of) latents [B, Z, F', h, w] -> [B, 3, F, H, W]."""
        b, _, frames, height, width = linear.shape
        chunk, place = self.frame_places(frames, linear.device)
        grid = self.latent_grid(latents, chunk).flatten(0, 1)  # [B F, (2c+1) Z, h, w]
        out = self.redraw(linear.transpose(1, 2).flatten(0, 1), grid, place.repeat(b))
        return out.view(b, frames, 3, height, width).transpose(1, 2)

    def latent_grid(self, latents: Tensor, chunk: Tensor) -> Tensor:
        """latents [B, Z, F', h, w] and per frame its latent frame [N] -> [B, N, (2c+1) Z, h, w]: the
        latent frames chunk - c .. chunk + c of each frame, stacked on the channels."""
        grid = latents[:, :, self.near_frames(chunk, latents.shape[2])]  # [B, Z, N, 2c+1, h, w]
        return grid.permute(0, 2, 3, 1, 4, 5).flatten(2, 3)

    def near_frames(self, chunk: Tensor, latent_frames: int) -> Tensor:
        """Latent frames [N] -> the latent frames each one's frames read, [N, 2c+1] (the ends repeated)."""
        offsets = torch.arange(-self.context, self.context + 1, device=chunk.device)
        return (chunk[:, None] + offsets).clamp(0, latent_frames - 1)

    def frame_places(self, frames: int, device=None) -> tuple[Tensor, Tensor]:
        return frame_places(frames, self.chunk, device)

    def redraw(self, rgb: Tensor, grid: Tensor, place: Tensor) -> Tensor:
        """Frames [N, 3, H, W] of the linear decode, their latents [N, Z, h, w] and places [N] -> frames."""
        place = F.one_hot(place, self.chunk).to(grid)[:, :, None, None].expand(-1, -1, *grid.shape[-2:])
        h = F.silu(self.latent_in(torch.cat([grid, place], dim=1)))
        for conv in self.latent_blocks:
            h = h + F.silu(conv(h))
        features = F.pixel_shuffle(self.unfold(h), self.patch)  # [N, unfold, H, W]
        h = F.silu(self.pixel_in(torch.cat([rgb, features], dim=1)))
        for conv in self.pixel_blocks:
            h = h + F.silu(conv(h))
        return rgb + self.out(h)


def frame_places(frames: int, chunk: int, device=None) -> tuple[Tensor, Tensor]:
    """Per frame its latent frame and its place in that chunk: frame 0 is a still chunk of its own,
    frame k > 0 is place (k - 1) % chunk of latent frame 1 + (k - 1) // chunk."""
    k = torch.arange(frames, device=device)
    return torch.where(k == 0, 0, 1 + (k - 1) // chunk), torch.where(k == 0, 0, (k - 1) % chunk)


def smooth_joins(video: Tensor, chunk: int, limit: float) -> Tensor:
    """[B, C, F, H, W] decoded from latent frames of `chunk` frames each (the first frame alone) ->
    the same with the step at each join between latent frames spread over the chunks beside it.

    Each latent frame is sampled with an error of its own, and a decoder that draws each chunk from its
    own latent frame shows that error as a step every `chunk` frames (in the embedded model, changes
    across a join were ~1.5x those inside a chunk: a flicker at a quarter of the frame rate). Per pixel,
    the step is the change across the join beyond the mean of the changes just before and after it
    (the motion the video shows there), clipped to +-`limit` so that a moving edge, whose change is
    large, is left alone. The steps add up to a staircase, one level per chunk; each frame is moved
    from its chunk's level to the staircase's piecewise-linear interpolation through the chunks'
    middle frames. `limit` <= 0 or fewer than 3 frames: the video unchanged."""
    frames = video.shape[2]
    if limit <= 0 or frames < 3:
        return video
    starts = list(range(1, frames, chunk))  # each latent frame's first frame, after the still frame 0
    d = video.diff(dim=2)  # d[:, :, t]: frame t -> t + 1
    levels = [torch.zeros_like(video[:, :, 0])]
    for b in starts:
        step = torch.zeros_like(levels[-1])
        if b + 1 < frames:  # the change after the join is known
            around = (d[:, :, b - 2] + d[:, :, b]) / 2 if b >= 2 else d[:, :, b]
            step = (d[:, :, b - 1] - around).clamp(-limit, limit)
        levels.append(levels[-1] + step)
    levels = torch.stack(levels, dim=2)  # [B, C, K, H, W]
    middles = torch.tensor([0.0] + [(b + min(b + chunk, frames) - 1) / 2 for b in starts])
    t = torch.arange(frames, dtype=torch.float32)
    own, _ = frame_places(frames, chunk)
    # weights [F, K] of the interpolation through the middles (held flat beyond the first and last)
    right = torch.searchsorted(middles, t.clamp(0, float(middles[-1])), right=False).clamp(1, len(middles) - 1)
    left = right - 1
    w = ((t - middles[left]) / (middles[right] - middles[left])).clamp(0, 1)
    weights = torch.zeros(frames, len(middles))
    weights[torch.arange(frames), left] += 1 - w
    weights[torch.arange(frames), right] += w
    weights[torch.arange(frames), own] -= 1
    return video + torch.einsum("tk,bckhw->bcthw", weights.to(video), levels)


def chunk_patches(video: Tensor, size: int, frames: int) -> Tensor:
    """[B, 3, F, H, W] with F = 1 + k frames -> patches [B, 1 + k / frames, h, w, 3 frames size^2]: the
    first frame repeated into a still chunk, then the chunks of `frames` frames."""
    still = video[:, :, :1].expand(-1, -1, frames, -1, -1)
    return _patchify(torch.cat([still, video[:, :, 1:]], dim=2), size, frames)


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
