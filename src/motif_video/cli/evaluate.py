"""The evaluation commands: `eval shapes`, `eval vbench` and `analyze attention`."""

from __future__ import annotations

import argparse
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


def register(sub) -> None:
    evaluate = add_parser(
        sub,
        "eval",
        help="benchmarks of generated videos (the shapes benchmark, VBench)",
        description="Score generated videos. 'shapes': objective color / shape / motion / stability scores on "
        "shapes-world prompts, separately for trained and held-out combinations. 'vbench': generate VBench's standard "
        "prompt suite (5 videos per prompt, 25 per temporal-flickering prompt, one seed each), score it with the "
        "`vbench` package installed in another Python (--vbench-python; its evaluator weights in --vbench-weights) "
        "and aggregate Total / Quality / Semantic as VBench does. Launch with torchrun to split the generation over "
        "processes; re-running skips videos and dimensions already done.",
    )
    evaluate.add_argument("benchmark", choices=["shapes", "vbench"])
    add_weights_option(evaluate)
    evaluate.add_argument(
        "--reference",
        action="store_true",
        help="score the shapes world's own renders instead (the benchmark's ceiling)",
    )
    evaluate.add_argument(
        "--through-vae",
        action="store_true",
        help="with --reference: the renders encoded and decoded by the weights' autoencoder (the ceiling that "
        "the model's latents allow)",
    )
    evaluate.add_argument(
        "--jitter",
        type=float,
        default=None,
        metavar="SCALE",
        help="with --reference: the renders' start jitter (world.scene), 1 the world's own (default), 0 the exact "
        "starts the embedded model trains on since v23 (configs/shapes-tiny.toml world.jitter)",
    )
    evaluate.add_argument("--count", type=int, default=8, help="prompts per split (and per caption form)")
    evaluate.add_argument(
        "--captions",
        choices=["long", "short", "truncated", "all"],
        default="long",
        help="shapes: the prompts' caption form: the world's long caption ('a red circle moves to the left on a "
        "gray background'), the short one as people type it ('red circle goes left'), the truncated one ('red "
        "circle moving left'), or all three (each split scored over all, and per form)",
    )
    evaluate.add_argument("--steps", type=int, default=None, help="denoising steps (default: manifest, else 20)")
    evaluate.add_argument("--height", type=int, default=None, help="pixels (default: manifest, else 64)")
    evaluate.add_argument("--width", type=int, default=None, help="pixels (default: manifest, else 64)")
    evaluate.add_argument("--frames", type=int, default=None, help="4k+1 frames (default: manifest, else 17)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the first prompt; prompt i uses seed+i")
    evaluate.add_argument(
        "--out", default=None, help="output folder (default: shapes-eval or vbench-eval); reports, videos, results"
    )
    add_runtime_options(evaluate)
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    vbench = evaluate.add_argument_group("vbench")
    vbench.add_argument("--vbench-python", default=None, help="Python of the environment where `vbench` is installed")
    vbench.add_argument(
        "--vbench-weights", default=None, help="VBench's evaluator weights (its VBENCH_CACHE_DIR layout)"
    )
    vbench.add_argument("--dimensions", nargs="+", default=None, help="VBench dimensions to run (default: all 16)")
    vbench.add_argument("--suite", default=None, help="VBench_full_info.json (default: the one in --vbench-python)")
    vbench.add_argument("--per-prompt", type=int, default=5, help="videos per prompt (VBench: 5)")
    vbench.add_argument("--per-flicker-prompt", type=int, default=25, help="videos per temporal-flickering prompt")
    vbench.add_argument("--fps", type=int, default=None, help="frame rate of the written videos (default: manifest)")
    vbench.add_argument("--scorer-device", default="cuda", help="device VBench scores on")
    vbench.add_argument("--generate-only", action="store_true", help="write the videos, do not score")
    evaluate.set_defaults(run=run_eval)

    analyze = add_parser(
        sub,
        "analyze",
        help="analyses: per-block attention of a video; where a shapes-world model loses the shape",
        description="'attention': run one transformer forward on a video noised to flow time --t and record, per "
        "block, the frame-to-frame attention of the video tokens and their attention mass on the context (text; the "
        "encoder output in the DDT decoder); writes attention.png (heatmaps by stage) and attention.json. 'shapes': "
        "the shapes benchmark of the world's renders as rendered, through the autoencoder, through its first k "
        "latent channels, and as the model's clean estimate from the render noised to several flow times; writes "
        "shape-loss.md and shape-loss.json.",
    )
    analyze.add_argument("what", choices=["attention", "shapes"])
    add_weights_option(analyze)
    analyze.add_argument(
        "--prompt", default=None, help="attention: the text condition (and the video to generate, without --video)"
    )
    analyze.add_argument("--count", type=int, default=16, help="shapes: benchmark scenes per split")
    analyze.add_argument("--video", default=None, help="analyse this video instead of generating one")
    analyze.add_argument("--t", type=float, default=0.5, help="flow time of the noised input, 0 (clean) .. 1 (noise)")
    analyze.add_argument("--height", type=int, default=None, help="pixels (default: the manifest's, else 64)")
    analyze.add_argument("--width", type=int, default=None, help="pixels (default: the manifest's, else 96)")
    analyze.add_argument("--frames", type=int, default=None, help="4k+1 frames (default: the manifest's, else 17)")
    analyze.add_argument(
        "--steps", type=int, default=None, help="denoising steps when generating the video (default: manifest, else 20)"
    )
    analyze.add_argument("--seed", type=int, default=0, help="seed of the generated video and of the noise")
    analyze.add_argument("--chunk", type=int, default=256, help="query tokens per chunk (memory of the analysis)")
    analyze.add_argument("--out", default=None, help="output folder (default: attention-analysis or shape-loss)")
    add_runtime_options(analyze)
    analyze.add_argument("--quiet", action="store_true", help="no progress bar")
    analyze.set_defaults(run=run_analyze)


