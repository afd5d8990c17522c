"""Context parallelism for sampling: the video token sequence split over processes (Ulysses).

Every rank holds 1/P of the video tokens (padded to a multiple of P; padded tokens are masked as
keys and dropped at the end) and the whole text. Outside attention each token is processed on its
own rank. Around attention, one all-to-all turns "my tokens, all heads" into "all tokens, my heads"
(N/P heads per rank), attention runs over the full sequence with the local heads, and a second
all-to-all turns the result back; the replicated text part simply takes its head slice, and its
output is all-gathered over heads. Shared Cross-Attention needs no communication (video queries,
replicated text keys). Only torch.distributed collectives are used, over a one-dimensional
`DeviceMesh` (NCCL on GPUs, gloo on CPUs).

    torchrun --nproc_per_node 2 -m motif_video generate "..."     (rank 0 writes the video)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from motif_video.model.attention import attention


@dataclass(frozen=True)
class ContextParallel:
    group: dist.ProcessGroup
    rank: int
    size: int

    @classmethod
    def over_world(cls, device_type: str) -> ContextParallel:
        """One mesh dimension over every process of the (initialised) default group."""
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device_type, (dist.get_world_size(),), mesh_dim_names=("context",))
        group = mesh.get_group("context")
        return cls(group, dist.get_rank(group), dist.get_world_size(group))

    # -- the sequence: split, mask, gather -----------------------------------------------------

    def shard_length(self, tokens: int) -> int:
        return -(-tokens // self.size)

    def shard(self, x: Tensor, dim: int = 1) -> Tensor:
        """This rank's slice of a sequence along `dim`, padded with zeros to size * shard_length."""
        tokens = x.shape[dim]
        local = self.shard_length(tokens)
        pad = [0, 0] * (x.dim() - dim - 1) + [0, local * self.size - tokens]
        return F.pad(x, pad).narrow(dim, self.rank * local, local)

    def valid(self, tokens: int, device: torch.device) -> Tensor:
        """[local] bool: which of this rank's tokens are real (not padding)."""
        local = self.shard_length(tokens)
        return torch.arange(self.rank * local, (self.rank + 1) * local, device=device) < tokens

    def gather(self, x: Tensor, tokens: int) -> Tensor:
        """[B, local, C] on every rank -> [B, tokens, C] on every rank (padding dropped)."""
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=1)[:, :tokens]

    # -- attention -------------------------------------------------------------------------------

    def attention(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, segments: list[tuple[int, bool]], backend: str
    ) -> Tensor:
        """Attention over a sequence made of `segments` (length here, sharded over ranks or not).

        q, k, v [B, N, sum(lengths), Dh] with the local part of each sharded segment; mask
        [B, 1, 1, sum(lengths)] over the local keys, or None. Returns [B, sum(lengths), N*Dh], like
        `attention`, for the same local tokens."""
        batch, heads, _, head_dim = q.shape
        if heads % self.size:
            raise ValueError(f"{heads} attention heads do not split over {self.size} processes")
        n = heads // self.size
        starts = [sum(length for length, _ in segments[:i]) for i in range(len(segments))]

        def full(t: Tensor) -> Tensor:  # [B, N, local seq, Dh] -> [B, n, full seq, Dh]
            pieces = []
            for (length, sharded), start in zip(segments, starts, strict=True):
                part = t[:, :, start : start + length]
                if sharded:
                    send = part.reshape(batch, self.size, n, length, head_dim).transpose(0, 1).contiguous()
                    received = torch.empty_like(send)  # [P, B, n, length, Dh]: rank j's tokens, my heads
                    dist.all_to_all_single(received, send, group=self.group)
                    part = received.permute(1, 2, 0, 3, 4).reshape(batch, n, self.size * length, head_dim)
                else:
                    part = part[:, self.rank * n : (self.rank + 1) * n]
                pieces.append(part)
            return torch.cat(pieces, dim=2)

        full_mask = None
        if mask is not None:
            pieces = []
            for (length, sharded), start in zip(segments, starts, strict=True):
                part = mask[..., start : start + length]
                if sharded:
                    gathered = [torch.empty_like(part) for _ in range(self.size)]
                    dist.all_gather(gathered, part.contiguous(), group=self.group)
                    part = torch.cat(gathered, dim=-1)
                pieces.append(part)
            full_mask = torch.cat(pieces, dim=-1)

        out = attention(full(q), full(k), full(v), full_mask, backend)  # [B, full seq, n*Dh]
        results, offset = [], 0
        for length, sharded in segments:
            if sharded:
                part = out[:, offset : offset + self.size * length]  # all tokens of the segment, my heads
                send = part.reshape(batch, self.size, length, n * head_dim).transpose(0, 1).contiguous()
                received = torch.empty_like(send)  # [P, B, length, n*Dh]: my tokens, rank j's heads
                dist.all_to_all_single(received, send, group=self.group)
                results.append(received.permute(1, 2, 0, 3).reshape(batch, length, heads * head_dim))
                offset += self.size * length
            else:
                part = out[:, offset : offset + length].contiguous()
                gathered = [torch.empty_like(part) for _ in range(self.size)]
                dist.all_gather(gathered, part, group=self.group)
                results.append(torch.cat(gathered, dim=-1))  # heads in rank order
                offset += length
        return torch.cat(results, dim=1)
