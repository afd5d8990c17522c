"""Parallelism and memory switches, applied to a built model from the outside.

FSDP2 (`fully_shard`) shards every block, then the transformer and the REPA projector, over a DeviceMesh: one dimension
(plain data-parallel sharding) on one node, two (replicate across nodes x shard within a node:
HSDP) when torchrun spans several nodes. Activation checkpointing and `torch.compile` are per
block. The model code knows none of this.
"""

from __future__ import annotations

import itertools
import os

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from motif_video.distributed import World


def parallelize(
    container: nn.Module, transformer: nn.Module, world: World, activation_checkpointing: bool, compile_blocks: bool
) -> nn.Module:
    blocks = list(itertools.chain(transformer.dual_blocks, transformer.single_blocks, transformer.decoder_blocks))
    transformer.activation_checkpointing = activation_checkpointing
    if compile_blocks:
        for block in blocks:
            block.compile()
    if world.size > 1:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        nodes = world.size // per_node
        if nodes > 1:  # HSDP: replicate across nodes, shard inside each
            mesh = init_device_mesh(world.device.type, (nodes, per_node), mesh_dim_names=("replicate", "shard"))
        else:
            mesh = init_device_mesh(world.device.type, (world.size,), mesh_dim_names=("shard",))
        for block in blocks:
            fully_shard(block, mesh=mesh)
        # Each module that is called directly gets its own root (its forward hook gathers its params).
        for module in container.children():
            fully_shard(module, mesh=mesh)
    return container


def autocast(precision: str, device: torch.device):
    """bf16 autocast for matmuls; parameters, optimizer and loss stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
