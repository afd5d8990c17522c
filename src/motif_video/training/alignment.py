"""REPA (Yu et al., arXiv 2410.06940): align an early block's video tokens with a frozen encoder.

An MLP projector maps the student's tokens [B, L, D] into the teacher's feature space; the loss
is the negative cosine similarity per token, averaged. Teacher tokens live on their own grid
(V-JEPA 2: tubelets of 2 frames x 16 x 16 pixels; DINOv2: 14 x 14 pixels per frame), so they are
resampled (trilinear) to the student's latent token grid first. Motif-Video uses DINOv2 for its
image-only first stage and V-JEPA for the early video stages, then switches REPA off.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Projector(nn.Module):
    """D -> hidden -> teacher width, SiLU (the REPA projector)."""

    def __init__(self, dim: int, teacher_dim: int, hidden: int = 2048) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, teacher_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def resample_tokens(tokens: Tensor, grid: tuple[int, int, int], to: tuple[int, int, int]) -> Tensor:
    """[B, T*H*W, C] on `grid` -> [B, T'*H'*W', C] on `to` (trilinear, time slowest)."""
    if grid == to:
        return tokens
    b, _, c = tokens.shape
    volume = tokens.transpose(1, 2).reshape(b, c, *grid)
    volume = F.interpolate(volume.float(), size=to, mode="trilinear", align_corners=False).to(tokens.dtype)
    return volume.flatten(2).transpose(1, 2)


def repa_loss(projected: Tensor, teacher: Tensor) -> Tensor:
    """-mean cosine similarity of matching tokens; -1 when they point the same way."""
    return -F.cosine_similarity(projected.float(), teacher.float(), dim=-1).mean()


class Teacher(nn.Module):
    """A frozen vision encoder from `transformers`, returning patch tokens and their grid.

    kind "vjepa2": `VJEPA2Model` on videos [B, 3, F, H, W] in [-1, 1] (encoder tokens only);
    kind "dinov2": `Dinov2Model` on each frame (CLS dropped).
    """

    def __init__(self, kind: str, model: nn.Module) -> None:
        super().__init__()
        if kind not in ("vjepa2", "dinov2"):
            raise ValueError(f"unknown REPA teacher {kind!r}; choose 'vjepa2' or 'dinov2'")
        self.kind = kind
        self.model = model.eval().requires_grad_(False)
        config = model.config
        self.dim = config.hidden_size
        self.patch = config.patch_size
        self.tubelet = getattr(config, "tubelet_size", 1)
        mean = getattr(config, "image_mean", None) or [0.485, 0.456, 0.406]
        std = getattr(config, "image_std", None) or [0.229, 0.224, 0.225]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, kind: str, path: str | Path) -> Teacher:
        from transformers import Dinov2Model, VJEPA2Model

        model_cls = {"vjepa2": VJEPA2Model, "dinov2": Dinov2Model}.get(kind)
        if model_cls is None:
            raise ValueError(f"unknown REPA teacher {kind!r}; choose 'vjepa2' or 'dinov2'")
        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"REPA teacher directory {path} has no config.json")
        return cls(kind, model_cls.from_pretrained(path))

    @torch.no_grad()
    def forward(self, video: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """video [B, 3, F, H, W] in [-1, 1] -> tokens [B, N, C] and their (T, H, W) grid."""
        x = ((video.float() + 1) / 2 - self.mean) / self.std
        b, _, f, h, w = x.shape
        gh, gw = h // self.patch, w // self.patch
        if self.kind == "vjepa2":
            frames = max(self.tubelet, f - f % self.tubelet)
            x = x[:, :, :frames] if f >= self.tubelet else x.repeat_interleave(self.tubelet, dim=2)
            out = self.model(pixel_values_videos=x.transpose(1, 2), skip_predictor=True).last_hidden_state
            return out, (frames // self.tubelet, gh, gw)
        out = self.model(pixel_values=x.transpose(1, 2).reshape(b * f, 3, h, w)).last_hidden_state[:, 1:]
        return out.reshape(b, f * gh * gw, -1), (f, gh, gw)
