"""The training commands: `train` (one run), `curriculum run` (staged runs), `plan` (their compute), `export` and
`refit-decoder` (a pipeline's patch-autoencoder decoder fitted anew)."""

from __future__ import annotations

import argparse
from pathlib import Path

from motif_video.cli.common import UsageError, add_parser, add_runtime_options


def register(sub) -> None:
    train = add_parser(
        sub,
        "train",
        help="train or fine-tune (rectified flow, TREAD, REPA); resumes automatically",
        description="Train a Motif-Video transformer from a TOML run file plus dotted overrides, e.g. "
        "'motif-video train configs/debug.toml optim.lr=1e-4 train.steps=500'. Resumes from the newest complete "
        "checkpoint in train.out_dir. Launch with torchrun for several processes (FSDP2).",
    )
    distill = add_parser(
        sub,
        "distill",
        help="distil a pipeline into a few-step student (one pass per step, guidance folded in)",
        description="Train a student that samples in distill.steps steps (default 4) with one transformer pass per "
        "step, from a teacher pipeline (a folder, or a shipped model's name such as shapes-tiny): the teacher's "
        "guided trajectories are generated once into data.path (resumable shards), then the student, initialised "
        "from the teacher (all weights, or LoRA with model.lora_rank), learns each step's jump between the "
        "teacher's states. It ends as RUN/pipeline, which generate, serve and eval load with its steps and without "
        "guidance by default. E.g. 'motif-video distill configs/shapes-tiny-4step.toml'. Resumes automatically; "
        "torchrun runs it on several processes.",
    )
    for parser, file in ((train, "TOML run file (see configs/)"), (distill, "TOML run file with a [distill] table")):
        parser.add_argument("config", help=file)
        parser.add_argument("overrides", nargs="*", help="section.key=value settings that replace the file's")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        parser.set_defaults(run=run_train)

    curriculum = add_parser(
        sub,
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
    add_runtime_options(curriculum)  # of the --eval-shapes generation
    curriculum.add_argument("--quiet", action="store_true", help="no progress bars")
    curriculum.set_defaults(run=run_curriculum)

    export = add_parser(
        sub,
        "export",
        help="a training run -> a complete pipeline directory (and its LoRA adapter file)",
        description="Make a finished training run loadable by generate, serve and eval: its EMA transformer "
        "(LoRA merged in) with the other components (vae/, text encoder, tokenizer, scheduler, guider) of the base "
        "pipeline the run started from (model.init_from or train.sample_weights; --base to name another), and a "
        "manifest naming the base, the run and its config. A LoRA run's adapter is copied as lora.safetensors: "
        "`generate --weights BASE --lora lora.safetensors [--lora-scale S]` applies it to the base. The trainer "
        "does this by itself at the end of every run whose base is a pipeline (RUN_DIR/pipeline).",
    )
    export.add_argument("run_dir", help="the run folder (train.out_dir)")
    export.add_argument("--out", required=True, help="the pipeline directory to write")
    export.add_argument("--base", default=None, help="the base pipeline (default: the one the run names)")
    export.set_defaults(run=run_export)

    refit = add_parser(
        sub,
        "refit-decoder",
        help="fit a pipeline's DetailDecoder anew (patch autoencoder), keeping its latents and transformer",
        description="Copy PIPELINE to --out with the DetailDecoder of its patch autoencoder fitted anew on the clips "
        "of CLIPS (a `motif-video prepare` folder, e.g. runs/shapes-tiny-data/clips). The principal components, so "
        "the latents the transformer was trained on, stay as they are: only the drawing of pixels from latents "
        "changes, in minutes instead of a new training run. The defaults are the embedded model's: the decoder "
        "reads one latent frame either side of a frame's own (--context), and learns on latents put off the "
        "data's by Gaussian noise of a std drawn up to --noise, so that a sampled latent's error is not drawn "
        "as an 8 x 8 grid or a jump where one 4-frame chunk ends; its error on each frame is measured against "
        "the frame's contrast, so that edges on a gray background are drawn as sharply as on black "
        "(--plain-loss: the plain error, as before v22); its latent path is --width channels by --depth "
        "layers. E.g. 'motif-video refit-decoder "
        "runs/shapes-tiny-close/pipeline runs/shapes-tiny-data/clips --out runs/shapes-tiny-decoder/pipeline'.",
    )
    refit.add_argument("pipeline", help="pipeline folder whose vae/ is a patch autoencoder")
    refit.add_argument("clips", help="folder of clips (shard-*.tar of `motif-video prepare`) to fit on")
    refit.add_argument("--out", required=True, help="the pipeline folder to write (not PIPELINE itself)")
    refit.add_argument("--steps", type=int, default=2500, help="decoder training steps")
    refit.add_argument("--batch", type=int, default=32, help="frames per step")
    refit.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay)")
    refit.add_argument("--context", type=int, default=1, help="latent frames read on each side of a frame's own")
    refit.add_argument("--noise", type=float, default=0.3, help="largest std of the noise put on the latents")
    refit.add_argument(
        "--no-color-augment", action="store_true", help="fit on the clips' own colours (default: RGB permuted)"
    )
    refit.add_argument(
        "--width", type=int, default=64, help="channels of the latent path (128 measured: docs/shapes-world.md)"
    )
    refit.add_argument("--depth", type=int, default=3, help="residual layers of the decoder's latent path")
    refit.add_argument(
        "--plain-loss",
        action="store_true",
        help="the error in pixel units, not relative to each frame's contrast (the embedded model's decoder up to v21)",
    )
    refit.add_argument("--seed", type=int, default=0)
    refit.add_argument("--quiet", action="store_true", help="no progress bar")
    refit.set_defaults(run=run_refit_decoder)

    plan = add_parser(
        sub,
        "plan",
        help="compute plan of a curriculum: tokens, FLOPs and GPU-hours per stage",
        description="Count the training FLOPs of every stage of DIR from its model config, buckets, interleave "
        "pattern, steps and batch sizes (2 FLOPs per multiply-add, backward = 2x forward, TREAD routing "
        "included) and convert them to GPU-hours at the given MFU; the total is compared with the report's "
        "budget (< 100,000 H200 hours).",
    )
    plan.add_argument("directory", help="folder of stage files")
    plan.add_argument("--gpu", default="h200", help="h100, h200, b200 or a100 (dense BF16 peak)")
    plan.add_argument("--gpus", type=int, default=64, help="GPUs the wall-clock days are given for")
    plan.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed")
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plan.set_defaults(run=run_plan)


