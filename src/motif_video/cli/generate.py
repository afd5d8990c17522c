"""`generate` (a video from a prompt, and an image for I2V) and `serve` (the web page)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from motif_video.cli.common import (
    UsageError,
    add_parser,
    add_runtime_options,
    add_weights_option,
    fill_defaults,
    load_pipeline,
    weights_path,
)
from motif_video.sampling import HANDOVER_FRAMES, SCHEDULERS

HANDOVER_HELP = (
    "frames over which the change at each seam is spread: the difference between the video's last frame and "
    f"the new segment's own drawing of it, fading out over this many new frames (0: off; default {HANDOVER_FRAMES})"
)


def check_handover(frames: int) -> None:
    if frames < 0:
        raise UsageError(f"--handover must be >= 0 frames (0: off), got {frames}")


def register(sub) -> None:
    p = add_parser(
        sub,
        "generate",
        help="generate a video from a prompt (and optionally a first image)",
        description="Generate a video with Motif-Video: text-to-video, or image-to-video with --image. Writes an "
        "H.264 MP4 and a JSON sidecar (same name, .json) with everything needed to reproduce it.",
    )
    p.add_argument("prompt", nargs="?", default=None, help="what the video shows (not with --storyboard)")
    p.add_argument("--image", default=None, help="first frame for image-to-video (any image file PIL reads)")
    p.add_argument(
        "--storyboard",
        default=None,
        help="a TOML or JSON file with `prompts = [...]`, one per segment: the first segment from its prompt, each "
        "next one continuing the video (as `motif-video extend` does) with its own prompt",
    )
    p.add_argument(
        "--no-color-match",
        action="store_true",
        help="with --storyboard: leave each segment's colours as generated (default: matched to the video so far)",
    )
    p.add_argument(
        "--handover",
        type=int,
        default=None,
        metavar="FRAMES",
        help="with --storyboard: " + HANDOVER_HELP,
    )
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
        "scheduler/, for I2V feature_extractor/), or a shipped model's name: shapes-tiny (the default, the embedded "
        "shapes-world model, which knows only shapes-world words: 'a red circle moves to the left on a gray "
        "background') or shapes-tiny-4step (its 4-step distilled student)",
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
        "--guidance-passes",
        choices=["auto", "batched", "split"],
        default="auto",
        help="run the conditional and unconditional passes as one padded, masked batch or as two calls, each "
        "prompt at its own length (fused attention kernels on a GPU); auto: batched on a CPU, split elsewhere",
    )
    p.add_argument(
        "--scheduler", choices=list(SCHEDULERS), default=None, help="sampler (default: the weights' scheduler/ config)"
    )
    p.add_argument("--shift", type=float, default=None, help="flow time shift (default: the scheduler config's)")
    size = "pixels, a multiple of the model's VAE factor x patch size (16 for the released model, 8 for the embedded)"
    p.add_argument("--height", type=int, default=None, help=f"{size}; default: manifest, else 480")
    p.add_argument("--width", type=int, default=None, help=f"{size}; default: manifest, else 832")
    p.add_argument(
        "--frames", type=int, default=None, help="4k+1 frames (49 = 2 s at 24 fps; default: manifest, else 49)"
    )
    p.add_argument("--fps", type=int, default=None, help="frame rate of the written video (default: manifest, else 24)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first video; video i uses seed+i")
    p.add_argument("--batch", type=int, default=1, help="number of videos")
    p.add_argument("--out", default="motif-video.mp4", help="output .mp4 (with --batch N: NAME-0.mp4, NAME-1.mp4, ...)")
    p.add_argument("--gif", action="store_true", help="also write a GIF")
    p.add_argument("--contact-sheet", action="store_true", help="also write a PNG strip of frames")
    add_runtime_options(p)
    p.add_argument(
        "--offload",
        action="store_true",
        help="keep models in CPU memory and move each to the device only while it runs",
    )
    p.add_argument("--vae-tiling", action="store_true", help="decode in tiles (less memory for large videos)")
    p.add_argument(
        "--quantize",
        choices=["int8", "fp8"],
        default=None,
        help="block projections in weight-only int8, or float8 activations and weights (fp8: GPUs of compute "
        "capability 8.9+, Ada / Hopper) (torchao)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each transformer block (one compile per kind of block, reused by all of them); the "
        "first step pays the compile time, which is reported",
    )
    add_lora_options(p)
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
    p.add_argument(
        "--force",
        action="store_true",
        help="generate even when the request's estimated memory exceeds what the device has available",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=generate)

    s = add_parser(
        sub,
        "serve",
        help="start the web page (Gradio) for a model",
        description="Start a Gradio page for one model: prompt, negative prompt, first image (I2V, where the model "
        "has an image encoder), seed, steps, guidance scale, size and length presets valid for the model; the video "
        "with a download link and its reproducibility JSON. Requests wait in one queue and run one at a time; Cancel "
        "stops a running generation at its next step. The same endpoint answers gradio_client (api_name "
        "'/generate').",
    )
    add_weights_option(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=7860, help="TCP port")
    s.add_argument("--out-dir", default=None, help="where videos and their JSON go (default: a temp folder)")
    add_runtime_options(s)
    add_lora_options(s)
    s.add_argument("--max-queue", type=int, default=64, help="requests that may wait; more are refused")
    s.set_defaults(run=serve)

    e = add_parser(
        sub,
        "extend",
        help="continue a video with more segments",
        description="Continue VIDEO with --segments new segments, each conditioned on the end of what exists (the "
        "last latent frame(s): the mask channel marks them) and following PROMPT; the frames that repeat the end "
        "are dropped, so segments join without a repeated frame. Writes one MP4 and a JSON sidecar naming the "
        "seams. Colour and brightness of each new segment are matched to the video's (drift control).",
    )
    e.add_argument("video", help="the MP4 to continue (the size the model makes)")
    e.add_argument("prompt", help="what the new segments show")
    e.add_argument("--segments", type=int, default=1, help="how many segments to add")
    e.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="latent frames of the video each segment is conditioned on: 1 = the last frame (image-to-video "
        "chaining, any model); more for models trained with a prefix condition (default: 2 for those, else 1)",
    )
    e.add_argument("--out", default=None, help="output .mp4 (default: VIDEO-extended.mp4)")
    e.add_argument("--no-color-match", action="store_true", help="leave each segment's colours as generated")
    e.add_argument("--handover", type=int, default=HANDOVER_FRAMES, metavar="FRAMES", help=HANDOVER_HELP)
    add_segment_options(e)
    e.set_defaults(run=extend)


def add_segment_options(parser: argparse.ArgumentParser) -> None:
    """What `extend` shares with `generate` for its segments."""
    add_weights_option(parser)
    parser.add_argument(
        "--frames", type=int, default=None, help="frames per segment, the overlap included (default: manifest, else 49)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="denoising steps (default: the weights' manifest, else 50)"
    )
    parser.add_argument("--guidance-scale", type=float, default=None, help="guidance scale (default: from the guider)")
    parser.add_argument("--negative-prompt", default=None, help="what to steer away from (default: the released one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first segment; segment i uses seed+i")
    parser.add_argument("--fps", type=int, default=None, help="frame rate of the written video (default: the input's)")
    add_runtime_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_lora_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lora",
        default=None,
        help="a LoRA adapter file (lora.safetensors of a LoRA fine-tune) merged into the transformer of --weights",
    )
    parser.add_argument("--lora-scale", type=float, default=1.0, help="strength of the adapter (0: the base alone)")


def check_lora(args: argparse.Namespace) -> None:
    if args.lora is not None and Path(args.lora).is_dir():
        raise UsageError(f"--lora {args.lora} is a folder; give the adapter file (lora.safetensors) in it")
    if args.lora is not None and not Path(args.lora).is_file():
        raise UsageError(f"--lora file {args.lora} does not exist")


def generate(args: argparse.Namespace) -> int:
    import time

    import torch

    from motif_video import distributed
    from motif_video.media import check_writable, write_contact_sheet, write_gif, write_json, write_mp4
    from motif_video.sampling.pipeline import (
        DEFAULT_NEGATIVE_PROMPT,
        generation_record,
        load_image,
        request_factors,
        resolve_runtime,
        validate_request,
    )

    # Cheap checks first: nothing is loaded for a request that cannot succeed.
    weights = weights_path(args)
    prompts = read_storyboard(args)
    # Unset options: the weights' own defaults (manifest.json), else those of the released model.
    fill_defaults(
        args, weights, {"height": 480, "width": 832, "frames": 49, "fps": 24, "steps": 50, "negative_prompt": None}
    )
    validate_request(prompts, args.height, args.width, args.frames, args.steps, *request_factors(weights))
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
    if args.gguf is not None and not Path(args.gguf).is_file():
        raise UsageError(f"--gguf file {args.gguf} does not exist")
    check_lora(args)
    world = None
    if distributed.launched():  # torchrun: the video tokens are split over the processes (context parallel)
        world = distributed.init()
        args.device = args.device or str(world.device)
    device, dtype = resolve_runtime(args.device, args.dtype)
    args.device, dtype_name = device, str(dtype).removeprefix("torch.")
    if not args.force:  # refuse what cannot fit before loading anything
        from motif_video.sampling.budget import check

        guided = args.guidance != "none"
        check(weights, args.height, args.width, args.frames, args.batch, dtype.itemsize, guided, device)

    started = time.time()
    pipe = load_pipeline(
        args,
        weights,
        offload=args.offload,
        vae_tiling=args.vae_tiling,
        quantize=args.quantize,
        compile=args.compile,
        gguf=args.gguf,
        lora=args.lora,
        lora_scale=args.lora_scale,
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
    if args.storyboard is not None:
        from motif_video.sampling.extend import storyboard

        result = storyboard(
            pipe,
            prompts,
            frames=args.frames,
            height=args.height,
            width=args.width,
            seed=args.seed,
            steps=args.steps,
            guidance=guidance,
            negative_prompt=negative,
            match_colors=not args.no_color_match,
            handover=args.handover,
            progress=not args.quiet,
        )
        extra = {"storyboard": args.storyboard, "color_match": not args.no_color_match, "handover": args.handover}
        write_segments(args, pipe, weights, result, out, guidance, negative, started, extra)
        return 0

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
        guidance_passes=args.guidance_passes,
    )
    compiled = None
    if args.compile and pipe.last_step_seconds:
        first, rest = pipe.last_step_seconds[0], sorted(pipe.last_step_seconds[1:]) or [0.0]
        later = rest[len(rest) // 2]
        compiled = {"first_step_s": round(first, 2), "later_step_s": round(later, 3)}
        print(f"--compile: the first step took {first:.1f} s (compilation), later steps {later:.2f} s each")
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
        if compiled is not None:
            record["compile"] = compiled
        if pipe.last_cache is not None:
            cache = pipe.last_cache
            record["cache"] = {"threshold": cache.threshold, "computed": cache.computed, "reused": cache.reused}
        write_json(record, path.with_suffix(".json"))
        print(f"wrote {path} ({args.frames} frames, {args.width}x{args.height}, {args.fps} fps)")
    return 0


def serve(args: argparse.Namespace) -> int:
    from motif_video.sampling.pipeline import resolve_runtime
    from motif_video.serve import Studio, build_app, default_out_dir

    weights = weights_path(args)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_queue < 1:
        raise UsageError(f"--max-queue must be >= 1, got {args.max_queue}")
    check_lora(args)
    device, dtype = resolve_runtime(args.device, args.dtype)
    out_dir = Path(args.out_dir) if args.out_dir else default_out_dir()
    print(f"loading {weights} on {device} ...", flush=True)
    studio = Studio(weights, device, dtype, out_dir, lora=args.lora, lora_scale=args.lora_scale)
    app = build_app(studio)
    app.queue(max_size=args.max_queue)
    print(f"videos go to {out_dir}", flush=True)
    app.launch(server_name=args.host, server_port=args.port, allowed_paths=[str(out_dir)], show_error=False)
    return 0


def extend(args: argparse.Namespace) -> int:
    import time

    from motif_video.media import check_writable, read_video
    from motif_video.sampling.extend import extend as extend_video
    from motif_video.sampling.pipeline import DEFAULT_NEGATIVE_PROMPT

    weights = weights_path(args)
    source = Path(args.video)
    if source.is_dir():
        raise UsageError(f"video {source} is a folder; give the video file to extend")
    if not source.is_file():
        raise UsageError(f"video {source} does not exist")
    try:
        video, fps = read_video(source)
    except Exception as e:  # noqa: BLE001 (any decoder failure is the same message)
        raise UsageError(f"cannot read video {source}: {e}") from None
    args.fps = int(round(fps)) if args.fps is None else args.fps
    fill_defaults(args, weights, {"frames": 49, "steps": 50, "negative_prompt": None})
    if args.segments < 1:
        raise UsageError(f"--segments must be >= 1, got {args.segments}")
    if args.overlap is not None and args.overlap < 1:
        raise UsageError(f"--overlap must be >= 1 latent frame, got {args.overlap}")
    check_handover(args.handover)
    if args.fps < 1:
        raise UsageError(f"--fps must be >= 1, got {args.fps}")
    out = Path(args.out) if args.out else source.with_name(source.stem + "-extended.mp4")
    if out.suffix.lower() != ".mp4":
        raise UsageError(f"--out must name an .mp4 file, got {out}")
    if out.resolve() == source.resolve():
        raise UsageError(f"--out {out} is the video being extended; name another file")
    check_writable(out)
    started = time.time()
    pipe = load_pipeline(args, weights)
    guidance = pipe.guidance
    if args.guidance_scale is not None:
        guidance = guidance.with_kind(guidance.kind, args.guidance_scale)
    negative = DEFAULT_NEGATIVE_PROMPT if args.negative_prompt is None else args.negative_prompt
    result = extend_video(
        pipe,
        video,
        [args.prompt] * args.segments,
        overlap=args.overlap,
        frames=args.frames,
        match_colors=not args.no_color_match,
        handover=args.handover,
        seed=args.seed,
        progress=not args.quiet,
        steps=args.steps,
        guidance=guidance,
        negative_prompt=negative,
    )
    extra = {"extends": str(source.resolve()), "color_match": not args.no_color_match, "handover": args.handover}
    write_segments(args, pipe, weights, result, out, guidance, negative, started, extra)
    return 0


def write_segments(args, pipe, weights, result, out: Path, guidance, negative, started: float, extra: dict) -> None:
    """The MP4 (and GIF / contact sheet where asked) of a video made of segments, and its sidecar:
    the generation record plus the segments' prompts, the overlap and where the seams are."""
    import time

    from motif_video.media import write_contact_sheet, write_gif, write_json, write_mp4
    from motif_video.sampling.extend import seam_ratio
    from motif_video.sampling.pipeline import generation_record

    write_mp4(result.frames, out, fps=args.fps)
    if getattr(args, "gif", False):
        write_gif(result.frames, out.with_suffix(".gif"), fps=args.fps)
    if getattr(args, "contact_sheet", False):
        write_contact_sheet(result.frames, out.with_suffix(".png"))
    height, width = result.frames.shape[1:3]
    record = generation_record(
        pipe,
        weights,
        prompt=result.prompts[0],
        negative_prompt=negative,
        image=None,
        seed=args.seed,
        steps=args.steps,
        guidance=guidance,
        scheduler=None,
        shift=None,
        height=height,
        width=width,
        frames=len(result.frames),
        fps=args.fps,
        dtype=str(next(pipe.transformer.parameters()).dtype).removeprefix("torch."),
        device=str(pipe.device),
        seconds=time.time() - started,
        command=["motif-video", *sys.argv[1:]],
    )
    record["segments"] = {"prompts": result.prompts, "frames": args.frames, "overlap": result.overlap}
    record["segments"]["seams"] = result.seams
    if result.seams:
        across, inside = seam_ratio(result.frames, result.seams)
        record["segments"].update(seam_difference=round(across, 3), inside_difference=round(inside, 3))
    record.update(extra)
    write_json(record, out.with_suffix(".json"))
    new = len(result.seams)
    parts = f"{len(result.prompts)} segment{'s' * (len(result.prompts) != 1)}"
    if "extends" in extra:
        parts = f"the input + {new} new segment{'s' * (new != 1)}"
    print(f"wrote {out} ({len(result.frames)} frames: {parts}, seams at {result.seams})")


