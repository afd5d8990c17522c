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
    curate.add_argument(
        "--captioner",
        choices=["server", "local"],
        default=None,
        help="caption the kept clips as the last stage (the options of `motif-video caption`; implied by "
        "--api-url or --model-dir)",
    )
    add_captioner_options(curate)
    curate.add_argument("--quiet", action="store_true", help="no progress bars")
    curate.set_defaults(run=run_curate)

    caption = add_parser(
        sub,
        "caption",
        help="caption curated clips with a vision-language model; its tags filter and balance the data",
        description="Send every kept clip of a `curate` folder (N uniformly sampled frames; an image as it is) to a "
        "vision-language model with the report's fixed request, parse its JSON answer (caption_long, caption_short, "
        "style, subject, action, camera_move, quality, watermark, nsfw, padded, multi_scene, timelapse; "
        "caption_truncated = the first sentence of caption_long) and add the columns to DIR/clips.parquet. The tags "
        "feed back: watermark / nsfw / padded / multi_scene / timelapse reject a clip, quality low keeps it out of "
        "the 480p and 720p stages, action Dynamic makes it eligible for SFT. Backends: a server with the OpenAI "
        "chat-completions API (--api-url, e.g. `vllm serve Qwen/Qwen3-VL-30B-A3B-Instruct`), or local "
        "transformers weights (--model-dir). A rerun asks only for clips without a result.",
    )
    caption.add_argument("directory", help="a `motif-video curate` output folder")
    add_captioner_options(caption)
    caption.add_argument("--quiet", action="store_true", help="no progress bar")
    caption.set_defaults(run=run_caption)

    select = add_parser(
        sub,
        "select",
        help="a domain-balanced subset of captioned clips (SFT, 720p), as a list prepare reads",
        description="Take the captioned kept clips of DIR eligible for a stage ('sft': action Dynamic, quality not "
        "low, admitted at 480p; or 144p / 360p / 480p / 720p) and, with --target-mix, the largest subset whose "
        "subject (and style) shares equal the target's. Prints the mix before and after and writes "
        "DIR/select-STAGE.csv (path and the three captions), which `motif-video prepare` takes as SOURCE.",
    )
    select.add_argument("directory", help="a captioned `motif-video curate` output folder")
    select.add_argument("--stage", default="sft", help="sft, 144p, 360p, 480p or 720p")
    select.add_argument(
        "--target-mix", default=None, help="TOML with [subject] and/or [style] tables of domain = share"
    )
    select.set_defaults(run=run_select)

    prepare = add_parser(
        sub,
        "prepare",
        help="turn captioned videos (or the shapes world) into bucketed WebDataset shards",
        description="Decode, resample, cut, bucket, resize and write videos as WebDataset shards plus a metadata "
        "table (metadata.jsonl) and a report of skipped files (report.json). SOURCE is a `motif-video curate` "
        "folder (its kept clips and captions; --stage for one curriculum stage's), a folder of videos with a .txt "
        "caption beside each, a .csv/.jsonl list with path and caption columns (as `select` writes), or shapes:N "
        "for N procedural clips. The defaults are the embedded model's scale (8 fps, 17/33 frames, 64x96 pixels); "
        "for the released model use e.g. --fps 24 --frame-buckets 33,65,121 --area 399360 (832x480), or --stage. "
        "Re-running resumes: sources already in committed shards are skipped; other settings need another OUT.",
    )
    prepare.add_argument("source", help="folder (or a curate output folder), .csv/.jsonl list, or shapes:N")
    prepare.add_argument("out", help="output folder for shards, metadata.jsonl and report.json")
    prepare.add_argument("--fps", type=float, default=8.0, help="frame rate of the clips")
    prepare.add_argument("--frame-buckets", default="17,33", help="clip lengths in frames, comma-separated")
    prepare.add_argument(
        "--area",
        type=int,
        default=None,
        help="pixels per frame of every aspect bucket (default: the --stage's, e.g. 360p 640x360; else 64x96)",
    )
    prepare.add_argument("--shard-size", type=int, default=64, help="clips per shard")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the shapes world")
    prepare.add_argument("--max-objects", type=int, default=2, help="shapes world: at most this many objects per clip")
    prepare.add_argument(
        "--free-layout",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="shapes world: the share of clips whose objects start anywhere rather than where the caption's "
        "layout puts them (clips for extension training; default 0)",
    )
    prepare.add_argument(
        "--jitter",
        type=float,
        default=1.0,
        metavar="SCALE",
        help="shapes world: the scale of each object's start jitter, 1 the world's own (a few pixels either "
        "way), 0 exactly where the caption's layout puts it (default 1)",
    )
    prepare.add_argument(
        "--stage",
        default=None,
        help="from a curate folder: only the clips admitted to this curriculum stage (144p, 360p, 480p, 720p)",
    )
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
    precompute.add_argument(
        "weights", help="pipeline directory with vae/, text_encoder/, tokenizer/ (or a shipped model's name)"
    )
    precompute.add_argument("out", help="output folder")
    precompute.add_argument("--device", default="cpu", help="device the encoders run on")
    precompute.add_argument("--quiet", action="store_true", help="no progress bar")
    precompute.set_defaults(run=run_precompute)


