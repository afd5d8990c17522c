"""`motif-video`: one subcommand per job. Argument parsing and display only; the work is in the package.

Built: `info` (architecture and parameter counts of a preset or a checkpoint) and `convert`
(any official checkpoint layout -> a diffusers transformer directory). The other subcommands
are announced and exit with status 2 until the issue that builds them lands.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

# Subcommands whose implementation is not in this version, and where it is planned.
_PLANNED = {
    "generate": ("text-to-video / image-to-video generation", "issue #3 (sampling) and #5 (embedded model)"),
    "train": ("rectified-flow training with TREAD and REPA", "issue #4 (training)"),
    "prepare": ("turn a folder of clips into WebDataset shards", "issue #5 (data pipeline)"),
    "eval": ("VBench and weight-free video metrics", "issue #6 (evaluation)"),
    "analyze": ("per-block cross-frame attention analysis", "issue #6 (analysis)"),
    "serve": ("the Gradio web page", "issue #7 (web interface)"),
}


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motif-video",
        description="Motif-Video 2B: text-to-video and image-to-video diffusion transformer.",
    )
    from motif_video import __version__

    parser.add_argument("--version", action="version", version=f"motif-video {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = sub.add_parser(
        "info",
        help="show the architecture and parameter count of a preset or a checkpoint",
        description="Show the architecture and parameter counts (per stage) of a preset or a checkpoint. "
        "Builds the model on the meta device, so even the 2B preset needs no memory.",
    )
    source = info.add_mutually_exclusive_group()
    source.add_argument("--preset", default=None, help="a named preset (default: motif-video-2b); see --list")
    source.add_argument("--weights", default=None, help="a checkpoint: diffusers directory or single .safetensors file")
    source.add_argument("--list", action="store_true", help="list the presets and exit")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")

    convert = sub.add_parser(
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
        help="for a single file: preset giving the numbers its tensors do not show (default: %(default)s)",
    )
    convert.add_argument(
        "--max-shard-gb", type=float, default=5.0, help="largest shard size in GB (default: %(default)s)"
    )

    for name, (what, where) in _PLANNED.items():
        sub.add_parser(name, help=f"{what} (not built yet: {where})", description=f"{what}. Not built yet: {where}.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in _PLANNED:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "info":
            return _info(args)
        if args.command == "convert":
            return _convert(args)
        what, where = _PLANNED[args.command]
        print(
            f"motif-video {args.command}: {what} is not built yet in this version; it arrives with {where}.",
            file=sys.stderr,
        )
        return 2
    except (UsageError, ValueError, FileNotFoundError) as e:
        print(f"motif-video {args.command}: error: {e}", file=sys.stderr)
        return 2


def _info(args: argparse.Namespace) -> int:
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
        cfg = read_config(args.weights)[0]
        source = args.weights
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


def _convert(args: argparse.Namespace) -> int:
    import torch

    from motif_video.config import get_preset
    from motif_video.model.checkpoint_io import load_transformer, save_transformer

    if args.max_shard_gb <= 0:
        raise UsageError(f"--max-shard-gb must be > 0, got {args.max_shard_gb}")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model = load_transformer(args.source, dtype=dtype, config=get_preset(args.preset))
    out = save_transformer(model, args.output, max_shard_bytes=int(args.max_shard_gb * 1e9))
    print(f"wrote {out} ({model.num_parameters():,} parameters, cross-attention kv={model.cfg.cross_attention_kv})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
