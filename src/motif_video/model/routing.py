"""TREAD token routing (Krause et al., arXiv 2501.04765), as the model sees it.

A `Route` says: from block `start` to block `end` (inclusive; blocks counted in forward order
over dual, single and decoder blocks), only the video tokens listed in `keep` are processed;
the others skip those blocks and re-enter the sequence unchanged after block `end`. Text
tokens always stay. Which tokens to keep and when to route is decided by the training code
(`random_route` is the official recipe's uniform random choice); the model only follows the
route it is given, and `route=None` is exactly the unrouted model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Route:
    start: int  # first routed block index
    end: int  # last routed block index (inclusive)
    keep: Tensor  # [B, K] indices of the video tokens that go through the routed blocks, sorted

    def gather(self, x: Tensor) -> Tensor:
        """[B, L, D] -> [B, K, D], the kept tokens in their original order."""
        return x.gather(1, self.keep[:, :, None].expand(-1, -1, x.shape[-1]))

    def scatter(self, full: Tensor, kept: Tensor) -> Tensor:
        """Put processed kept tokens [B, K, D] back into a copy of `full` [B, L, D]."""
        return full.scatter(1, self.keep[:, :, None].expand(-1, -1, full.shape[-1]), kept)

    def gather_rope(self, rope: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """[L, Dh] tables -> per-sample [B, K, Dh] tables at the kept positions."""
        return rope[0][self.keep], rope[1][self.keep]

    def validate(self, num_tokens: int, batch: int, num_blocks: int, decoder_start: int) -> None:
        if not 0 <= self.start <= self.end < num_blocks:
            raise ValueError(
                f"route blocks {self.start}..{self.end} must satisfy 0 <= start <= end < {num_blocks} "
                "(the number of blocks)"
            )
        if self.start < decoder_start <= self.end:
            raise ValueError(
                f"route blocks {self.start}..{self.end} cross the encoder/decoder boundary at block "
                f"{decoder_start}; a route must lie inside the encoder or inside the decoder"
            )
        if self.keep.dim() != 2 or self.keep.shape[0] != batch or self.keep.shape[1] < 1:
            raise ValueError(f"route.keep must have shape [batch={batch}, K>=1], got {tuple(self.keep.shape)}")
        if self.keep.dtype != torch.long:
            raise ValueError(f"route.keep must hold int64 token indices, got {self.keep.dtype}")
        if int(self.keep.min()) < 0 or int(self.keep.max()) >= num_tokens:
            raise ValueError(f"route.keep indices must lie in [0, {num_tokens}) (video tokens)")


def random_route(
    batch: int,
    num_tokens: int,
    keep_ratio: float,
    start: int,
    end: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Route:
    """Keep round(L * keep_ratio) uniformly random video tokens per sample (at least one)."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    k = max(1, round(num_tokens * keep_ratio))
    noise = torch.rand(batch, num_tokens, generator=generator, device=device)
    keep = noise.argsort(dim=1)[:, :k].sort(dim=1).values
    return Route(start=start, end=end, keep=keep)
