"""The checkpoint commands: `info` (architecture and parameter counts) and `convert` (layouts)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from motif_video.cli.common import UsageError, add_parser


def register(sub) -> None:
    info = add_parser(
        sub,
        "info",
        help="show the architecture and parameter count of a preset or a checkpoint",
        description="Show the architecture and parameter counts (per stage) of a preset or a checkpoint. "
        "Builds the model on the meta device, so even the 2B preset needs no memory.",
    )
    source = info.add_mutually_exclusive_group()
    source.add_argument("--preset", default=None, help="a named preset (default: motif-video-2b); see --list")
    source.add_argument(
        "--weights",
        default=None,
        help="a checkpoint: diffusers directory or single .safetensors file, or a shipped model's name "
        "(shapes-tiny, shapes-tiny-4step)",
    )
    source.add_argument("--list", action="store_true", help="list the presets and exit")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(run=run_info)

    convert = add_parser(
        sub,
        "convert",
        help="convert a checkpoint (either official key layout) to a diffusers transformer directory",
        description="Read a transformer checkpoint in either official layout (diffusers directory or the original "
        "single .safetensors file) and write it as a diffusers transformer directory (config.json + safetensors "
        "shards). The output directory appears only when complete.",
    )
    convert.add_argument("source", help="checkpoint directory or .safetensors file")
    convert.add_argument("output", help="directory to write")
    convert.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="convert weights (default: keep)"
    )
    convert.add_argument(
        "--preset",
        default="motif-video-2b",
        help="for a single file: preset giving the numbers its tensors do not show",
    )
    convert.add_argument("--max-shard-gb", type=float, default=5.0, help="largest shard size in GB")
    convert.set_defaults(run=run_convert)


def run_info(args: argparse.Namespace) -> int:
    import torch

    from motif_video.config import PRESETS, get_preset
    from motif_video.model.checkpoint_io import read_config
    from motif_video.model.transformer import MotifVideoTransformer

    if args.list:
        for name, cfg in PRESETS.items():
            print(
                f"{name:16s} {cfg.num_dual_blocks} dual + {cfg.num_single_blocks} single + "
                f"{cfg.num_decoder_blocks} decoder blocks, hidden {cfg.hidden_size}"
            )
        return 0
    if args.weights:
        from motif_video.embedded import resolve_weights
        from motif_video.sampling.pipeline import training_run_hint

        source = str(resolve_weights(args.weights))
        hint = training_run_hint(Path(source))
        if hint:  # its config.json is the training config, not a model's
            raise ValueError(f"--weights {source} is not a checkpoint{hint}")
        cfg = read_config(source)[0]
    else:
        source = args.preset or "motif-video-2b"
        cfg = get_preset(source)
    with torch.device("meta"):
        model = MotifVideoTransformer(cfg)
    stages = {
        "embedders + output": sum(
            p.numel() for n, p in model.named_parameters() if not n.startswith(("dual_", "single_", "decoder_"))
        ),
        "dual-stream blocks": sum(p.numel() for p in model.dual_blocks.parameters()),
        "single-stream blocks": sum(p.numel() for p in model.single_blocks.parameters()),
        "DDT decoder blocks": sum(p.numel() for p in model.decoder_blocks.parameters()),
    }
    cross = sum(p.numel() for n, p in model.named_parameters() if ".cross_attn." in n)
    total = model.num_parameters()
    if args.json:
        print(
            json.dumps(
                {
                    "source": source,
                    "config": cfg.to_dict(),
                    "parameters": total,
                    "parameters_by_stage": stages,
                    "cross_attention_parameters": cross,
                },
                indent=2,
            )
        )
        return 0
    print(f"{source}: {total:,} parameters ({total / 1e9:.3f} B)")
    for stage, n in stages.items():
        print(f"  {stage:22s} {n:>15,}")
    print(f"  {'(Shared Cross-Attention)':22s} {cross:>15,}")
    print(
        f"  hidden {cfg.hidden_size} = {cfg.num_heads} heads x {cfg.head_dim}; patch {cfg.patch_size_t}x"
        f"{cfg.patch_size}x{cfg.patch_size}; channels {cfg.in_channels} -> {cfg.out_channels}; "
        f"text width {cfg.text_dim}; image width {cfg.image_dim}; RoPE axes {cfg.rope_axes_dim}, "
        f"theta {cfg.rope_theta}; cross-attention dual={cfg.cross_attention_dual} "
        f"single={cfg.cross_attention_single} kv={cfg.cross_attention_kv}"
    )
    return 0


def run_convert(args: argparse.Namespace) -> int:
    import torch

    from motif_video.config import get_preset
    from motif_video.model.checkpoint_io import load_transformer, save_transformer

    if args.max_shard_gb <= 0:
        raise UsageError(f"--max-shard-gb must be > 0, got {args.max_shard_gb}")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model = load_transformer(args.source, config=get_preset(args.preset))
    if dtype is not None:  # every tensor of the written checkpoint in the asked dtype
        model.to(dtype)
    out = save_transformer(model, args.output, max_shard_bytes=int(args.max_shard_gb * 1e9))
    print(f"wrote {out} ({model.num_parameters():,} parameters, cross-attention kv={model.cfg.cross_attention_kv})")
    return 0
