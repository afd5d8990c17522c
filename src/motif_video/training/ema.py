"""Exponential moving average of the trainable weights, kept in float32 beside the model, and the
full EMA weights read back out of a (possibly FSDP2-sharded) model for export."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Tracks the trainable parameters of `model` whose names do not start with one of `skip`."""

    def __init__(self, model: nn.Module, decay: float, skip: tuple[str, ...] = ()) -> None:
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith(skip)]
        self.shadow = [p.detach().float().clone() for p in self._params(model)]

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        return [params[n] for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = [p.detach().float() for p in self._params(model)]
        torch._foreach_lerp_(self.shadow, current, 1 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow, strict=True))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, name in enumerate(self.names):
            self.shadow[i].copy_(state[name])


def _full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().float().cpu()


def ema_weights(model: nn.Module, ema: EMA, module: str = "transformer") -> dict[str, torch.Tensor]:
    """Full (unsharded) CPU weights of `model.<module>` ("transformer" or "text_encoder") with the
    EMA values, LoRA merged in. A collective under FSDP2: every rank must call it."""
    prefix = module + "."
    weights = {n: _full(p) for n, p in model.named_parameters() if n.startswith(prefix)}
    weights.update({n: _full(s) for n, s in ema.state_dict().items() if n.startswith(prefix)})
    return merged_weights({n.removeprefix(prefix).removeprefix("_orig_mod."): w for n, w in weights.items()})


def merged_weights(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with LoRA adapters (peft names) -> plain weights: W + B @ A, adapter keys dropped."""
    out = {}
    for name, value in named.items():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        if ".base_layer." in name:
            prefix, _, leaf = name.partition(".base_layer.")
            if leaf == "weight":
                a, b = named[f"{prefix}.lora_A.default.weight"], named[f"{prefix}.lora_B.default.weight"]
                value = value + b.float() @ a.float()
            name = f"{prefix}.{leaf}"
        out[name] = value
    return out


def lora_adapters(ema: EMA) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{our weight name: (A, B)} of every LoRA adapter of the transformer, EMA values. A collective under FSDP2."""
    values = {n.removeprefix("transformer.").replace("_orig_mod.", ""): _full(v) for n, v in ema.state_dict().items()}
    pairs = {}
    for name, a in values.items():
        if ".lora_A." in name:
            pairs[name.split(".lora_A.")[0]] = (a, values[name.replace(".lora_A.", ".lora_B.")])
    return pairs
