"""The one place where attention is computed.

Every attention in the model (joint self-attention, Shared Cross-Attention, decoder attention)
calls `attention()`. The backend is a run-time choice, not part of the architecture:

- "sdpa" (default): `torch.nn.functional.scaled_dot_product_attention`, which picks flash /
  memory-efficient / math kernels by itself;
- "math": the explicit softmax(QK^T / sqrt(Dh)) V, the reference the others are tested against;
- "flash": the `flash_attn` package (FlashAttention 2/3) where installed; no masks;
- "sage": the `sageattention` package (quantised QK^T) where installed; no masks.

Shapes: q [B, N, Lq, Dh], k and v [B, N, Lk, Dh]; mask [B, 1, 1, Lk] bool (True = attend) or
None; the result is [B, Lq, N*Dh] (heads merged), ready for an output projection.
"""

from __future__ import annotations

import importlib.util
import math

import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("sdpa", "math", "flash", "sage")


def check_backend(name: str) -> str:
    """Validate a backend name and that its package is importable; returns the name."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {list(BACKENDS)}")
    package = {"flash": "flash_attn", "sage": "sageattention"}.get(name)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ValueError(f"attention backend {name!r} needs the {package!r} package, which is not installed")
    return name


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, backend: str = "sdpa") -> Tensor:
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    elif backend == "math":
        scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out = (scores.softmax(dim=-1) @ v.float()).to(q.dtype)
    elif backend in ("flash", "sage"):
        out = _kernel_attention(q, k, v, mask, backend)
    else:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {list(BACKENDS)}")
    return out.transpose(1, 2).flatten(2)  # [B, N, Lq, Dh] -> [B, Lq, N*Dh]


def _kernel_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, backend: str) -> Tensor:
    # These kernels take no boolean mask. Padded text would leak into the softmax, so a masked
    # call falls back to SDPA rather than silently changing the result.
    if mask is not None and not bool(mask.all()):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if backend == "flash":
        from flash_attn import flash_attn_func

        # flash_attn wants [B, L, N, Dh]
        return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="HND", is_causal=False)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """[B, L, N*Dh] -> [B, N, L, Dh]."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)
