"""Guidance: combine the conditional and unconditional velocities of one step.

- "none": the conditional prediction alone (one transformer pass per step).
- "cfg": classifier-free guidance, `base + s * (cond - uncond)` with base = uncond (the usual
  form; scale 1 gives cond) or base = cond ("original formulation"; scale 0 gives cond).
- "apg": Adaptive Projected Guidance (Sadat et al., arXiv 2410.02416): the guidance direction
  `cond - uncond` is averaged with momentum, clipped to a norm threshold, and split into its parts
  parallel and orthogonal to `cond`; the parallel part (which oversaturates) is weighted by eta.
  Norms and projections are taken per (batch, frame) over channels, height and width
  (dims -1, -2, -4 of [B, C, F, H, W]), in float64.

The released model's settings (reported by its inference code): APG, scale 8, norm threshold 12,
momentum 0.1, original formulation, norm over dims (-1, -2, -4). A weights directory's
`guider/guider_config.json` (diffusers' guider format) overrides them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor

GuidanceKind = Literal["none", "cfg", "apg"]


@dataclass(frozen=True)
class GuidanceConfig:
    kind: GuidanceKind = "apg"
    scale: float = 8.0
    norm_threshold: float = 12.0  # APG: clip the guidance direction to this norm (0: no clipping)
    momentum: float | None = 0.1  # APG: running average of the direction (None: off)
    eta: float = 1.0  # APG: weight of the part parallel to cond
    norm_dims: tuple[int, ...] = (-1, -2, -4)  # APG: dims of the norm and projection
    original_formulation: bool = True  # base the update on cond instead of uncond

    def __post_init__(self) -> None:
        if self.kind not in ("none", "cfg", "apg"):
            raise ValueError(f"unknown guidance {self.kind!r}; choose one of ['apg', 'cfg', 'none']")
        if not math.isfinite(self.scale) or self.scale < 0:
            raise ValueError(f"guidance scale must be a finite number >= 0, got {self.scale}")

    @property
    def active(self) -> bool:
        """Whether the unconditional pass is needed at all."""
        neutral = 0.0 if self.original_formulation else 1.0
        return self.kind != "none" and not math.isclose(self.scale, neutral)

    def with_kind(self, kind: GuidanceKind, scale: float | None = None) -> GuidanceConfig:
        """Switch kind; CFG switched to from APG uses the usual (uncond-based) form."""
        cfg = self if kind == self.kind else replace(self, kind=kind, original_formulation=kind == "apg")
        return cfg if scale is None else replace(cfg, scale=scale)

    @classmethod
    def from_diffusers(cls, config: dict[str, Any]) -> GuidanceConfig:
        """From a diffusers `guider_config.json` (ClassifierFreeGuidance or AdaptiveProjectedGuidance)."""
        name = config.get("_class_name")
        if name == "ClassifierFreeGuidance":
            return cls(
                kind="cfg",
                scale=config.get("guidance_scale", 7.5),
                original_formulation=config.get("use_original_formulation", False),
            )
        if name == "AdaptiveProjectedGuidance":
            dims = config.get("adaptive_projected_guidance_norm_dim")
            return cls(
                kind="apg",
                scale=config.get("guidance_scale", 7.5),
                norm_threshold=config.get("adaptive_projected_guidance_rescale", 15.0),
                momentum=config.get("adaptive_projected_guidance_momentum"),
                eta=config.get("eta", 1.0),
                norm_dims=(dims,) if isinstance(dims, int) else tuple(dims) if dims is not None else (),
                original_formulation=config.get("use_original_formulation", False),
            )
        raise ValueError(
            f"guider {name!r} is not supported; expected ClassifierFreeGuidance or AdaptiveProjectedGuidance"
        )


class Guidance:
    """One generation's guidance state (APG's momentum buffer); call once per step."""

    def __init__(self, config: GuidanceConfig) -> None:
        self.config = config
        self.running: Tensor | None = None

    def __call__(self, cond: Tensor, uncond: Tensor | None) -> Tensor:
        cfg = self.config
        if not cfg.active:
            return cond
        base = cond if cfg.original_formulation else uncond
        direction = cond - uncond
        if cfg.kind == "cfg":
            return base + cfg.scale * direction
        return base + cfg.scale * self._apg_update(direction, cond)

    def _apg_update(self, direction: Tensor, cond: Tensor) -> Tensor:
        cfg = self.config
        dims = list(cfg.norm_dims) or list(range(1, direction.dim()))
        if cfg.momentum is not None:
            self.running = direction if self.running is None else direction + cfg.momentum * self.running
            direction = self.running
        if cfg.norm_threshold > 0:
            norm = direction.norm(p=2, dim=dims, keepdim=True)
            direction = direction * torch.minimum(torch.ones_like(direction), cfg.norm_threshold / norm)
        # Project in float64: the parallel part is a small difference of large numbers.
        unit = torch.nn.functional.normalize(cond.double(), dim=dims)
        parallel = (direction.double() * unit).sum(dim=dims, keepdim=True) * unit
        orthogonal = direction.double() - parallel
        return orthogonal.to(direction.dtype) + cfg.eta * parallel.to(direction.dtype)