def read_storyboard(args: argparse.Namespace) -> list[str]:
    """The prompts of --storyboard (TOML or JSON: `prompts = [...]`), or [PROMPT]; clear errors for either missing."""
    import json
    import tomllib

    if args.storyboard is None:
        if args.prompt is None:
            raise UsageError("give a PROMPT (or --storyboard FILE)")
        if args.no_color_match:
            raise UsageError("--no-color-match goes with --storyboard (one segment has no colours to match)")
        if args.handover is not None:
            raise UsageError("--handover goes with --storyboard (one segment has no seams)")
        return [args.prompt]
    args.handover = HANDOVER_FRAMES if args.handover is None else args.handover
    check_handover(args.handover)
    if args.prompt is not None:
        raise UsageError("give a PROMPT or --storyboard FILE, not both")
    if args.batch != 1 or args.image is not None:
        raise UsageError("--storyboard makes one video from text: no --batch or --image with it")
    path = Path(args.storyboard)
    if path.is_dir():
        raise UsageError(f"storyboard {path} is a folder; give the TOML or JSON file with `prompts = [...]`")
    if not path.is_file():
        raise UsageError(f"storyboard {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"storyboard {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(
            f"storyboard {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}"
        ) from None
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise UsageError(f'storyboard {path} must hold `prompts = ["...", ...]`: one non-empty prompt per segment')
    args.prompt = prompts[0]
    return prompts