def add_captioner_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("captioner")
    group.add_argument("--api-url", default=None, help="OpenAI-compatible server, e.g. http://gpu-node:8000/v1")
    group.add_argument("--model", default=None, help="the model name the server serves")
    group.add_argument("--api-key-env", default=None, help="environment variable holding the server's API key")
    group.add_argument("--concurrency", type=int, default=4, help="requests in flight (server) or batch (local)")
    group.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one answer")
    group.add_argument(
        "--retries", type=int, default=4, help="tries again after a server error or time-out (backoff 1, 2, 4, ... s)"
    )
    group.add_argument("--model-dir", default=None, help="local Qwen2.5-VL / Qwen3-VL weights instead of a server")
    group.add_argument("--device", default="cpu", help="device of the local model")
    group.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="dtype of the local model"
    )
    group.add_argument("--max-tokens", type=int, default=1024, help="longest answer")
    group.add_argument("--frames", type=int, default=8, help="frames sampled per clip")
    group.add_argument("--attempts", type=int, default=3, help="answers asked for before a clip is marked failed")


def captioner_from_args(args: argparse.Namespace):
    from motif_video.data.captions.backends import LocalBackend, ServerBackend

    if (args.api_url is None) == (args.model_dir is None):
        raise UsageError("give either --api-url (with --model) or --model-dir")
    if args.concurrency < 1 or args.frames < 1 or args.attempts < 1 or args.max_tokens < 1:
        raise UsageError(
            f"--concurrency, --frames, --attempts and --max-tokens must be >= 1, got {args.concurrency}, "
            f"{args.frames}, {args.attempts}, {args.max_tokens}"
        )
    if args.api_url is not None:
        if not args.model:
            raise UsageError("--api-url needs --model (the name the server serves)")
        if args.retries < 0:
            raise UsageError(f"--retries must be >= 0, got {args.retries}")
        return ServerBackend(
            args.api_url,
            args.model,
            api_key_env=args.api_key_env,
            timeout=args.timeout,
            retries=args.retries,
            max_tokens=args.max_tokens,
        )
    return LocalBackend(args.model_dir, device=args.device, dtype=args.dtype, max_tokens=args.max_tokens)


def caption_folder(args: argparse.Namespace, directory: str) -> dict:
    """Caption, then rebuild the clip table with the columns and the tags' effects."""
    import json

    from motif_video.data.captions.captioner import caption
    from motif_video.data.curation.config import CurateConfig
    from motif_video.data.curation.funnel import assemble
    from motif_video.training.config import from_dict

    backend = captioner_from_args(args)
    counts = caption(
        directory,
        backend,
        frames=args.frames,
        attempts=args.attempts,
        concurrency=args.concurrency,
        progress=not args.quiet,
    )
    summary_file = Path(directory) / "summary.json"
    cfg = from_dict(CurateConfig, json.loads(summary_file.read_text())["config"])
    summary = assemble(Path(directory), cfg, progress=not args.quiet)
    return {**counts, **summary}


def run_caption(args: argparse.Namespace) -> int:
    if not (Path(args.directory) / "clips.parquet").is_file():
        raise UsageError(f"{args.directory} has no clips.parquet; run `motif-video curate` first")
    result = caption_folder(args, args.directory)
    print(
        f"captioned {result['ok']} clips, {result['failed']} failed (of {result['requested']} asked); "
        f"{result['kept']} clips kept, SFT-eligible {result['sft']}; wrote {Path(args.directory) / 'clips.parquet'}"
    )
    return 0


