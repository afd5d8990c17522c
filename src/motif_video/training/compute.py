"""Training compute from a model config and the token counts: FLOPs per sample and per step.

Counted: every matrix product (linear layers, the patch convolution, attention's QK^T and AV), at
2 FLOPs per multiply-add, the way `torch.utils.flop_counter` counts them; norms, RoPE, GELU and
the other elementwise work are left out (a few percent at most). A training step is forward plus
backward, taken as 3x the forward (the backward of a product costs two products). TREAD routing
shrinks the video sequence of the routed encoder blocks to `keep_ratio` of the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from motif_video.config import TransformerConfig

TRAINING_MULTIPLIER = 3.0  # forward + backward

# Dense BF16 peak of one GPU, FLOP/s (vendor data sheets, SXM parts, without sparsity).
PEAK_FLOPS = {"h100": 989e12, "h200": 989e12, "b200": 2250e12, "a100": 312e12}


@dataclass(frozen=True)
class Routing:
    start: int  # first routed encoder block
    end: int  # last routed encoder block (inclusive)
    keep_ratio: float


def forward_flops(
    cfg: TransformerConfig,
    video_tokens: int,
    text_tokens: int,
    image_tokens: int = 0,
    routing: Routing | None = None,
) -> float:
    """FLOPs of one forward pass for one sample."""
    d, h = cfg.hidden_size, cfg.mlp_hidden
    s_all = text_tokens + image_tokens  # the context the encoder attends to
    patch_in = cfg.in_channels * cfg.patch_size_t * cfg.patch_size**2
    patch_out = cfg.out_channels * cfg.patch_size_t * cfg.patch_size**2

    macs = video_tokens * patch_in * d  # patch embedding
    macs += 256 * d + d * d  # timestep embedding
    macs += text_tokens * (cfg.text_dim * d + d * d)  # text projection
    if image_tokens:
        macs += image_tokens * (cfg.image_dim**2 + cfg.image_dim * d)

    def cross_attention(tokens: int) -> int:
        """Shared Cross-Attention of `tokens` video queries on the text tokens."""
        m = tokens * d * d * 2  # query and output projections
        m += 2 * tokens * text_tokens * d  # QK^T and AV
        m += text_tokens * (3 * d * d if cfg.cross_attention_kv == "shared" else 2 * d * d)
        return m

    encoder = cfg.num_dual_blocks + cfg.num_single_blocks
    for block in range(encoder):
        routed = routing is not None and routing.start <= block <= routing.end
        lv = max(1, round(video_tokens * routing.keep_ratio)) if routed else video_tokens
        joint = lv + s_all
        if block < cfg.num_dual_blocks:
            macs += 2 * d * 6 * d  # two adaLN modulations
            macs += joint * (3 * d * d + d * d + 2 * d * h)  # per-stream QKV, output, MLP
            macs += 2 * joint * joint * d  # joint attention
            if cfg.cross_attention_dual:
                macs += cross_attention(lv)
        else:
            macs += d * 3 * d  # adaLN modulation
            macs += joint * (3 * d * d + d * h + (d + h) * d)  # QKV, MLP in, fused output
            macs += 2 * joint * joint * d
            if cfg.cross_attention_single:
                macs += cross_attention(lv) - text_tokens * 3 * d * d * (cfg.cross_attention_kv == "shared")
    for _ in range(cfg.num_decoder_blocks):  # [decoder tokens ; encoder output]: twice the video sequence
        joint = 2 * video_tokens
        macs += d * 3 * d + joint * (3 * d * d + d * h + (d + h) * d) + 2 * joint * joint * d
    macs += d * 2 * d + video_tokens * d * patch_out  # final layer
    return 2.0 * macs


def training_flops(cfg: TransformerConfig, video_tokens: int, text_tokens: int, **kwargs) -> float:
    """FLOPs of forward + backward for one sample."""
    return TRAINING_MULTIPLIER * forward_flops(cfg, video_tokens, text_tokens, **kwargs)


def peak_flops(device) -> float | None:
    """Dense BF16 peak of the accelerator `device` (a torch.device) when it is one of PEAK_FLOPS, else None."""
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def gpu_hours(flops: float, gpu: str, mfu: float) -> float:
    if gpu not in PEAK_FLOPS:
        raise ValueError(f"unknown GPU {gpu!r}; choose one of {sorted(PEAK_FLOPS)}")
    if not 0 < mfu <= 1:
        raise ValueError(f"MFU must be in (0, 1], got {mfu}")
    return flops / (PEAK_FLOPS[gpu] * mfu) / 3600
