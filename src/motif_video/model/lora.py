"""LoRA adapter files: what a LoRA fine-tune leaves beside its base, and how a base takes one.

The file is safetensors in the diffusers / peft convention, named for the official diffusers
layout of `MotifVideoTransformer3DModel` (`transformer.<official module>.lora_A.weight`, `.lora_B.weight`),
so that diffusers' LoRA loading and ours read the same file; its metadata holds the rank and
alpha (the merge scale is alpha / rank). Where we fuse projections (Q/K/V), one adapter of ours
is one adapter per official projection: the same A, the rows of B split as the key table splits
the weight (`checkpoint_io.key_table`). Applying a file adds scale * (alpha / rank) * B @ A to each
weight, so scale 0 leaves the base exactly as it was.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from motif_video.config import TransformerConfig
from motif_video.model.checkpoint_io import key_table
from motif_video.model.transformer import MotifVideoTransformer

PREFIX = "transformer."


def to_official(cfg: TransformerConfig, adapters: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """{our weight name (without .weight): (A [r, in], B [out, r])} -> official adapter tensors."""
    table = key_table(cfg)
    out = {}
    for ours, (a, b) in adapters.items():
        parts = table[f"{ours}.weight"]
        start = 0
        for name, rows in parts:
            module = name.removesuffix(".weight")
            end = start + (rows if rows is not None else b.shape[0])
            out[f"{PREFIX}{module}.lora_A.weight"] = a.clone()  # one copy per official projection
            out[f"{PREFIX}{module}.lora_B.weight"] = b[start:end].contiguous()
            start = end
    return out


def save_adapter(path: str | Path, tensors: dict[str, Tensor], rank: int, alpha: float, base: str = "") -> Path:
    from safetensors.torch import save_file

    from motif_video.media import atomic_write

    metadata = {
        "format": "pt",
        "lora_rank": str(rank),
        "lora_alpha": str(alpha),
        "base": base,
        "layout": "diffusers MotifVideoTransformer3DModel (peft names)",
    }
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_adapter(path: str | Path) -> tuple[dict[str, Tensor], float]:
    """The adapter's tensors and its alpha / rank scale; a clear error for a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {path} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(
            f"LoRA file {path} is not a readable safetensors file ({str(e).splitlines()[0][:120]})"
        ) from None
    if not any(k.endswith(".lora_A.weight") for k in tensors):
        raise ValueError(f"LoRA file {path} holds no lora_A / lora_B tensors")
    rank = int(metadata.get("lora_rank", next(v.shape[0] for k, v in tensors.items() if k.endswith("lora_A.weight"))))
    alpha = float(metadata.get("lora_alpha", rank))
    return tensors, alpha / rank


@torch.no_grad()
def apply_adapter(model: MotifVideoTransformer, path: str | Path, scale: float = 1.0) -> int:
    """Merge the adapter at `path` into `model`'s weights (in place), times `scale`; returns how many
    of our weights changed. Every adapter in the file must name a projection of the model."""
    tensors, unit = read_adapter(path)
    table = key_table(model.cfg)
    official_to_ours = {name: (ours, i) for ours, parts in table.items() for i, (name, _) in enumerate(parts)}
    params = dict(model.named_parameters())
    deltas: dict[str, list[Tensor | None]] = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removeprefix(PREFIX).removesuffix(".lora_A.weight")
        b_key = key.replace(".lora_A.weight", ".lora_B.weight")
        if b_key not in tensors or f"{module}.weight" not in official_to_ours:
            raise ValueError(f"LoRA file {path}: {module} is not a projection of this model (or lacks lora_B)")
        ours, index = official_to_ours[f"{module}.weight"]
        deltas.setdefault(ours, [None] * len(table[ours]))[index] = tensors[b_key].float() @ a.float()
    for ours, parts in deltas.items():
        weight = params[ours]
        rows = [r if r is not None else weight.shape[0] for _, r in table[ours]]
        full = torch.cat(
            [d if d is not None else torch.zeros(n, weight.shape[1]) for d, n in zip(parts, rows, strict=True)]
        )
        if full.shape != weight.shape:
            raise ValueError(
                f"LoRA file {path}: the adapter of {ours} is {tuple(full.shape)}, the weight {tuple(weight.shape)}"
            )
        weight.add_((scale * unit * full).to(weight.device, weight.dtype))
    return len(deltas)