def run_select(args: argparse.Namespace) -> int:
    from motif_video.data.captions.select import load_mix, select

    if args.target_mix is not None and not Path(args.target_mix).is_file():
        raise UsageError(f"--target-mix file {args.target_mix} does not exist")
    mix = load_mix(args.target_mix) if args.target_mix else None
    result = select(args.directory, args.stage, mix)
    for key in result["before"]:
        domains = sorted(set(result["before"][key]) | set(result["after"][key]))
        print(f"{key:12s} {'before':>8s} {'after':>8s}")
        for d in domains:
            print(f"  {d:10s} {result['before'][key].get(d, 0):8.2f} {result['after'][key].get(d, 0):8.2f}")
    print(f"{result['selected']} of {result['eligible']} eligible clips selected; wrote {result['path']}")
    return 0


# pixels per frame of each curriculum stage's landscape size (16:9 at 144p / 360p / 720p, 832x480 at 480p)
STAGE_AREAS = {"144p": 256 * 144, "360p": 640 * 360, "480p": 832 * 480, "720p": 1280 * 720}


def run_prepare(args: argparse.Namespace) -> int:
    from motif_video.data.preprocess import PrepareConfig, prepare

    try:
        buckets = tuple(int(v) for v in args.frame_buckets.split(","))
    except ValueError:
        raise UsageError(f"--frame-buckets must be integers separated by commas, got {args.frame_buckets!r}") from None
    if any(b < 1 or (b - 1) % 4 for b in buckets):
        raise UsageError(f"--frame-buckets must be 4k+1 frame counts (1, 17, 33, 65, 121, ...), got {buckets}")
    if args.area is None:
        args.area = STAGE_AREAS.get(args.stage, 64 * 96)
    if args.fps <= 0 or args.area < 256 or args.shard_size < 1 or args.max_objects < 1:
        raise UsageError(
            f"--fps must be > 0, --area >= 256, --shard-size >= 1 and --max-objects >= 1, got {args.fps}, "
            f"{args.area}, {args.shard_size} and {args.max_objects}"
        )
    if not 0.0 <= args.free_layout <= 1.0:
        raise UsageError(f"--free-layout must be a share in [0, 1], got {args.free_layout}")
    if not 0.0 <= args.jitter <= 1.0:
        raise UsageError(f"--jitter must be a scale in [0, 1], got {args.jitter}")
    cfg = PrepareConfig(
        fps=args.fps,
        frame_buckets=buckets,
        area=args.area,
        shard_size=args.shard_size,
        max_objects=args.max_objects,
        free_layout=args.free_layout,
        jitter=args.jitter,
    )
    report = prepare(args.source, args.out, cfg, seed=args.seed, progress=not args.quiet, stage=args.stage)
    buckets = ", ".join(f"{name}: {n}" for name, n in report["buckets"].items()) or "none"
    print(
        f"clips: {report['clips']} from {report['sources']} sources in {args.out}; skipped: "
        f"{len(report['skipped'])} (see report.json); buckets (frames x height x width): {buckets}"
    )
    return 0


def run_precompute(args: argparse.Namespace) -> int:
    from motif_video import distributed
    from motif_video.data.precompute import precompute
    from motif_video.embedded import resolve_weights
    from motif_video.sampling.pipeline import check_weights_dir

    args.weights = resolve_weights(args.weights)
    check_weights_dir(args.weights)
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
    if args.captioner is None and (args.api_url or args.model_dir):  # the backend's options say which
        args.captioner = "server" if args.api_url else "local"
    if args.captioner == "server" and not args.api_url:
        raise UsageError("--captioner server needs --api-url (and --model)")
    if args.captioner == "local" and not args.model_dir:
        raise UsageError("--captioner local needs --model-dir")
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
    if args.captioner is not None:
        summary = caption_folder(args, args.out)
    rejected = ", ".join(f"{k} {v}" for k, v in summary["rejected_by"].items()) or "none"
    admitted = ", ".join(f"{k.removeprefix('stage_')} {v}" for k, v in summary["admitted"].items())
    print(
        f"{summary['kept']} clips kept of {summary['rows']} rows from {summary['sources']} files; "
        f"rejected by {rejected}; admitted {admitted}"
    )
    print(f"wrote {Path(args.out) / 'clips.parquet'} and {Path(args.out) / 'report.html'}")
    return 0
