"""Test helpers: tiny random reference models (diffusers), perturbed weights, model inputs."""

from __future__ import annotations

import torch
from torch import nn

TEXT_DIM = 32
IMAGE_DIM = 24


def tiny_diffusers_kwargs(**overrides) -> dict:
    """Constructor arguments of a tiny diffusers `MotifVideoTransformer3DModel` (every stage present)."""
    kwargs = dict(
        in_channels=33,
        out_channels=16,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_single_layers=4,
        num_decoder_layers=2,
        text_embed_dim=TEXT_DIM,
        image_embed_dim=IMAGE_DIM,
        rope_axes_dim=(4, 6, 6),
        enable_text_cross_attention_dual=True,
        enable_text_cross_attention_single=True,
    )
    kwargs.update(overrides)
    return kwargs


@torch.no_grad()
def perturb_(model: nn.Module, seed: int = 0, std: float = 0.2) -> nn.Module:
    """Random values in every parameter: zero-initialised paths (adaLN, cross-attention output)
    would otherwise hide bugs behind exact zeros. Norm scales stay near 1."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        centre = 1.0 if "norm" in name and name.endswith("weight") and p.dim() == 1 else 0.0
        p.copy_(centre + std * torch.randn(p.shape, generator=g))
    return model


def make_reference(**overrides):
    from diffusers import MotifVideoTransformer3DModel

    return perturb_(MotifVideoTransformer3DModel(**tiny_diffusers_kwargs(**overrides))).eval()


def make_inputs(
    batch: int = 2,
    frames: int = 3,
    height: int = 6,
    width: int = 4,
    text_len: int = 7,
    valid: tuple[int, ...] | None = (5, 3),
    image_tokens: int | None = 3,
    in_channels: int = 33,
    text_dim: int = TEXT_DIM,
    image_dim: int = IMAGE_DIM,
    seed: int = 1,
) -> dict:
    """Keyword inputs for either model; `valid` gives each sample's number of real text tokens."""
    g = torch.Generator().manual_seed(seed)
    inputs = dict(
        hidden_states=torch.randn(batch, in_channels, frames, height, width, generator=g),
        timestep=torch.rand(batch, generator=g) * 1000,
        encoder_hidden_states=torch.randn(batch, text_len, text_dim, generator=g),
        encoder_attention_mask=None,
        image_embeds=None,
    )
    if valid is not None:
        mask = torch.zeros(batch, text_len)
        for i, n in enumerate(valid[:batch]):
            mask[i, :n] = 1
        inputs["encoder_attention_mask"] = mask
    if image_tokens:
        inputs["image_embeds"] = torch.randn(batch, image_tokens, image_dim, generator=g)
    return inputs


def shared_form_reference(**overrides) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A diffusers model whose cross-attention computes what the original code computes:
    query = LayerNorm(Linear(attn_output)) -> the block's own norm_q; keys/values from the block's
    own self-attention `to_k` / `to_v` (and `norm_k`) applied to the normalised text; output
    through `cross_attn_out_proj`. Returns the model and its state dict in the original layout."""
    model = perturb_(_with_shared_cross_attention(make_reference(**overrides).train(False)), seed=3).eval()
    original = {}
    for key, value in model.state_dict().items():
        if ".cross_attn." in key:
            rest = key.split(".cross_attn.", 1)[1]
            prefix = key.split(".cross_attn.", 1)[0]
            renamed = {
                "to_q.0.": "cross_attn_query_proj.",
                "to_q.1.": "cross_attn_query_norm.",
                "to_out.0.": "cross_attn_out_proj.",
            }
            for old, new in renamed.items():
                if rest.startswith(old):
                    original[f"{prefix}.{new}{rest[len(old) :]}"] = value.clone()
            continue  # cross_attn.to_k/to_v/norm_q/norm_k are the self-attention's own modules
        original[key] = value.clone()
    return model, original


def _with_shared_cross_attention(model: nn.Module) -> nn.Module:
    for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
        cross = block.cross_attn
        if cross is None:
            continue
        dim = cross.to_q.in_features
        cross.to_q = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim, eps=1e-6))
        cross.to_k, cross.to_v = block.attn.to_k, block.attn.to_v
        cross.norm_q, cross.norm_k = block.attn.norm_q, block.attn.norm_k
    return model


def kill_after_steps(command: list[str], run_dir, steps: int, timeout: float = 240) -> None:
    """Start `command` (a training run writing run_dir/metrics.jsonl) and kill -9 it once `steps` steps are logged."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    metrics = Path(run_dir) / "metrics.jsonl"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < steps):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
