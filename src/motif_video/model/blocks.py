"""The three kinds of block of the Motif-Video backbone, and Shared Cross-Attention.

- `DualStreamBlock` (early fusion; MMDiT-style): video and text keep their own weights
  (modulation, QKV, output projection, MLP) and meet in one joint attention over [video ; text].
- `SingleStreamBlock` (joint representation; FLUX-style parallel block): one set of weights over the
  joint sequence; attention and MLP branches read the same normalised input (`qkv`, `mlp_in`) and
  share one output projection (`proj`). The DDT decoder is made of the same block, fed
  [decoder tokens ; encoder output] instead of [video ; text].
- `SharedCrossAttention`: a residual text cross-attention beside the joint attention. Its query is
  the video tokens' joint-attention output; in the "shared" form its keys and values are produced
  by the block's own self-attention K/V projections and QK norms, so text conditioning gets a
  path whose strength does not fall as the number of video tokens grows (joint-attention
  dilution, paper Sec. 3).

Shapes: B batch, L video tokens, S text tokens (image tokens first, then text), D hidden,
N heads, Dh head dim, M image tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motif_video.config import TransformerConfig
from motif_video.model.attention import AttentionProbe, attention, split_heads
from motif_video.model.context_parallel import ContextParallel
from motif_video.model.layers import MLP, AdaLNModulation, apply_rope, layer_norm, pad_rope


@dataclass(frozen=True)
class BlockInputs:
    """What every block needs besides its two token streams."""

    c: Tensor  # [B, D] timestep conditioning
    rope: tuple[Tensor, Tensor]  # cos, sin for the first stream: [L, Dh] or per-sample [B, L, Dh]
    joint_mask: Tensor | None  # [B, 1, 1, L+S] bool, True = attend; None = attend to all
    text_mask: Tensor | None  # [B, 1, 1, S-M] bool over text tokens only (cross-attention keys)
    num_image_tokens: int  # M: image tokens at the front of the text stream (not cross-attended)
    backend: str  # attention backend, see model/attention.py
    probe: AttentionProbe | None = None  # analysis of the joint attention (eval), see model/attention.py
    parallel: ContextParallel | None = None  # the video sequence split over processes (sampling)
    context_sharded: bool = False  # the second stream is split too (the decoder's encoder output)

    def with_video_tokens(self, rope: tuple[Tensor, Tensor], joint_mask: Tensor | None) -> BlockInputs:
        return replace(self, rope=rope, joint_mask=joint_mask)

    def joint_attention(self, q: Tensor, k: Tensor, v: Tensor, length: int) -> Tensor:
        """Attention over [first stream (`length` tokens) ; second stream], on one process or split."""
        if self.parallel is None:
            return attention(q, k, v, self.joint_mask, self.backend, self.probe)
        segments = [(length, True), (q.shape[2] - length, self.context_sharded)]
        return self.parallel.attention(q, k, v, self.joint_mask, segments, self.backend)


class QKV(nn.Module):
    """Fused Q/K/V projection with per-head RMSNorm on queries and keys."""

    def __init__(self, hidden: int, num_heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.norm_q = nn.RMSNorm(head_dim, eps=eps)
        self.norm_k = nn.RMSNorm(head_dim, eps=eps)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))  # 3 x [B, N, L, Dh]
        return self.norm_q(q), self.norm_k(k), v

    def kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys (normed) and values of other tokens through the same K/V weights (the shared form).

        The whole projection runs (the text is short) so that adapters on `qkv` (LoRA) apply here too."""
        _, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.norm_k(split_heads(k, self.num_heads)), split_heads(v, self.num_heads)


