"""The one place where attention is computed.

Every attention in the model (joint self-attention, Shared Cross-Attention, decoder attention)
calls `attention()`. The backend is a run-time choice, not part of the architecture:

- "sdpa" (default): `torch.nn.functional.scaled_dot_product_attention`, which picks the flash,
  cuDNN, memory-efficient or math kernel by itself, by device, dtype, head size and mask (a key
  mask rules out flash on a GPU: the guidance passes run unmasked there, sampling/sampler.py);
- "math": the explicit softmax(QK^T / sqrt(Dh)) V, the reference the others are tested against;
- "flash": the `flash_attn` package (FlashAttention 2/3) where installed; no masks;
- "sage": the `sageattention` package (quantised QK^T) where installed; no masks.

Shapes: q [B, N, Lq, Dh], k and v [B, N, Lk, Dh]; mask [B, 1, 1, Lk] bool (True = attend) or
None; the result is [B, Lq, N*Dh] (heads merged), ready for an output projection.

An `AttentionProbe` passed along records what the analysis of the paper looks at (per block: the
frame-to-frame attention of video queries, and their attention mass on the context, i.e. text
or, in the decoder, the encoder output) without changing the result: it recomputes the softmax
in chunks of queries and keeps only those aggregates, never a full attention matrix.

`KERNELS` collects the names of the kernels that ran (eager calls; "sdpa:flash", "sdpa:cudnn",
"sdpa:efficient", "sdpa:math", "flash_attn", "sageattention"); the pipeline empties it before a
generation and records it in the sidecar.
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("sdpa", "math", "flash", "sage")
KERNELS: set[str] = set()
_SDPA_NAMES = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def _record(name: str) -> None:
    if not torch.compiler.is_compiling():  # a compiled graph runs without Python side effects
        KERNELS.add(name)


def _sdpa_kernel(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> str:
    """The kernel `scaled_dot_product_attention` picks for these inputs (its own dispatch rule)."""
    try:
        return _SDPA_NAMES.get(int(torch._fused_sdp_choice(q, k, v, mask)), "unknown")
    except (RuntimeError, TypeError, AttributeError):  # a private entry point: no name rather than a failure
        return "unknown"


def check_backend(name: str) -> str:
    """Validate a backend name and that its package is importable; returns the name."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {list(BACKENDS)}")
    package = {"flash": "flash_attn", "sage": "sageattention"}.get(name)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ValueError(f"attention backend {name!r} needs the {package!r} package, which is not installed")
    return name


class AttentionProbe:
    """Aggregates of the joint attention of video queries, per block (see module docstring).

    `frames`: number of latent frames T; video tokens are the first T*tokens_per_frame queries
    and keys, time slowest. In decoder blocks the keys are [decoder tokens ; encoder output], both
    video grids: the second half is the "context" and also counts for the frame matrix.
    """

    def __init__(self, frames: int, tokens_per_frame: int, chunk: int = 256) -> None:
        self.frames, self.per_frame, self.chunk = frames, tokens_per_frame, chunk
        self.block: int | None = None  # set by the transformer before each block
        self.decoder = False
        self.frame_matrix: dict[int, Tensor] = {}  # block -> [T, T], rows: query frame, mean over queries/heads
        self.context_mass: dict[int, float] = {}  # block -> mean attention of video queries on the context

    @torch.no_grad()
    def record(self, q: Tensor, k: Tensor, mask: Tensor | None) -> None:
        if self.block is None:
            return
        t, per = self.frames, self.per_frame
        length = t * per  # video tokens (queries analysed; first keys)
        key_frame = torch.arange(k.shape[2], device=k.device) // per  # frame of each key ...
        context = torch.ones(k.shape[2], dtype=torch.bool, device=k.device)
        context[:length] = False
        if self.decoder:  # ... the encoder-output half is a video grid as well
            key_frame = key_frame % t
        else:
            key_frame = key_frame.clamp(max=t)  # text keys go to an extra column, dropped below
        one_hot = torch.nn.functional.one_hot(key_frame, t + 1).float()  # [Lk, T+1]
        sums = torch.zeros(t, t + 1, device=q.device)
        ctx = torch.zeros((), device=q.device)
        scale = q.shape[-1] ** -0.5
        for start in range(0, length, self.chunk):
            stop = min(length, start + self.chunk)
            scores = (q[:, :, start:stop].float() @ k.float().transpose(-2, -1)) * scale  # [B, N, c, Lk]
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = scores.softmax(dim=-1)
            per_frame = probs @ one_hot  # [B, N, c, T+1]
            query_frame = torch.arange(start, stop, device=q.device) // per
            sums.index_add_(0, query_frame, per_frame.mean(dim=(0, 1)))
            ctx += (probs * context).sum(dim=-1).sum()
        self.frame_matrix[self.block] = (sums[:, :t] / per).cpu()
        self.context_mass[self.block] = float(ctx / (length * q.shape[0] * q.shape[1]))

    def cross_frame_score(self, block: int) -> float:
        """Share of a video query's attention on video keys that falls outside its own frame."""
        m = self.frame_matrix[block]
        return float(1 - m.diagonal().sum() / m.sum())


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    backend: str = "sdpa",
    probe: AttentionProbe | None = None,
) -> Tensor:
    if probe is not None:
        probe.record(q, k, mask)
    if backend == "sdpa":
        if not torch.compiler.is_compiling():
            _record("sdpa:" + _sdpa_kernel(q, k, v, mask))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    elif backend == "math":
        _record("math")
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
        _record("sdpa (masked call, in place of " + ("flash_attn)" if backend == "flash" else "sageattention)"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if backend == "flash":
        from flash_attn import flash_attn_func

        _record("flash_attn")
        # flash_attn wants [B, L, N, Dh]
        return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    from sageattention import sageattn

    _record("sageattention")
    return sageattn(q, k, v, tensor_layout="HND", is_causal=False)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """[B, L, N*Dh] -> [B, N, L, Dh]."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)
