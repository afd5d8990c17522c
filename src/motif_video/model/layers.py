"""Small layers of the Motif-Video transformer: embedders, adaLN modulation, RoPE, MLP.

Shapes: B batch, T/H/W latent frames/height/width after patching, L = T*H*W video tokens,
S text (+ image) tokens, D hidden, N heads, Dh head dim.

Numerics (the one place this is written down):
- the timestep sinusoid is computed in float32 and cast to the embedder's dtype;
- RoPE angles are computed in float64, stored as float32 cos/sin, and the rotation runs in float32;
- in a bfloat16 / float16 model (`MotifVideoTransformer.to_half`, applied by `load_transformer`),
  the timestep embedder and every adaLN modulation keep float32 weights and compute in float32;
  their results are cast to the activations' dtype where they are applied;
- everything else (norms, matmuls) runs in the parameters' dtype; PyTorch's LayerNorm/RMSNorm
  kernels accumulate in float32 internally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PatchEmbed3D(nn.Module):
    """[B, C, F, H, W] latents -> [B, L, D] tokens, one per (pt, p, p) patch (a strided Conv3d)."""

    def __init__(self, in_channels: int, hidden: int, patch_size_t: int, patch_size: int) -> None:
        super().__init__()
        kernel = (patch_size_t, patch_size, patch_size)
        self.proj = nn.Conv3d(in_channels, hidden, kernel_size=kernel, stride=kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, D, T, H, W] -> [B, L, D]


class MLP(nn.Module):
    """fc1 -> GELU -> fc2; `approximate` picks the tanh GELU (text projection, block MLPs)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, approximate: str = "tanh") -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class TimestepEmbedder(nn.Module):
    """Flow time (0..1000 scale, as the sampler passes it) -> [B, D] conditioning vector."""

    def __init__(self, hidden: int, frequency_dim: int = 256, max_period: float = 10000.0) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.fc1 = nn.Linear(frequency_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def sinusoid(self, t: Tensor) -> Tensor:
        # [cos | sin] ordering, frequencies exp(-ln(max_period) * i / half) for i < half.
        half = self.frequency_dim // 2
        exponent = -math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        angles = t.float()[:, None] * torch.exp(exponent)[None, :]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        freq = self.sinusoid(t).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(freq)))


