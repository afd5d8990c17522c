"""Starting a training stage from the previous stage's transformer (the curriculum's transitions).

A stage may change, relative to the checkpoint it starts from,
- the text encoder: a new `text_dim` rebuilds the text projection (`text_embed`, fresh weights) and
  keeps everything else;
- Shared Cross-Attention: modules switched on (`cross_attention_dual` / `_single`) are inserted with
  their output projection at zero, so the model's output is unchanged at the moment of insertion;
- resolution and frame buckets: nothing to do in the weights (RoPE positions and the timestep shift
  are computed from each batch's token grid).
Any other architectural difference is an error naming the fields. REPA needs nothing here either:
its projector and teacher are never part of a transformer checkpoint, so a stage that switches the
teacher or turns REPA off starts without them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from motif_video.config import TransformerConfig
from motif_video.model.checkpoint_io import load_transformer
from motif_video.model.transformer import MotifVideoTransformer

CHANGEABLE = ("text_dim", "cross_attention_dual", "cross_attention_single")


@dataclass(frozen=True)
class Transition:
    carried: int  # tensors copied from the checkpoint
    rebuilt: tuple[str, ...]  # modules started afresh (the text projection after an encoder switch)
    inserted: tuple[str, ...]  # modules new in this stage (Shared Cross-Attention)

    def describe(self) -> str:
        parts = [f"{self.carried} tensors carried over"]
        if self.rebuilt:
            parts.append(f"rebuilt {', '.join(self.rebuilt)}")
        if self.inserted:
            parts.append(f"inserted {len(self.inserted)} cross-attention modules (output projection at zero)")
        return "; ".join(parts)


def check_changes(old: TransformerConfig, new: TransformerConfig) -> None:
    changed = {
        f.name: (getattr(old, f.name), getattr(new, f.name))
        for f in dataclasses.fields(TransformerConfig)
        if getattr(old, f.name) != getattr(new, f.name)
    }
    fixed = {k: v for k, v in changed.items() if k not in CHANGEABLE}
    if fixed:
        listed = ", ".join(f"{k} {a} (checkpoint) vs {b} (config)" for k, (a, b) in fixed.items())
        fix = " ".join(f"model.overrides.{k}={_toml(a)}" for k, (a, _) in fixed.items())
        raise ValueError(
            f"the checkpoint's architecture differs from the run's model config beyond what a run may change "
            f"({', '.join(CHANGEABLE)}): {listed}; match it with model.preset or: {fix}"
        )
    for flag in ("cross_attention_dual", "cross_attention_single"):
        if getattr(old, flag) and not getattr(new, flag):
            raise ValueError(
                f"{flag} is on in the checkpoint; a stage can insert Shared Cross-Attention, not remove it"
            )


def carry_over(old: MotifVideoTransformer, new: MotifVideoTransformer) -> Transition:
    """Copy `old`'s weights into the freshly initialised `new` where the architectures agree."""
    check_changes(old.cfg, new.cfg)
    source, target = old.state_dict(), new.state_dict()
    text_switch = old.cfg.text_dim != new.cfg.text_dim
    inserted = sorted({k.rsplit(".cross_attn.", 1)[0] + ".cross_attn" for k in target if k not in source})
    # carried over: what both have, except the text projection after an encoder switch; the rest
    # keeps its fresh initialisation (rebuilt text projection, inserted modules)
    carried = {
        k: source[k].to(v.dtype)
        for k, v in target.items()
        if k in source and not (text_switch and k.startswith("text_embed."))
    }
    new.load_state_dict({**target, **carried}, strict=True)
    for module in inserted:  # zero output: the model computes exactly what it did before the insertion
        proj = new.get_submodule(module).proj
        torch.nn.init.zeros_(proj.weight)
        torch.nn.init.zeros_(proj.bias)
    return Transition(len(carried), ("text_embed",) if text_switch else (), tuple(inserted))


def start_from(
    checkpoint: str | Path, cfg: TransformerConfig, generator: torch.Generator, device: torch.device | str = "cpu"
) -> tuple[MotifVideoTransformer, Transition]:
    """This stage's transformer (`cfg`), initialised and then filled from `checkpoint`."""
    old = load_transformer(checkpoint, dtype=torch.float32, device=device)
    with torch.device("meta"):
        new = MotifVideoTransformer(cfg)
    new.to_empty(device=device)
    new.init_weights(generator)
    return new, carry_over(old, new)


def _toml(value) -> str:
    """A value as a dotted override writes it."""
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "[" + ",".join(_toml(v) for v in value) + "]"
    return str(value)
