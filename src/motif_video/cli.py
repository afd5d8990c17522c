"""`motif-video`: one subcommand per job. Argument parsing and display only; the work is in the package.

Built: `generate` (text/image-to-video from a weights directory), `info` (architecture and
parameter counts of a preset or a checkpoint) and `convert` (any official checkpoint layout -> a
diffusers transformer directory). The other subcommands are announced and exit with status 2
until the issue that builds them lands.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from motif_video.media import check_writable

# Subcommands whose implementation is not in this version, and where it is planned.


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

    _add_generate(sub)

    prepare = sub.add_parser(
        "prepare",
        help="turn captioned videos (or the shapes world) into bucketed WebDataset shards",
        description="Decode, resample, cut, bucket, resize and write videos as WebDataset shards plus a metadata "
        "table (metadata.jsonl) and a report of skipped files (report.json). SOURCE is a folder of videos with a "
        ".txt caption beside each, a .csv/.jsonl list of path,caption, or shapes:N for N procedural clips. "
        "Re-running resumes: sources already in committed shards are skipped.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    prepare.add_argument("source", help="folder, .csv/.jsonl list, or shapes:N")
    prepare.add_argument("out", help="output folder for shards, metadata.jsonl and report.json")
    prepare.add_argument("--fps", type=float, default=8.0, help="frame rate of the clips")
    prepare.add_argument("--frame-buckets", default="17,33", help="clip lengths in frames, comma-separated")
    prepare.add_argument("--area", type=int, default=64 * 96, help="pixels per frame of every aspect bucket")
    prepare.add_argument("--shard-size", type=int, default=64, help="clips per shard")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the shapes world")
    prepare.add_argument("--max-objects", type=int, default=2, help="shapes world: at most this many objects per clip")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = sub.add_parser(
        "eval",
        help="benchmarks of generated videos (shapes benchmark; VBench not built yet)",
        description="Score generated videos. 'shapes': objective color / shape / motion / stability scores on "
        "shapes-world prompts, separately for trained and held-out combinations. 'vbench': generate VBench's standard "
        "prompt suite (5 videos per prompt, 25 per temporal-flickering prompt, one seed each), score it with the "
        "`vbench` package installed in another Python (--vbench-python; its evaluator weights in --vbench-weights) "
        "and aggregate Total / Quality / Semantic as VBench does. Launch with torchrun to split the generation over "
        "processes; re-running skips videos and dimensions already done.",
    )
    evaluate.add_argument("benchmark", choices=["shapes", "vbench"])
    evaluate.add_argument("--weights", default=None, help="pipeline directory (default: the embedded model)")
    evaluate.add_argument(
        "--reference",
        action="store_true",
        help="score the shapes world's own renders instead (the benchmark's ceiling)",
    )
    evaluate.add_argument("--count", type=int, default=8, help="prompts per split")
    evaluate.add_argument("--steps", type=int, default=None, help="denoising steps (default: manifest, else 20)")
    evaluate.add_argument("--height", type=int, default=None, help="pixels (default: manifest, else 64)")
    evaluate.add_argument("--width", type=int, default=None, help="pixels (default: manifest, else 64)")
    evaluate.add_argument("--frames", type=int, default=None, help="4k+1 frames (default: manifest, else 17)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the first prompt; prompt i uses seed+i")
    evaluate.add_argument(
        "--out", default=None, help="output folder (default: shapes-eval or vbench-eval); reports, videos, results"
    )
    evaluate.add_argument("--quiet", action="store_true")
    vbench = evaluate.add_argument_group("vbench")
    vbench.add_argument("--vbench-python", default=None, help="Python of the environment where `vbench` is installed")
    vbench.add_argument(
        "--vbench-weights", default=None, help="VBench's evaluator weights (its VBENCH_CACHE_DIR layout)"
    )
    vbench.add_argument("--dimensions", nargs="+", default=None, help="VBench dimensions to run (default: all 16)")
    vbench.add_argument("--suite", default=None, help="VBench_full_info.json (default: the one in --vbench-python)")
    vbench.add_argument("--per-prompt", type=int, default=5, help="videos per prompt (VBench: 5)")
    vbench.add_argument(
        "--per-flicker-prompt", type=int, default=25, help="videos per temporal-flickering prompt (VBench: 25)"
    )
    vbench.add_argument("--fps", type=int, default=None, help="frame rate of the written videos (default: manifest)")
    vbench.add_argument("--scorer-device", default="cuda", help="device VBench scores on")
    vbench.add_argument("--generate-only", action="store_true", help="write the videos, do not score")

    analyze = sub.add_parser(
        "analyze",
        help="per-block cross-frame attention analysis of a video (generated or given)",
        description="Run one transformer forward on a video noised to flow time --t and record, per block, the "
        "frame-to-frame attention of the video tokens and their attention mass on the context (text; the encoder "
        "output in the DDT decoder). Writes attention.png (heatmaps by stage) and attention.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    analyze.add_argument("what", choices=["attention"])
    analyze.add_argument("--weights", default=None, help="pipeline directory (default: the embedded model)")
    analyze.add_argument(
        "--prompt", required=True, help="the text condition (and the video to generate, without --video)"
    )
    analyze.add_argument("--video", default=None, help="analyse this video instead of generating one")
    analyze.add_argument("--t", type=float, default=0.5, help="flow time of the noised input, 0 (clean) .. 1 (noise)")
    analyze.add_argument("--height", type=int, default=64)
    analyze.add_argument("--width", type=int, default=96)
    analyze.add_argument("--frames", type=int, default=17)
    analyze.add_argument("--steps", type=int, default=20, help="denoising steps when generating the video")
    analyze.add_argument("--seed", type=int, default=0)
    analyze.add_argument("--chunk", type=int, default=256, help="query tokens per chunk (memory of the analysis)")
    analyze.add_argument("--out", default="attention-analysis", help="output folder")

    precompute = sub.add_parser(
        "precompute",
        help="encode prepared clips into VAE latents and text embeddings for training",
        description="Read the shards `motif-video prepare` wrote, encode every clip with the VAE and every caption "
        "with the text encoder of a weights directory, and write training shards (data.source = 'shards'). "
        "Launch with torchrun to split the shards over processes; re-running skips finished shards.",
    )
    precompute.add_argument("clips", help="folder of prepare's shards")
    precompute.add_argument("weights", help="pipeline directory with vae/, text_encoder/, tokenizer/")
    precompute.add_argument("out", help="output folder")
    precompute.add_argument("--device", default="cpu")
    precompute.add_argument("--quiet", action="store_true")

    train = sub.add_parser(
        "train",
        help="train or fine-tune (rectified flow, TREAD, REPA); resumes automatically",
        description="Train a Motif-Video transformer from a TOML run file plus dotted overrides, e.g. "
        "'motif-video train configs/debug.toml optim.lr=1e-4 train.steps=500'. Resumes from the newest complete "
        "checkpoint in train.out_dir. Launch with torchrun for several processes (FSDP2).",
    )
    train.add_argument("config", help="TOML run file (see configs/)")
    train.add_argument("overrides", nargs="*", help="section.key=value settings that replace the file's")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    curriculum = sub.add_parser(
        "curriculum",
        help="run a staged training curriculum (one TOML per stage); resumes inside and across stages",
        description="Run the stage files of DIR in name order ('motif-video curriculum run configs/micro-curriculum'). "
        "Each stage starts from an earlier stage's EMA transformer (a new text encoder rebuilds the text projection; "
        "Shared Cross-Attention switched on is inserted with a zero output projection) and trains with its own data, "
        "buckets, text encoder and REPA teacher. Progress is recorded in curriculum.json beside the stages' outputs; "
        "a re-run skips finished stages and resumes the interrupted one from its checkpoints.",
    )
    curriculum.add_argument("action", choices=["run"])
    curriculum.add_argument("directory", help="folder of stage files (see configs/motif-video-2b/)")
    curriculum.add_argument("overrides", nargs="*", help="section.key=value settings applied to every stage")
    curriculum.add_argument("--until", default=None, help="stop after this stage")
    curriculum.add_argument(
        "--eval-shapes", type=int, default=0, help="after each stage, score N shapes-benchmark prompts per split"
    )
    curriculum.add_argument("--quiet", action="store_true", help="no progress bars")

    plan = sub.add_parser(
        "plan",
        help="compute plan of a curriculum: tokens, FLOPs and GPU-hours per stage",
        description="Count the training FLOPs of every stage of DIR from its model config, buckets, interleave "
        "pattern, steps and batch sizes (2 FLOPs per multiply-add, backward = 2x forward, TREAD routing "
        "included) and convert them to GPU-hours at the given MFU; the total is compared with the report's "
        "budget (< 100,000 H200 hours).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    plan.add_argument("directory", help="folder of stage files")
    plan.add_argument("--gpu", default="h200", help="h100, h200, b200 or a100 (dense BF16 peak)")
    plan.add_argument("--gpus", type=int, default=64, help="GPUs the wall-clock days are given for")
    plan.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed")
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")

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

    serve = sub.add_parser(
        "serve",
        help="start the web page (Gradio) for a model",
        description="Start a Gradio page for one model: prompt, negative prompt, first image (I2V, where the model "
        "has an image encoder), seed, steps, guidance scale, size and length presets valid for the model; the video "
        "with a download link and its reproducibility JSON. Requests wait in one queue and run one at a time; Cancel "
        "stops a running generation at its next step. The same endpoint answers gradio_client (api_name "
        "'/generate').",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument("--weights", default=None, help="pipeline directory (default: the embedded shapes-world model)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=7860, help="TCP port")
    serve.add_argument("--out-dir", default=None, help="where videos and their JSON go (default: a temp folder)")
    serve.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    serve.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default=None, help="default: bfloat16 on CUDA, float32 on the CPU"
    )
    serve.add_argument("--max-queue", type=int, default=64, help="requests that may wait; more are refused")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("train", "curriculum"):  # overrides may come after options: `train cfg.toml --quiet a.b=1`
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "info":
            return _info(args)
        if args.command == "convert":
            return _convert(args)
        if args.command == "generate":
            return _generate(args)
        if args.command == "train":
            return _train(args)
        if args.command == "prepare":
            return _prepare(args)
        if args.command == "precompute":
            return _precompute(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "analyze":
            return _analyze(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "curriculum":
            return _curriculum(args)
        if args.command == "plan":
            return _plan(args)
        raise AssertionError(f"unhandled command {args.command}")
    except KeyboardInterrupt:
        print(f"motif-video {args.command}: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except (UsageError, ValueError, OSError, FloatingPointError) as e:
        print(f"motif-video {args.command}: error: {e}", file=sys.stderr)
        return 2


def _add_generate(sub) -> None:
    from motif_video.sampling.schedule import SCHEDULERS

    p = sub.add_parser(
        "generate",
        help="generate a video from a prompt (and optionally a first image)",
        description="Generate a video with Motif-Video: text-to-video, or image-to-video with --image. Writes an "
        "H.264 MP4 and a JSON sidecar (same name, .json) with everything needed to reproduce it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("prompt", help="what the video shows")
    p.add_argument("--image", default=None, help="first frame for image-to-video (any image file PIL reads)")
    p.add_argument(
        "--negative-prompt",
        default=None,
        help="what to steer away from (default: the negative prompt the released model was trained "
        "against; '' for none)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="pipeline directory in the official layout (transformer/, vae/, text_encoder/, tokenizer/, "
        "scheduler/, for I2V feature_extractor/); default: the embedded shapes-world model, which knows only "
        "shapes-world words ('a red circle moves to the left on a gray background')",
    )
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the weights' manifest, else 50)")
    p.add_argument(
        "--guidance",
        choices=["apg", "cfg", "none"],
        default=None,
        help="guidance method (default: the weights' guider/ config, else APG)",
    )
    p.add_argument("--guidance-scale", type=float, default=None, help="guidance scale (default: from the guider)")
    p.add_argument(
        "--scheduler", choices=list(SCHEDULERS), default=None, help="sampler (default: the weights' scheduler/ config)"
    )
    p.add_argument("--shift", type=float, default=None, help="flow time shift (default: the scheduler config's)")
    p.add_argument("--height", type=int, default=None, help="pixels, a multiple of 16 (default: manifest, else 480)")
    p.add_argument("--width", type=int, default=None, help="pixels, a multiple of 16 (default: manifest, else 832)")
    p.add_argument(
        "--frames", type=int, default=None, help="4k+1 frames (49 = 2 s at 24 fps; default: manifest, else 49)"
    )
    p.add_argument("--fps", type=int, default=None, help="frame rate of the written video (default: manifest, else 24)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first video; video i uses seed+i")
    p.add_argument("--batch", type=int, default=1, help="number of videos")
    p.add_argument("--out", default="motif-video.mp4", help="output .mp4 (with --batch N: NAME-0.mp4, NAME-1.mp4, ...)")
    p.add_argument("--gif", action="store_true", help="also write a GIF")
    p.add_argument("--contact-sheet", action="store_true", help="also write a PNG strip of frames")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="weights dtype (default: bfloat16 on CUDA, float32 on the CPU)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument(
        "--offload",
        action="store_true",
        help="keep models in CPU memory and move each to the device only while it runs",
    )
    p.add_argument("--vae-tiling", action="store_true", help="decode in tiles (less memory for large videos)")
    p.add_argument("--quantize", choices=["int8"], default=None, help="weight-only int8 block projections (torchao)")
    p.add_argument(
        "--gguf",
        default=None,
        help="load the transformer from this GGUF file (official key names; quantized layers stay quantized, "
        "dequantized one layer at a time); the other components come from --weights",
    )
    p.add_argument(
        "--cache-threshold",
        type=float,
        default=None,
        help="step caching: reuse the last prediction while the model's modulated input changed less than this "
        "in total (TeaCache-style; 0.05-0.2 trade quality for speed; default: off)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _fill_defaults(args: argparse.Namespace, weights: Path | None, fallback: dict) -> None:
    """Options left unset take the weights' own defaults (their manifest.json), else `fallback`."""
    from motif_video.embedded import manifest

    values = dict(fallback)
    if weights is not None:
        values.update({k: v for k, v in manifest(weights).get("defaults", {}).items() if k in fallback})
    for name, value in values.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _generate(args: argparse.Namespace) -> int:
    import time

    import torch

    from motif_video import distributed
    from motif_video.embedded import embedded_weights
    from motif_video.media import write_contact_sheet, write_gif, write_json, write_mp4
    from motif_video.sampling.pipeline import (
        DEFAULT_NEGATIVE_PROMPT,
        MotifVideoPipeline,
        check_weights_dir,
        generation_record,
        load_image,
        request_factors,
        validate_request,
    )

    # Cheap checks first: nothing is loaded for a request that cannot succeed.
    weights = Path(args.weights) if args.weights is not None else embedded_weights()
    check_weights_dir(weights)
    # Unset options: the weights' own defaults (manifest.json), else those of the released model.
    _fill_defaults(
        args, weights, {"height": 480, "width": 832, "frames": 49, "fps": 24, "steps": 50, "negative_prompt": None}
    )
    validate_request([args.prompt], args.height, args.width, args.frames, args.steps, *request_factors(weights))
    # an unreadable image fails here, before the model is loaded
    image = load_image(args.image, args.height, args.width) if args.image else None
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise UsageError(f"--out must name an .mp4 file, got {out}")
    check_writable(out)
    if args.cache_threshold is not None and not args.cache_threshold >= 0:
        raise UsageError(f"--cache-threshold must be >= 0, got {args.cache_threshold}")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    if args.fps < 1:
        raise UsageError(f"--fps must be >= 1, got {args.fps}")
    world = None
    if distributed.launched():  # torchrun: the video tokens are split over the processes (context parallel)
        world = distributed.init()
    device = args.device or (str(world.device) if world else "cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise UsageError(f"device {device!r} is not available: {str(e).splitlines()[0]}") from None
    dtype_name = args.dtype or ("bfloat16" if torch.device(device).type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    if torch.device(device).type == "cpu" and dtype == torch.float16:
        raise UsageError("--dtype float16 is not supported on the CPU; use float32 or bfloat16")

    started = time.time()
    if args.gguf is not None and not Path(args.gguf).is_file():
        raise UsageError(f"--gguf file {args.gguf} does not exist")
    pipe = MotifVideoPipeline.from_pretrained(
        weights,
        dtype=dtype,
        device=device,
        offload=args.offload,
        vae_tiling=args.vae_tiling,
        quantize=args.quantize,
        gguf=args.gguf,
    )
    if world is not None:
        from motif_video.model.context_parallel import ContextParallel

        heads = pipe.transformer.cfg.num_heads
        if heads % world.size:
            raise UsageError(f"{heads} attention heads do not split over {world.size} processes; use a divisor")
        pipe.transformer.parallel = ContextParallel.over_world(torch.device(device).type)
    guidance = pipe.guidance
    if args.guidance is not None or args.guidance_scale is not None:
        guidance = guidance.with_kind(args.guidance or guidance.kind, args.guidance_scale)
    negative = DEFAULT_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt

    result = pipe(
        [args.prompt] * args.batch,
        image=image,
        negative_prompt=negative,
        height=args.height,
        width=args.width,
        frames=args.frames,
        steps=args.steps,
        guidance=guidance,
        scheduler=args.scheduler,
        shift=args.shift,
        seed=args.seed,
        progress=not args.quiet,
        cache_threshold=args.cache_threshold,
    )
    if world is not None:
        distributed.shutdown()
        if not world.is_main:  # every process made the same video; the first writes it
            return 0
    videos = result.uint8()
    outputs = [out] if args.batch == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(args.batch)]
    for i, (frames, path) in enumerate(zip(videos, outputs, strict=True)):
        write_mp4(frames, path, fps=args.fps)
        if args.gif:
            write_gif(frames, path.with_suffix(".gif"), fps=args.fps)
        if args.contact_sheet:
            write_contact_sheet(frames, path.with_suffix(".png"))
        record = generation_record(
            pipe,
            weights,
            prompt=args.prompt,
            negative_prompt=negative,
            image=args.image,
            seed=args.seed + i,
            steps=args.steps,
            guidance=guidance,
            scheduler=args.scheduler,
            shift=args.shift,
            height=args.height,
            width=args.width,
            frames=args.frames,
            fps=args.fps,
            dtype=dtype_name,
            device=device,
            seconds=time.time() - started,
            command=["motif-video", *sys.argv[1:]],
        )
        if world is not None:
            record["context_parallel"] = world.size
        if pipe.last_cache is not None:
            cache = pipe.last_cache
            record["cache"] = {"threshold": cache.threshold, "computed": cache.computed, "reused": cache.reused}
        write_json(record, path.with_suffix(".json"))
        print(f"wrote {path} ({args.frames} frames, {args.width}x{args.height}, {args.fps} fps)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import torch

    from motif_video.embedded import embedded_weights
    from motif_video.serve import Studio, build_app, default_out_dir

    weights = Path(args.weights) if args.weights is not None else embedded_weights()
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_queue < 1:
        raise UsageError(f"--max-queue must be >= 1, got {args.max_queue}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if torch.device(device).type == "cuda" else "float32"))
    out_dir = Path(args.out_dir) if args.out_dir else default_out_dir()
    print(f"loading {weights} on {device} ...", flush=True)
    studio = Studio(weights, device, dtype, out_dir)
    app = build_app(studio)
    app.queue(max_size=args.max_queue)
    print(f"videos go to {out_dir}", flush=True)
    app.launch(server_name=args.host, server_port=args.port, allowed_paths=[str(out_dir)], show_error=False)
    return 0


def _prepare(args: argparse.Namespace) -> int:
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


def _eval(args: argparse.Namespace) -> int:
    from motif_video.data import world
    from motif_video.eval.metrics import all_metrics
    from motif_video.eval.report import table as html_table
    from motif_video.eval.report import write_html
    from motif_video.eval.shapes import benchmark_scenes, evaluate, markdown, pipeline_generator
    from motif_video.media import write_json, write_mp4

    if args.benchmark == "vbench":
        return _eval_vbench(args)
    from motif_video.embedded import embedded_weights

    args.out = args.out or "shapes-eval"

    weights = None if args.reference else Path(args.weights) if args.weights else embedded_weights()
    _fill_defaults(args, weights, {"height": 64, "width": 64, "frames": 17, "steps": 20})
    if args.count < 1:
        raise UsageError(f"--count must be >= 1, got {args.count}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out / "report.json")
    scenes = {s.caption: s for held in (False, True) for s in benchmark_scenes(args.count, held)}
    if args.reference:

        def generate(caption: str, index: int):
            return world.render(scenes[caption], args.frames, args.height, args.width)
    else:
        from motif_video.sampling.pipeline import MotifVideoPipeline, validate_request

        validate_request(["x"], args.height, args.width, args.frames, args.steps)
        pipe = MotifVideoPipeline.from_pretrained(weights)
        generate = pipeline_generator(
            pipe, height=args.height, width=args.width, frames=args.frames, steps=args.steps, seed=args.seed
        )

    videos = out / "videos"
    videos.mkdir(exist_ok=True)
    kept: list[tuple[str, str, dict]] = []

    def generate_and_keep(caption: str, index: int):
        video = generate(caption, index)
        name = f"videos/{index:03d}-{'-'.join(caption.split()[1:4])}.mp4"
        write_mp4(video, out / name, fps=8)
        kept.append((caption, name, all_metrics(video)))
        return video

    report = evaluate(generate_and_keep, count=args.count)
    report["source"] = "reference renders" if args.reference else str(weights.resolve())
    report["metrics"] = {name: metrics for _, name, metrics in kept}
    write_json(report, out / "report.json")
    table = markdown(report)
    (out / "report.md").write_text(table)
    shapes_rows = [
        [split, *(report[split]["mean"][k] for k in ("color", "shape", "motion", "stability", "mean"))]
        for split in ("trained", "held_out")
    ]
    metric_names = list(kept[0][2])
    figures = []
    if not args.reference:  # how the model attends, on its first video (noised half-way)
        from motif_video.eval.attention import study, video_latents

        caption, name, _ = kept[0]
        latents = video_latents(pipe.vae, out / name, args.frames, args.height, args.width)
        study(pipe, caption, latents, out, video=name)
        figures.append((f"Attention per block: {caption} (t = 0.5)", "attention.png"))
    write_html(
        out / "report.html",
        f"Shapes benchmark: {report['source']}",
        [(caption, name) for caption, name, _ in kept],
        [
            html_table("Shapes benchmark", ["split", "color", "shape", "motion", "stability", "mean"], shapes_rows),
            html_table(
                "Weight-free metrics",
                ["video", *metric_names],
                [[name, *(m[k] for k in metric_names)] for _, name, m in kept],
            ),
        ],
        figures,
    )
    print(table, end="")
    print(f"wrote {out / 'report.html'}")
    return 0


def _eval_vbench(args: argparse.Namespace) -> int:
    from motif_video import distributed
    from motif_video.embedded import embedded_weights
    from motif_video.eval import vbench
    from motif_video.sampling.pipeline import MotifVideoPipeline, check_weights_dir, request_factors, validate_request

    if not args.generate_only and (args.vbench_python is None or args.vbench_weights is None):
        raise UsageError("eval vbench needs --vbench-python and --vbench-weights (or --generate-only)")
    if args.vbench_weights is not None and not Path(args.vbench_weights).is_dir():
        raise UsageError(f"--vbench-weights {args.vbench_weights} is not a directory")
    if args.suite is None and args.vbench_python is None:
        raise UsageError("give --suite (VBench_full_info.json) or --vbench-python to find it")
    if args.per_prompt < 1 or args.per_flicker_prompt < 1:
        raise UsageError("--per-prompt and --per-flicker-prompt must be >= 1")
    weights = Path(args.weights) if args.weights else embedded_weights()
    check_weights_dir(weights)
    _fill_defaults(args, weights, {"height": 480, "width": 832, "frames": 49, "steps": 50, "fps": 24})
    validate_request(["x"], args.height, args.width, args.frames, args.steps, *request_factors(weights))
    dimensions = args.dimensions or list(vbench.DIMENSIONS)
    vbench.check_dimensions(dimensions)
    suite_file = Path(args.suite) if args.suite else vbench.suite_in(args.vbench_python)
    jobs = vbench.plan(vbench.load_suite(suite_file), dimensions, args.per_prompt, args.per_flicker_prompt)
    out = Path(args.out or "vbench-eval")
    out.mkdir(parents=True, exist_ok=True)

    world = distributed.init()
    try:
        todo = [j for j in jobs if not (out / j.folder / j.name).is_file()]
        if todo:
            pipe = MotifVideoPipeline.from_pretrained(weights, device=world.device)

            def generate(prompt: str, seed: int):
                options = dict(height=args.height, width=args.width, frames=args.frames, steps=args.steps)
                return pipe(prompt, **options, seed=seed, progress=False).uint8()[0]

            made = vbench.generate_suite(
                generate, jobs, out, args.fps, world.rank, world.size, progress=not args.quiet and world.is_main
            )
            print(f"rank {world.rank}: generated {made} videos")
        distributed.barrier()
        if args.generate_only or not world.is_main:
            distributed.print0(f"{len(jobs)} VBench videos in {out}")
            return 0
        scores = vbench.score(out, dimensions, args.vbench_python, args.vbench_weights, suite_file, args.scorer_device)
        table = vbench.write_report(vbench.aggregate(scores), out, weights.name)
        print(table, end="")
        print(f"wrote {out / 'vbench.json'} and {out / 'vbench.md'}")
        return 0
    finally:
        distributed.shutdown()


def _analyze(args: argparse.Namespace) -> int:
    from motif_video.eval.attention import study, video_latents
    from motif_video.sampling.pipeline import (
        MotifVideoPipeline,
        check_weights_dir,
        request_factors,
        validate_request,
    )

    if not 0 <= args.t <= 1:
        raise UsageError(f"--t must be a flow time in [0, 1], got {args.t}")
    from motif_video.embedded import embedded_weights

    weights = Path(args.weights) if args.weights else embedded_weights()
    check_weights_dir(weights)
    validate_request([args.prompt], args.height, args.width, args.frames, args.steps, *request_factors(weights))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out / "attention.png")
    pipe = MotifVideoPipeline.from_pretrained(weights)
    if args.video:
        latents = video_latents(pipe.vae, args.video, args.frames, args.height, args.width)
    else:
        latents = pipe(
            args.prompt,
            height=args.height,
            width=args.width,
            frames=args.frames,
            steps=args.steps,
            seed=args.seed,
            progress=False,
        ).latents
    report = study(pipe, args.prompt, latents, out, t=args.t, seed=args.seed, chunk=args.chunk, video=args.video)
    for stage, means in report.stage_means().items():
        print(
            f"{stage:8s} cross-frame score {means['cross_frame_score']:.3f}   context mass {means['context_mass']:.3f}"
        )
    print(f"wrote {out / 'attention.png'} and {out / 'attention.json'}")
    return 0


def _precompute(args: argparse.Namespace) -> int:
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


def _train(args: argparse.Namespace) -> int:
    from motif_video import distributed
    from motif_video.training.config import TrainConfig
    from motif_video.training.train import train

    if not Path(args.config).is_file():
        raise UsageError(f"config file {args.config} does not exist")
    cfg = TrainConfig.load(args.config, args.overrides)
    command = " ".join(["motif-video", "train", args.config, *args.overrides])
    try:
        history = train(cfg, progress=not args.quiet, command=command)
    finally:
        distributed.shutdown()
    if history:
        last = history[-1]
        distributed.print0(f"step {last['step'] + 1}: loss {last['loss']:.4f}; run directory {cfg.train.out_dir}")
    return 0


def _curriculum(args: argparse.Namespace) -> int:
    from motif_video import distributed
    from motif_video.training import curriculum

    if not Path(args.directory).is_dir():
        raise UsageError(f"curriculum folder {args.directory} does not exist")
    after_stage = None
    if args.eval_shapes > 0:

        def after_stage(stage, pipeline):
            from motif_video.eval.shapes import evaluate, pipeline_generator
            from motif_video.sampling.pipeline import MotifVideoPipeline

            if pipeline is None:
                return {}
            world = stage.cfg.world
            pipe = MotifVideoPipeline.from_pretrained(pipeline)
            generate = pipeline_generator(pipe, height=world.height, width=world.width, frames=world.frames, steps=20)
            report = evaluate(generate, count=args.eval_shapes)
            return {"shapes": {split: report[split]["mean"] for split in ("trained", "held_out")}}

    command = " ".join(["motif-video", "curriculum", "run", args.directory, *args.overrides])
    try:
        record = curriculum.run(
            args.directory, args.until, args.overrides, not args.quiet, command=command, after_stage=after_stage
        )
    finally:
        distributed.shutdown()
    for name, stage in record["stages"].items():
        shapes = stage.get("shapes", {}).get("trained", {}).get("mean")
        extra = "" if shapes is None else f", shapes benchmark {shapes:.3f}"
        distributed.print0(f"{name}: {stage['steps']} steps, loss {stage['final_loss']:.4f}{extra}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from motif_video.training import curriculum

    if not Path(args.directory).is_dir():
        raise UsageError(f"curriculum folder {args.directory} does not exist")
    if args.gpus < 1:
        raise UsageError(f"--gpus must be >= 1, got {args.gpus}")
    result = curriculum.plan(curriculum.load(args.directory), args.gpu, args.gpus, args.mfu)
    print(json.dumps(result, indent=2) if args.json else curriculum.plan_table(result), end="")
    return 0


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
    model = load_transformer(args.source, config=get_preset(args.preset))
    if dtype is not None:  # every tensor of the written checkpoint in the asked dtype
        model.to(dtype)
    out = save_transformer(model, args.output, max_shard_bytes=int(args.max_shard_gb * 1e9))
    print(f"wrote {out} ({model.num_parameters():,} parameters, cross-attention kv={model.cfg.cross_attention_kv})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
