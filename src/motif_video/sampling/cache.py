"""Step caching: reuse the transformer's last prediction while its input has changed little.

TeaCache (Liu et al. 2024, arXiv 2411.19108) observes that the timestep-modulated input of the
first block tracks how much the model's output will change between denoising steps. Per step:

    change  = mean |m_t - m_prev| / mean |m_prev|     m: the modulated input (transformer.modulated_input)
    total  += change
    total < threshold  ->  reuse the last computed velocity (no transformer pass)
    else               ->  run the transformer, remember its velocity, total = 0

The first step and the last `keep_last` steps always run. TeaCache reuses the residual of the block
stack and rescales the indicator with a fitted polynomial; this keeps the indicator and the
accumulate-and-refresh rule and reuses the whole prediction (cond and uncond together), which
needs no model surgery. A threshold of 0 never reuses; no cache at all is the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class StepCache:
    threshold: float
    keep_last: int = 1
    computed: int = 0  # transformer passes run
    reused: int = 0  # steps that reused the last prediction
    _total: float = 0.0
    _indicator: Tensor | None = field(default=None, repr=False)
    _velocity: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.threshold >= 0:
            raise ValueError(f"cache threshold must be >= 0, got {self.threshold}")

    def lookup(self, indicator: Tensor, step: int, steps: int) -> Tensor | None:
        """The velocity to reuse at this step, or None: run the transformer and `store` it."""
        if self._indicator is not None:
            change = ((indicator - self._indicator).abs().mean() / self._indicator.abs().mean().clamp(min=1e-12)).item()
            self._total += change
        self._indicator = indicator
        last = step >= steps - self.keep_last
        if self._velocity is not None and not last and self._total < self.threshold:
            self.reused += 1
            return self._velocity
        return None

    def store(self, velocity: Tensor) -> None:
        self._velocity = velocity
        self._total = 0.0
        self.computed += 1