def run_eval(args: argparse.Namespace) -> int:
    if args.benchmark == "vbench":
        return run_vbench(args)
    from motif_video.data import world
    from motif_video.eval.shapes import CAPTION_FORMS, benchmark_prompts, markdown, pipeline_generator, run_benchmark
    from motif_video.media import check_writable
    from motif_video.sampling.pipeline import request_factors, validate_request

    if args.count < 1:
        raise UsageError(f"--count must be >= 1, got {args.count}")
    if args.through_vae and not args.reference:
        raise UsageError("--through-vae goes with --reference (it scores the world's renders through the autoencoder)")
    if args.jitter is not None and not args.reference:
        raise UsageError("--jitter goes with --reference (it places the world's renders; samples place themselves)")
    if args.jitter is not None and not 0.0 <= args.jitter <= 1.0:
        raise UsageError(f"--jitter must be a scale in [0, 1], got {args.jitter}")
    weights = None if args.reference and not args.through_vae else weights_path(args)
    fill_defaults(args, weights, {"height": 64, "width": 64, "frames": 17, "steps": 20})
    out = Path(args.out or "shapes-eval")
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out / "report.json")
    pipe = vae = None
    forms = CAPTION_FORMS if args.captions == "all" else (args.captions,)
    if args.reference:
        scenes = {
            index: scene
            for _, _, index, scene, _ in benchmark_prompts(
                args.count, forms, jitter=1.0 if args.jitter is None else args.jitter
            )
        }

        if args.through_vae:
            from motif_video.eval.shape_loss import through_autoencoder
            from motif_video.model.vae import load_autoencoder
            from motif_video.sampling.pipeline import resolve_runtime

            device, dtype = resolve_runtime(args.device, args.dtype)
            vae = load_autoencoder(weights / "vae", dtype=dtype, device=device)

        def generate(caption: str, index: int):
            video = world.render(scenes[index], args.frames, args.height, args.width)
            return video if vae is None else through_autoencoder(vae, video)
    else:
        validate_request(["x"], args.height, args.width, args.frames, args.steps, *request_factors(weights))
        pipe = load_pipeline(args, weights)
        generate = pipeline_generator(
            pipe, height=args.height, width=args.width, frames=args.frames, steps=args.steps, seed=args.seed
        )
    source = str(weights.resolve()) if pipe is not None else "reference renders"
    if vae is not None:
        source += f" through the autoencoder of {weights.resolve()}"
    report = run_benchmark(
        generate,
        out,
        count=args.count,
        source=source,
        pipe=pipe,
        frames=args.frames,
        height=args.height,
        width=args.width,
        progress=not args.quiet,
        forms=forms,
        settings=None
        if pipe is None
        else {"steps": args.steps, "seed": args.seed, "guidance": pipe.guidance.kind, "scale": pipe.guidance.scale},
    )
    print(markdown(report), end="")
    print(f"wrote {out / 'report.html'}")
    return 0


