"""Exponential moving average of the trainable weights, kept in float32 beside the model."""

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
