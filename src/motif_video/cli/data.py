"""The data commands: `prepare` (clips -> bucketed shards) and `precompute` (shards -> latents + text embeddings)."""

from __future__ import annotations

import argparse
from pathlib import Path

from motif_video.cli.common import UsageError, add_parser


def register(sub) -> None:
    curate = add_parser(
        sub,
        "curate",
        help="raw videos and images -> curated clips and a clip table (the report's data funnel)",
        description="Run the curation funnel over SOURCE (a folder of raw videos and images, or a .csv / .jsonl list "
        "with a path column and optional caption and synthetic columns): sanitation, black borders, burned-in text "
        "(OCR), shot splitting, quality filters (brightness, motion, sharpness, aesthetic with local weights), "
        "near-duplicates and stage admission. Writes OUT/clips.parquet (one row per candidate clip and per rejected "
        "file, with every measurement and the reason), the kept clips re-encoded under OUT/clips/, and "
        "OUT/report.html. Re-running skips files already measured. `motif-video prepare OUT ...` reads the result.",
    )
    curate.add_argument("source", help="folder of raw files, or a .csv / .jsonl list")
    curate.add_argument("out", help="output folder")
    curate.add_argument("--config", default=None, help="TOML file with the stages' sections (see docs/data.md)")
    curate.add_argument("overrides", nargs="*", help="section.key=value settings, e.g. quality.motion_min=0.01")
    curate.add_argument("--engine", choices=["local", "ray"], default="local", help="local process pool or Ray Data")
    curate.add_argument("--workers", type=int, default=1, help="processes (local) or CPUs of a local Ray instance")
    curate.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
    curate.add_argument("--quiet", action="store_true", help="no progress bars")
    curate.set_defaults(run=run_curate)

    prepare = add_parser(
        sub,
        "prepare",
        help="turn captioned videos (or the shapes world) into bucketed WebDataset shards",
        description="Decode, resample, cut, bucket, resize and write videos as WebDataset shards plus a metadata "
        "table (metadata.jsonl) and a report of skipped files (report.json). SOURCE is a folder of videos with a "
        ".txt caption beside each, a .csv/.jsonl list of path,caption, or shapes:N for N procedural clips. "
        "Re-running resumes: sources already in committed shards are skipped.",
    )
    prepare.add_argument("source", help="folder (or a curate output folder), .csv/.jsonl list, or shapes:N")
    prepare.add_argument("out", help="output folder for shards, metadata.jsonl and report.json")
    prepare.add_argument("--fps", type=float, default=8.0, help="frame rate of the clips")
    prepare.add_argument("--frame-buckets", default="17,33", help="clip lengths in frames, comma-separated")
    prepare.add_argument("--area", type=int, default=64 * 96, help="pixels per frame of every aspect bucket")
    prepare.add_argument("--shard-size", type=int, default=64, help="clips per shard")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the shapes world")
    prepare.add_argument("--max-objects", type=int, default=2, help="shapes world: at most this many objects per clip")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(run=run_prepare)

    precompute = add_parser(
        sub,
        "precompute",
        help="encode prepared clips into VAE latents and text embeddings for training",
        description="Read the shards `motif-video prepare` wrote, encode every clip with the VAE and every caption "
        "with the text encoder of a weights directory, and write training shards (data.source = 'shards'). "
        "Launch with torchrun to split the shards over processes; re-running skips finished shards.",
    )
    precompute.add_argument("clips", help="folder of prepare's shards")
    precompute.add_argument("weights", help="pipeline directory with vae/, text_encoder/, tokenizer/")
    precompute.add_argument("out", help="output folder")
    precompute.add_argument("--device", default="cpu", help="device the encoders run on")
    precompute.add_argument("--quiet", action="store_true", help="no progress bar")
    precompute.set_defaults(run=run_precompute)


def run_prepare(args: argparse.Namespace) -> int:
    from motif_video.data.preprocess import PrepareConfig, prepare

    try:
        buckets = tuple(int(v) for v in args.frame_buckets.split(","))
    except ValueError:
        raise UsageError(f"--frame-buckets must be integers separated by commas, got {args.frame_buckets!r}") from None
    if any(b < 1 or (b - 1) % 4 for b in buckets):
        raise UsageError(f"--frame-buckets must be 4k+1 frame counts (1, 17, 33, 65, 121, ...), got {buckets}")
    if args.fps <= 0 or args.area < 256 or args.shard_size < 1 or args.max_objects < 1:
        raise UsageError(
            f"--fps must be > 0, --area >= 256, --shard-size >= 1 and --max-objects >= 1, got {args.fps}, "
            f"{args.area}, {args.shard_size} and {args.max_objects}"
        )
    cfg = PrepareConfig(
        fps=args.fps, frame_buckets=buckets, area=args.area, shard_size=args.shard_size, max_objects=args.max_objects
    )
    report = prepare(args.source, args.out, cfg, seed=args.seed, progress=not args.quiet)
    print(
        f"{report['clips']} clips from {report['sources']} sources in {args.out}; {len(report['skipped'])} "
        f"skipped (see report.json); buckets {report['buckets']}"
    )
    return 0


def run_precompute(args: argparse.Namespace) -> int:
    from motif_video import distributed
    from motif_video.data.precompute import precompute
    from motif_video.sampling.pipeline import check_weights_dir

    check_weights_dir(Path(args.weights))
    world = distributed.init()
    try:
        written = precompute(
            args.clips, args.weights, args.out, world.rank, world.size, args.device, progress=not args.quiet
        )
        distributed.barrier()
    finally:
        distributed.shutdown()
    print(f"rank {world.rank}: wrote {len(written)} shards to {args.out}")
    return 0


def run_curate(args: argparse.Namespace) -> int:
    from motif_video.data.curation.config import CurateConfig
    from motif_video.data.curation.funnel import curate

    if args.config is not None and not Path(args.config).is_file():
        raise UsageError(f"--config file {args.config} does not exist")
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    cfg = CurateConfig.load(args.config, args.overrides)
    summary = curate(
        args.source,
        args.out,
        cfg,
        engine=args.engine,
        workers=args.workers,
        ray_address=args.ray_address,
        progress=not args.quiet,
    )
    rejected = ", ".join(f"{k} {v}" for k, v in summary["rejected_by"].items()) or "none"
    admitted = ", ".join(f"{k.removeprefix('stage_')} {v}" for k, v in summary["admitted"].items())
    print(
        f"{summary['kept']} clips kept of {summary['rows']} rows from {summary['sources']} files; "
        f"rejected by {rejected}; admitted {admitted}"
    )
    print(f"wrote {Path(args.out) / 'clips.parquet'} and {Path(args.out) / 'report.html'}")
    return 0
