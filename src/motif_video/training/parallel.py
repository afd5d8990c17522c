"""Parallelism and memory switches, applied to a built model from the outside.

FSDP2 (`fully_shard`) shards every block, then the transformer and the REPA projector, over a DeviceMesh: one dimension
(plain data-parallel sharding) on one node, two (replicate across nodes x shard within a node:
HSDP) when torchrun spans several nodes or `train.hsdp_replicas` asks for replica groups. With
`train.precision = "bf16"` FSDP2 gathers parameters and computes in bfloat16 and reduces gradients
in float32 (`MixedPrecisionPolicy`); the sharded parameters and the optimizer state stay float32,
as the report trains (bf16 compute, fp32 reductions and optimizer). Activation checkpointing and
`torch.compile` are per block. The model code knows none of this.
"""

from __future__ import annotations

import itertools
import os

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from motif_video.distributed import World, print0


def parallelize(
    container: nn.Module,
    transformer: nn.Module,
    world: World,
    activation_checkpointing: bool,
    compile_blocks: bool,
    precision: str = "fp32",
    replicas: int = 0,
) -> nn.Module:
    """`replicas`: HSDP replica groups (0: one per node)."""
    blocks = list(itertools.chain(transformer.dual_blocks, transformer.single_blocks, transformer.decoder_blocks))
    transformer.activation_checkpointing = activation_checkpointing
    if compile_blocks:
        transformer.compile_blocks()
    if world.size > 1:
        mesh = device_mesh(world, replicas)
        shape = " x ".join(f"{n} {size}" for n, size in zip(mesh.mesh_dim_names, mesh.shape, strict=True))
        print0(f"FSDP2 over {world.size} processes: mesh {shape}; compute {precision}, gradient reduction fp32")
        policy = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16 if precision == "bf16" else None,
            reduce_dtype=torch.float32,  # gradients are summed over ranks in float32 whatever the compute dtype
        )
        for block in blocks:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        # Each module that is called directly gets its own root (its forward hook gathers its params).
        for module in container.children():
            fully_shard(module, mesh=mesh, mp_policy=policy)
    return container


def device_mesh(world: World, replicas: int = 0):
    """1-D (shard) on one node; 2-D (replicate x shard, HSDP) across nodes or for `replicas` > 1 groups."""
    if replicas <= 0:
        replicas = world.size // int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
    if world.size % replicas:
        raise ValueError(f"train.hsdp_replicas={replicas} does not divide the {world.size} processes")
    if replicas > 1:  # HSDP: replicate across the groups, shard inside each
        shape = (replicas, world.size // replicas)
        return init_device_mesh(world.device.type, shape, mesh_dim_names=("replicate", "shard"))
    return init_device_mesh(world.device.type, (world.size,), mesh_dim_names=("shard",))


def autocast(precision: str, device: torch.device):
    """bf16 autocast for matmuls; parameters, optimizer and loss stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