def run_train(args: argparse.Namespace) -> int:
    """`train` and `distill`: a run file (a distillation's filled in from its teacher), trained to the end."""
    from motif_video import distributed
    from motif_video.training.config import TrainConfig
    from motif_video.training.distill import load_distill_config
    from motif_video.training.train import train

    if Path(args.config).is_dir():
        raise UsageError(f"config {args.config} is a folder; give the TOML file")
    if not Path(args.config).is_file():
        raise UsageError(f"config file {args.config} does not exist")
    load = load_distill_config if args.command == "distill" else TrainConfig.load
    cfg = load(args.config, args.overrides)
    command = " ".join(["motif-video", args.command, args.config, *args.overrides])
    try:
        history = train(cfg, progress=not args.quiet, command=command)
    finally:
        distributed.shutdown()
    if history:
        last = history[-1]
        made = f"run directory {cfg.train.out_dir}"
        if cfg.distill.teacher:
            made = f"student {Path(cfg.train.out_dir) / 'pipeline'} ({cfg.distill.steps} steps, one pass each)"
        distributed.print0(f"step {last['step'] + 1}: loss {last['loss']:.4f}; {made}")
    return 0


def run_curriculum(args: argparse.Namespace) -> int:
    from motif_video import distributed
    from motif_video.training import curriculum

    if not Path(args.directory).is_dir():
        raise UsageError(f"curriculum folder {args.directory} does not exist")
    after_stage = None
    if args.eval_shapes > 0:

        def after_stage(stage, pipeline):
            from motif_video.eval.shapes import evaluate, pipeline_generator
            from motif_video.sampling.pipeline import load_pipeline

            if pipeline is None:
                return {}
            world = stage.cfg.world
            pipe = load_pipeline(pipeline, device=args.device, dtype=args.dtype)
            generate = pipeline_generator(pipe, height=world.height, width=world.width, frames=world.frames, steps=20)
            report = evaluate(generate, count=args.eval_shapes, progress=not args.quiet)
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


def run_plan(args: argparse.Namespace) -> int:
    import json

    from motif_video.training import curriculum

    if not Path(args.directory).is_dir():
        raise UsageError(f"curriculum folder {args.directory} does not exist")
    if args.gpus < 1:
        raise UsageError(f"--gpus must be >= 1, got {args.gpus}")
    result = curriculum.plan(curriculum.load(args.directory), args.gpu, args.gpus, args.mfu)
    print(json.dumps(result, indent=2) if args.json else curriculum.plan_table(result), end="")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from motif_video.training.export import export

    if not Path(args.run_dir).is_dir():
        raise UsageError(f"run folder {args.run_dir} does not exist")
    out = export(args.run_dir, args.out, args.base)
    lora = out / "lora.safetensors"
    extra = f"; LoRA adapter {lora} (generate --lora)" if lora.is_file() else ""
    print(f"wrote {out} (generate --weights {out}){extra}")
    return 0


def run_refit_decoder(args: argparse.Namespace) -> int:
    from motif_video.training.autoencoder import AutoencoderConfig, refit_decoder

    for name, value, least in (
        ("--steps", args.steps, 1),
        ("--batch", args.batch, 1),
        ("--context", args.context, 0),
        ("--width", args.width, 8),
        ("--depth", args.depth, 0),
    ):
        if value < least:
            raise UsageError(f"{name} must be at least {least}, got {value}")
    if args.noise < 0 or args.lr <= 0:
        raise UsageError(f"--noise must be >= 0 and --lr > 0, got {args.noise} and {args.lr}")
    for what, folder in (("pipeline", args.pipeline), ("clips", args.clips)):
        if not Path(folder).is_dir():
            raise UsageError(f"{what} folder {folder} does not exist")
    cfg = AutoencoderConfig(
        kind="patch-pca",
        decoder_steps=args.steps,
        decoder_batch=args.batch,
        decoder_lr=args.lr,
        decoder_context=args.context,
        decoder_noise=args.noise,
        color_augment=not args.no_color_augment,
        decoder_contrast=not args.plain_loss,
        decoder_width=args.width,
        decoder_depth=args.depth,
        seed=args.seed,
    )
    print(f"refitting the decoder of {args.pipeline} on the clips of {args.clips} ({args.steps} steps)", flush=True)
    try:
        result = refit_decoder(args.pipeline, args.clips, args.out, cfg, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    print(
        f"decoder refitted: reconstruction L1 {result['reconstruction_l1_before']:.4f} -> "
        f"{result['reconstruction_l1']:.4f} (loss {result['first_loss']:.4f} -> {result['last_loss']:.4f}); "
        f"wrote {args.out} (generate --weights {args.out})"
    )
    return 0