def run_vbench(args: argparse.Namespace) -> int:
    from motif_video import distributed
    from motif_video.eval import vbench
    from motif_video.sampling.pipeline import request_factors, validate_request

    if not args.generate_only and (args.vbench_python is None or args.vbench_weights is None):
        raise UsageError("eval vbench needs --vbench-python and --vbench-weights (or --generate-only)")
    if args.vbench_weights is not None and not Path(args.vbench_weights).is_dir():
        raise UsageError(f"--vbench-weights {args.vbench_weights} is not a directory")
    if args.suite is None and args.vbench_python is None:
        raise UsageError("give --suite (VBench_full_info.json) or --vbench-python to find it")
    if args.per_prompt < 1 or args.per_flicker_prompt < 1:
        raise UsageError("--per-prompt and --per-flicker-prompt must be >= 1")
    weights = weights_path(args)
    fill_defaults(args, weights, {"height": 480, "width": 832, "frames": 49, "steps": 50, "fps": 24})
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
            args.device = args.device or str(world.device)
            pipe = load_pipeline(args, weights)

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


def run_analyze(args: argparse.Namespace) -> int:
    from motif_video.eval.attention import study, video_latents
    from motif_video.media import check_writable
    from motif_video.sampling.pipeline import request_factors, validate_request

    if args.what == "shapes":
        return run_shape_loss(args)
    if args.prompt is None:
        raise UsageError("analyze attention needs --prompt")
    if not 0 <= args.t <= 1:
        raise UsageError(f"--t must be a flow time in [0, 1], got {args.t}")
    weights = weights_path(args)
    fill_defaults(args, weights, {"height": 64, "width": 96, "frames": 17, "steps": 20})
    validate_request([args.prompt], args.height, args.width, args.frames, args.steps, *request_factors(weights))
    out = Path(args.out or "attention-analysis")
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out / "attention.png")
    pipe = load_pipeline(args, weights)
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
            progress=not args.quiet,
        ).latents
    report = study(pipe, args.prompt, latents, out, t=args.t, seed=args.seed, chunk=args.chunk, video=args.video)
    for stage, means in report.stage_means().items():
        print(
            f"{stage:8s} cross-frame score {means['cross_frame_score']:.3f}   context mass {means['context_mass']:.3f}"
        )
    print(f"wrote {out / 'attention.png'} and {out / 'attention.json'}")
    return 0


def run_shape_loss(args: argparse.Namespace) -> int:
    from motif_video.eval.shape_loss import diagnose, markdown
    from motif_video.media import atomic_write, check_writable, write_json
    from motif_video.sampling.pipeline import request_factors, validate_request

    if args.count < 1:
        raise UsageError(f"--count must be >= 1, got {args.count}")
    weights = weights_path(args)
    fill_defaults(args, weights, {"height": 64, "width": 64, "frames": 17})
    validate_request(["x"], args.height, args.width, args.frames, 1, *request_factors(weights))
    out = Path(args.out or "shape-loss")
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out / "shape-loss.md")
    pipe = load_pipeline(args, weights)
    rows = diagnose(pipe, args.count, frames=args.frames, height=args.height, width=args.width, progress=not args.quiet)
    table = markdown(rows)
    atomic_write(out / "shape-loss.md", lambda tmp: tmp.write_text(table))
    write_json({"stages": rows}, out / "shape-loss.json")
    print(table, end="")
    print(f"wrote {out / 'shape-loss.md'} and {out / 'shape-loss.json'}")
    return 0