class SharedCrossAttention(nn.Module):
    """Residual cross-attention from video tokens to text tokens.

    query  = (video tokens' joint-attention output) -> q [-> LayerNorm in the shared form]
             -> heads -> RMSNorm -> RoPE
    key/val = text tokens (image tokens excluded), through
              "shared":   the host self-attention's K/V weights and key norm (given by the block);
              "separate": this module's own `kv` projection and norms (diffusers 0.42 layout).
    output = proj(attention), added to the video stream as an ungated residual. `proj` starts at
    zero, so inserting the module into a trained model leaves its output unchanged.
    """

    def __init__(self, hidden: int, num_heads: int, head_dim: int, kv_form: str, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.kv_form = kv_form
        self.q = nn.Linear(hidden, hidden)
        if kv_form == "shared":
            self.q_norm = nn.LayerNorm(hidden, eps=eps)
        else:
            self.kv = nn.Linear(hidden, 2 * hidden)
            self.norm_q = nn.RMSNorm(head_dim, eps=eps)
            self.norm_k = nn.RMSNorm(head_dim, eps=eps)
        self.proj = nn.Linear(hidden, hidden)

    def forward(
        self,
        video_attn: Tensor,  # [B, L, D] the video tokens' joint-attention output
        text: Tensor,  # [B, S-M, D] normalised text tokens
        shared_kv: tuple[Tensor, Tensor] | None,  # host K/V of `text` ([B, N, S-M, Dh]), shared form
        host_norm_q: nn.RMSNorm | None,  # host query norm, shared form
        inputs: BlockInputs,
    ) -> Tensor:
        if self.kv_form == "shared":
            q = host_norm_q(split_heads(self.q_norm(self.q(video_attn)), self.num_heads))
            k, v = shared_kv
        else:
            q = self.norm_q(split_heads(self.q(video_attn), self.num_heads))
            k, v = (split_heads(t, self.num_heads) for t in self.kv(text).chunk(2, dim=-1))
            k = self.norm_k(k)
        q = apply_rope(q, inputs.rope)  # text keys carry no position
        return self.proj(attention(q, k, v, inputs.text_mask, inputs.backend))


class DualStreamBlock(nn.Module):
    """Early fusion: separate video/text weights, one joint attention over [video ; text]."""

    def __init__(self, cfg: TransformerConfig, cross_attention: bool) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.eps = cfg.eps
        self.video_mod = AdaLNModulation(d, 2)  # (attention, MLP) triples
        self.text_mod = AdaLNModulation(d, 2)
        self.video_attn = QKV(d, cfg.num_heads, cfg.head_dim, cfg.eps)
        self.text_attn = QKV(d, cfg.num_heads, cfg.head_dim, cfg.eps)
        self.video_attn_out = nn.Linear(d, d)
        self.text_attn_out = nn.Linear(d, d)
        self.video_mlp = MLP(d, cfg.mlp_hidden, d)
        self.text_mlp = MLP(d, cfg.mlp_hidden, d)
        self.cross_attn = (
            SharedCrossAttention(d, cfg.num_heads, cfg.head_dim, cfg.cross_attention_kv, cfg.eps)
            if cross_attention
            else None
        )

    def forward(self, x: Tensor, text: Tensor, inputs: BlockInputs) -> tuple[Tensor, Tensor]:
        """x [B, L, D] video, text [B, S, D] -> same shapes."""
        video_msa, video_ffn = self.video_mod(inputs.c, x.dtype)
        text_msa, text_ffn = self.text_mod(inputs.c, text.dtype)
        x_norm = video_msa.modulate(layer_norm(x, self.eps))
        text_norm = text_msa.modulate(layer_norm(text, self.eps))

        video_attn, text_attn = self.joint_attention(x_norm, text_norm, inputs)
        del x_norm  # not needed any more: free it before the MLPs (peak memory)
        x = x + video_msa.gate * video_attn
        if self.cross_attn is not None:
            text_tokens = text_norm[:, inputs.num_image_tokens :]
            shared = self.cross_attn.kv_form == "shared"
            x = x + self.cross_attn(
                video_attn,
                text_tokens,
                self.video_attn.kv(text_tokens) if shared else None,  # the video stream's K/V weights
                self.video_attn.norm_q if shared else None,
                inputs,
            )
        text = text + text_msa.gate * text_attn
        del text_norm, video_attn, text_attn

        x = x + video_ffn.gate * self.video_mlp(video_ffn.modulate(layer_norm(x, self.eps)))
        text = text + text_ffn.gate * self.text_mlp(text_ffn.modulate(layer_norm(text, self.eps)))
        return x, text

    def joint_attention(self, x_norm: Tensor, text_norm: Tensor, inputs: BlockInputs) -> tuple[Tensor, Tensor]:
        """Attention over [video ; text], RoPE on the video part; outputs projected per stream.

        A method of its own so that Q/K/V and their copies are freed before the MLPs run
        (peak activation memory)."""
        qv, kv, vv = self.video_attn(x_norm)
        qt, kt, vt = self.text_attn(text_norm)
        qv, kv = apply_rope(qv, inputs.rope), apply_rope(kv, inputs.rope)
        length = x_norm.shape[1]
        out = inputs.joint_attention(
            torch.cat([qv, qt], dim=2), torch.cat([kv, kt], dim=2), torch.cat([vv, vt], dim=2), length
        )  # [B, L+S, D]
        return self.video_attn_out(out[:, :length]), self.text_attn_out(out[:, length:])


class SingleStreamBlock(nn.Module):
    """Joint representation (and DDT decoder): one weight set over [x ; context], parallel MLP.

    In the encoder, x = video tokens and context = text tokens. In the decoder, x = decoder tokens
    (started from the fresh patch embedding) and context = the encoder's video output, with no
    text and no mask. RoPE rotates the x part only.
    """

    def __init__(self, cfg: TransformerConfig, cross_attention: bool) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.eps = cfg.eps
        self.num_heads = cfg.num_heads
        self.modulation = AdaLNModulation(d, 1)
        self.qkv = nn.Linear(d, 3 * d)
        self.mlp_in = nn.Linear(d, cfg.mlp_hidden)
        self.norm_q = nn.RMSNorm(cfg.head_dim, eps=cfg.eps)
        self.norm_k = nn.RMSNorm(cfg.head_dim, eps=cfg.eps)
        self.proj = nn.Linear(d + cfg.mlp_hidden, d)  # [attention | mlp hidden] -> D
        self.cross_attn = (
            SharedCrossAttention(d, cfg.num_heads, cfg.head_dim, cfg.cross_attention_kv, cfg.eps)
            if cross_attention
            else None
        )

    def forward(self, x: Tensor, context: Tensor, inputs: BlockInputs) -> tuple[Tensor, Tensor]:
        """x [B, L, D], context [B, S, D] -> same shapes."""
        length = x.shape[1]
        h = torch.cat([x, context], dim=1)  # [B, L+S, D]
        (mod,) = self.modulation(inputs.c, x.dtype)
        h_norm = mod.modulate(layer_norm(h, self.eps))
        attn = self.attention(h_norm, length, inputs)  # [B, L+S, D]
        mlp = F.gelu(self.mlp_in(h_norm), approximate="tanh")  # GELU at once frees the pre-activation
        h = h + mod.gate * self.proj(torch.cat([attn, mlp], dim=-1))
        return h[:, :length], h[:, length:]

    def attention(self, h_norm: Tensor, length: int, inputs: BlockInputs) -> Tensor:
        """Joint attention over [x ; context] (+ Shared Cross-Attention on the video part).

        A method of its own so that Q/K/V and their copies are freed before the MLP branch runs."""
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(h_norm).chunk(3, dim=-1))  # 3 x [B, N, L+S, Dh]
        q, k = self.norm_q(q), self.norm_k(k)
        # RoPE on the x part only: the context positions get the identity rotation (cos 1, sin 0),
        # which is exact and spares slicing and re-concatenating Q and K.
        rope = pad_rope(inputs.rope, h_norm.shape[1] - length)
        attn = inputs.joint_attention(apply_rope(q, rope), apply_rope(k, rope), v, length)
        if self.cross_attn is None:
            return attn
        text_start = length + inputs.num_image_tokens
        video_attn = attn[:, :length]
        cross = self.cross_attn(
            video_attn,
            h_norm[:, text_start:],
            # shared form: the text tokens' own keys/values of this very attention, reused
            (k[:, :, text_start:], v[:, :, text_start:]),
            self.norm_q,
            inputs,
        )
        return torch.cat([video_attn + cross, attn[:, length:]], dim=1)