class ImageProjection(nn.Module):
    """I2V image-encoder tokens [B, M, Di] -> [B, M, D]: LayerNorm, MLP (exact GELU), LayerNorm."""

    def __init__(self, image_dim: int, hidden: int) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(image_dim)
        self.fc1 = nn.Linear(image_dim, image_dim)
        self.fc2 = nn.Linear(image_dim, hidden)
        self.norm_out = nn.LayerNorm(hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm_out(self.fc2(F.gelu(self.fc1(self.norm_in(x)))))


@dataclass
class Modulation:
    """One adaLN triple, each [B, 1, D]: x -> norm(x) * (1 + scale) + shift, residual gated by gate."""

    shift: Tensor
    scale: Tensor
    gate: Tensor

    def modulate(self, x_normed: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x_normed, 1 + self.scale)


class AdaLNModulation(nn.Module):
    """SiLU(c) -> Linear -> `n` (shift, scale, gate) triples; zero-initialised (adaLN-Zero)."""

    def __init__(self, hidden: int, n: int) -> None:
        super().__init__()
        self.n = n
        self.linear = nn.Linear(hidden, 3 * n * hidden)

    def forward(self, c: Tensor, dtype: torch.dtype | None = None) -> list[Modulation]:
        """Computed in the layer's own dtype (float32 in a half-precision model, see
        `MotifVideoTransformer.to_half`), returned in `dtype` (the activations')."""
        params = self.linear(F.silu(c.to(param_dtype(self.linear))))[:, None, :].to(dtype or c.dtype)
        params = params.chunk(3 * self.n, dim=-1)  # 3n x [B, 1, D]
        return [Modulation(*params[3 * i : 3 * i + 3]) for i in range(self.n)]


def param_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a layer computes in: its parameters' (a quantized layer's: its bias's)."""
    return next(module.parameters()).dtype


def layer_norm(x: Tensor, eps: float) -> Tensor:
    """LayerNorm without affine parameters (the affine part is the adaLN modulation)."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


class FinalLayer(nn.Module):
    """adaLN (scale, shift from c; no gate) -> Linear to pt*p*p*C_out values per token."""

    def __init__(self, hidden: int, out_per_token: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.modulation = nn.Linear(hidden, 2 * hidden)
        self.linear = nn.Linear(hidden, out_per_token)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        params = self.modulation(F.silu(c.to(param_dtype(self.modulation))))[:, None, :].to(x.dtype)
        scale, shift = params.chunk(2, dim=-1)  # scale first here
        return self.linear(torch.addcmul(shift, layer_norm(x, self.eps), 1 + scale))


class RotaryEmbedding3D(nn.Module):
    """3-axis RoPE over the (T, H, W) patch grid: each axis rotates its own slice of the head dim.

    Positions are integer grid indices from 0. Pairs of adjacent channels rotate together
    (channel 2i with 2i+1), and the angle tables are laid out [T-axis | H-axis | W-axis].
    Text tokens get no rotation.
    """

    def __init__(self, axes_dim: tuple[int, int, int], theta: float) -> None:
        super().__init__()
        self.axes_dim = axes_dim
        self.theta = theta

    def forward(self, grid: tuple[int, int, int], device: torch.device) -> tuple[Tensor, Tensor]:
        """cos, sin tables of shape [L, Dh] (float32) for a T x H x W grid, T slowest."""
        t, h, w = grid
        axes = torch.meshgrid(*(torch.arange(n, device=device, dtype=torch.float64) for n in (t, h, w)), indexing="ij")
        angles = []
        for pos, dim in zip(axes, self.axes_dim, strict=True):
            inv_freq = 1.0 / self.theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim)
            angles.append(torch.outer(pos.reshape(-1), inv_freq))  # [L, dim/2]
        angle = torch.cat(angles, dim=1).repeat_interleave(2, dim=1)  # [L, Dh], pairs share an angle
        return angle.cos().float(), angle.sin().float()


def grid_positions(grid: tuple[int, int, int], axes_dim: tuple[int, int, int], device: torch.device) -> Tensor:
    """Fixed sine-cosine embedding of a T x H x W grid, [L, sum(axes_dim)] float32, T slowest: each
    axis has its slice of the width, half sines and half cosines of the integer index at
    frequencies 1/10000^(k/half) (DiT's 2D table with a time axis)."""
    axes = torch.meshgrid(*(torch.arange(n, device=device, dtype=torch.float64) for n in grid), indexing="ij")
    parts = []
    for pos, dim in zip(axes, axes_dim, strict=True):
        half = dim // 2
        angle = torch.outer(pos.reshape(-1), 1.0 / 10000.0 ** (torch.arange(half, device=device) / half))
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate x [B, N, L, Dh] by cos/sin of shape [L, Dh] or per-sample [B, L, Dh]."""
    cos, sin = rope
    if cos.dim() == 3:  # per-sample tables (routed tokens): [B, L, Dh] -> [B, 1, L, Dh]
        cos, sin = cos[:, None], sin[:, None]
    xf = x.float()
    x1, x2 = xf.unflatten(-1, (-1, 2)).unbind(-1)  # the two channels of each rotating pair
    rotated = torch.stack([-x2, x1], dim=-1).flatten(-2)
    return (xf * cos + rotated * sin).to(x.dtype)


def pad_rope(rope: tuple[Tensor, Tensor], extra: int) -> tuple[Tensor, Tensor]:
    """Append `extra` positions with the identity rotation (cos 1, sin 0) to [.., L, Dh] tables."""
    cos, sin = rope
    shape = (*cos.shape[:-2], extra, cos.shape[-1])
    return torch.cat([cos, cos.new_ones(shape)], dim=-2), torch.cat([sin, sin.new_zeros(shape)], dim=-2)
