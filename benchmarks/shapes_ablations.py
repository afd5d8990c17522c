"""Ablations of the embedded model's design at equal training compute, scored by the shapes benchmark.

Variants of configs/shapes-tiny.toml, all on the same shapes data (clips, autoencoder, latents):
    full               the shipped design
    no-shared-xattn    without Shared Cross-Attention (text reaches video only by joint attention)
    no-ddt-decoder     without the DDT decoder (the encoder's output goes to the final layer)
    no-tread           without TREAD token routing
Equal compute: the training FLOPs of one step of each variant are counted (torch's FlopCounterMode
over a real training step: forward, backward), and each variant gets the steps that the full
model's `--steps` cost. Each variant is trained once per `--seeds` value (train.seed: initial weights,
batch order, noise), so the spread between seeds is shown beside each difference between variants.
Each run resumes if interrupted; a run whose report exists is skipped. Runs go seed by seed (every
variant's first seed, then every variant's second), so an interrupted table has one seed of each first.
`--finish` follows each first-stage run with make embedded's second stage (configs/shapes-tiny-finish.toml,
every token through every block, started from that run's export, the variant's settings kept) at equal
compute again (the FLOPs of the full model's 600 finish steps), and scores after it too: TREAD's model
is only sampled as it was trained after that stage, so without it the comparison charges TREAD for its
train / sampling gap. `--reuse DIR` lets a finished run of the same settings stand for a variant and
seed instead of training it again: make embedded's first stage (runs/shapes-tiny, train.seed 0) is the
full model's seed 0 when `--steps` is the config's (5,000), and its finish (runs/shapes-tiny-finish)
that run's finish. Settings are checked as a resume checks them (train.check_resume: every setting but
out_dir and the sampling-only ones), and the run must have reached its last step.
Besides the benchmark scores, each variant's validation flow loss is measured: the EMA model's
velocity error on 64 fresh world clips (seed 99, never trained on) at 10 fixed noise levels with
fixed noise, the same for every variant.

    python benchmarks/shapes_ablations.py --steps 1500 --seeds 0 1 --out runs/ablations
    python benchmarks/shapes_ablations.py --steps 5000 --seeds 0 1 --finish --reuse runs/shapes-tiny \
        --reuse runs/shapes-tiny-finish --out runs/ablations-shipped
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from motif_video.cli.common import silence_libraries
from motif_video.data import world
from motif_video.eval.shapes import CAPTION_FORMS, evaluate, pipeline_generator
from motif_video.media import write_json
from motif_video.sampling.pipeline import MotifVideoPipeline
from motif_video.training import checkpoint
from motif_video.training.config import TrainConfig
from motif_video.training.flow import TIMESTEP_SCALE, interpolate, velocity_target
from motif_video.training.train import build, check_resume, train, train_step

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shapes-tiny.toml"
FINISH = CONFIG.with_name("shapes-tiny-finish.toml")  # make embedded's second stage
VARIANTS = {
    "full": [],
    "no-shared-xattn": ["model.overrides.cross_attention_single=false"],
    "no-ddt-decoder": ["model.overrides.num_decoder_blocks=0"],
    "no-tread": ["tread.enabled=false"],
}


def step_flops(cfg: TrainConfig) -> int:
    """Matmul / attention FLOPs of one training step (forward and backward) of `cfg`."""
    state = build(cfg)
    train_step(state, 0)  # warm up (first-call allocations), then count a step
    with FlopCounterMode(display=False) as counter:
        train_step(state, 1)
    return counter.get_total_flops()


@torch.no_grad()
def validation_loss(pipeline_dir: Path, clips: int = 64, seed: int = 99) -> float:
    """Mean velocity MSE of a pipeline's transformer on fresh world clips at fixed times and noise."""
    pipe = MotifVideoPipeline.from_pretrained(pipeline_dir)
    manifest = json.loads((pipeline_dir / "manifest.json").read_text())
    size = manifest["defaults"]
    objects = manifest["config"]["world"].get("max_objects", world.MAX_OBJECTS)  # as in training
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for start in range(0, clips, 8):
        scenes = [world.scene(seed, i, max_objects=objects) for i in range(start, start + 8)]
        video = torch.stack(
            [torch.from_numpy(world.render(s, size["frames"], size["height"], size["width"])) for s in scenes]
        )
        x0 = pipe.vae.encode(video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1)
        text, mask = pipe.text_encoder.encode([s.caption for s in scenes])
        condition = torch.zeros(x0.shape[0], x0.shape[1] + 1, *x0.shape[2:])
        for t in torch.linspace(0.05, 0.95, 10):
            noise = torch.randn(x0.shape, generator=generator)
            times = torch.full((x0.shape[0],), float(t))
            xt = interpolate(x0, noise, times)
            v = pipe.transformer(torch.cat([xt, condition], dim=1), times * TIMESTEP_SCALE, text, mask).velocity
            total += float((v - velocity_target(x0, noise)).square().mean())
            count += 1
    return total / count


def finished_run(cfg: TrainConfig, candidates: list[Path]) -> Path | None:
    """The first of `candidates` that is a finished run of `cfg`'s settings (its out_dir aside)."""
    for run_dir in candidates:
        saved = checkpoint.checkpoints(run_dir)
        if not saved or json.loads((saved[-1] / "meta.json").read_text()).get("step") != cfg.train.steps:
            continue
        there = json.loads((run_dir / "config.json").read_text())["train"]["out_dir"]
        try:
            check_resume(run_dir, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=there)))
        except ValueError:
            continue
        if (run_dir / "pipeline" / "manifest.json").is_file():
            return run_dir
    return None


def run(cfg: TrainConfig, flops: int, count: int, forms: tuple[str, ...], reuse: list[Path]) -> dict:
    """Train one run of a variant (resuming if interrupted; or take a finished run of the same settings from
    `reuse`), score it, and add its validation flow loss; the report is kept in the run's folder, so a
    finished run is not trained again."""
    out = Path(cfg.train.out_dir)
    report_file = out / "shapes-report.json"
    if not report_file.is_file():
        started = time.time()
        reused = finished_run(cfg, reuse)
        if reused is None:
            history = train(cfg)
            run_dir, minutes = out, (time.time() - started) / 60
        else:
            print(f"{out}: the finished run {reused} has these settings; scoring it instead of training", flush=True)
            history = [json.loads(line) for line in (reused / "metrics.jsonl").read_text().splitlines() if line]
            run_dir, minutes = reused, None
        pipe = MotifVideoPipeline.from_pretrained(run_dir / "pipeline")
        defaults = json.loads((run_dir / "pipeline" / "manifest.json").read_text())["defaults"]
        generate = pipeline_generator(
            pipe, height=defaults["height"], width=defaults["width"], frames=defaults["frames"], steps=20
        )
        report = evaluate(generate, count=count, forms=forms)
        recent = history[-100:]
        report["training"] = {
            "steps": cfg.train.steps,
            "seed": cfg.train.seed,
            "gflop_per_step": flops / 1e9,
            "minutes": minutes,
            "flow_loss_last_100": sum(m["loss"] for m in recent) / max(1, len(recent)),
            "pipeline": str(run_dir / "pipeline"),
        }
        write_json(report, report_file)
    report = json.loads(report_file.read_text())
    if "validation_flow_loss" not in report["training"]:
        pipeline = Path(report["training"].get("pipeline", out / "pipeline"))
        report["training"]["validation_flow_loss"] = validation_loss(pipeline)
        write_json(report, report_file)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="training steps of the full model (the budget)")
    parser.add_argument("--out", default="runs/ablations", help="folder of the runs and the reports")
    parser.add_argument("--count", type=int, default=16, help="benchmark prompts per split")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed of each run of a variant")
    parser.add_argument(
        "--captions", nargs="+", default=list(CAPTION_FORMS), choices=CAPTION_FORMS,
        help="the benchmark's caption forms (default: all three, as make embedded scores the shipped model)",
    )  # fmt: skip
    parser.add_argument(
        "--reuse", action="append", default=[], type=Path, metavar="DIR",
        help="a finished run folder that may stand for the variant and seed with its settings (e.g. runs/shapes-tiny); "
        "repeat for more",
    )  # fmt: skip
    parser.add_argument("--finish", action="store_true", help="also train and score each run's unrouted finish")
    parser.add_argument("overrides", nargs="*", help="section.key=value applied to every variant (and finish)")
    args = parser.parse_args()
    silence_libraries()  # torchao's, torch's and diffusers' notices, as the CLI silences them
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def config(name: str, seed: int, steps: int) -> TrainConfig:
        overrides = [f"train.out_dir={json.dumps(str(out / name / f'seed-{seed}'))}", f"train.steps={steps}",
                     f"train.seed={seed}", "train.sample_every=0"]  # fmt: skip
        return TrainConfig.load(CONFIG, [*args.overrides, *VARIANTS[name], *overrides])

    shipped_finish = TrainConfig.load(FINISH).train
    seed_shift = shipped_finish.seed - TrainConfig.load(CONFIG).train.seed

    def finish_config(name: str, seed: int, steps: int, first: str = "") -> TrainConfig:
        """The variant's finish, started from `first` (its first stage's pipeline; "" to count FLOPs), on the
        shipped finish's seed shifted as the variant's is (seed 0 -> the config's 1)."""
        start = [f"model.init_from={json.dumps(f'{first}/transformer')}", f"text.init_from={json.dumps(first)}"]
        shifted = seed + seed_shift
        overrides = [f"train.out_dir={json.dumps(str(out / name / f'seed-{seed}-finish'))}", f"train.steps={steps}",
                     f"train.seed={shifted}", "train.sample_every=0"]  # fmt: skip
        if not first:  # FLOPs alone: fresh weights of the same shapes (the word encoder then trains: +0.13%)
            start = ['model.init_from=""', 'text.init_from=""', "text.frozen=false"]
        return TrainConfig.load(FINISH, [*args.overrides, *VARIANTS[name], *overrides, *start])

    stages = {"first": (config, args.steps)}
    if args.finish:
        stages["+ finish"] = (finish_config, shipped_finish.steps)
    flops, steps, budgets = {}, {}, {}
    for stage, (make, full_steps) in stages.items():
        budgets[stage] = step_flops(make("full", args.seeds[0], full_steps)) * full_steps
        for name in args.variants:
            flops[stage, name] = step_flops(make(name, args.seeds[0], full_steps))
            steps[stage, name] = round(budgets[stage] / flops[stage, name])
            print(f"{name}, {stage}: {flops[stage, name] / 1e9:.2f} GFLOP per step -> {steps[stage, name]} steps")
    rows = []
    forms = tuple(args.captions)
    for seed in args.seeds:  # every variant's first seed before any second one
        for name in args.variants:
            report = run(config(name, seed, steps["first", name]), flops["first", name], args.count, forms, args.reuse)
            rows.append((name, seed, "first", report))
            if args.finish:
                first = str(Path(report["training"]["pipeline"]))
                cfg = finish_config(name, seed, steps["+ finish", name], first)
                rows.append((name, seed, "+ finish", run(cfg, flops["+ finish", name], args.count, forms, args.reuse)))
    rows.sort(key=lambda row: (list(stages).index(row[2]), args.variants.index(row[0]), args.seeds.index(row[1])))

    for stage, budget in budgets.items():
        print(
            f"\nEqual training compute, {stage}: {budget / 1e12:.1f} TFLOP each (full model: {stages[stage][1]} steps)"
        )
    print("\n| variant | stage | seed | steps | GFLOP/step | validation flow loss | split | color | shape | motion "
          "| stability | mean |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, seed, stage, report in rows:
        t = report["training"]
        for split in ("trained", "held_out"):
            m = report[split]["mean"]
            print(
                f"| {name} | {stage} | {seed} | {t['steps']} | {t['gflop_per_step']:.1f} | "
                f"{t['validation_flow_loss']:.4f} | {split} | {m['color']:.3f} | {m['shape']:.3f} | "
                f"{m['motion']:.3f} | {m['stability']:.3f} | {m['mean']:.3f} |"
            )
    print("\n| variant | stage | validation flow loss, mean over seeds (min - max) "
          "| benchmark mean, trained / held-out (min - max over seeds) |")  # fmt: skip
    print("|---|---|---|---|")
    for stage in stages:
        for name in args.variants:
            reports = [r for n, _, st, r in rows if n == name and st == stage]
            losses = [r["training"]["validation_flow_loss"] for r in reports]
            means = [[r[split]["mean"]["mean"] for r in reports] for split in ("trained", "held_out")]
            spread = " / ".join(f"{statistics.mean(m):.3f} ({min(m):.3f} - {max(m):.3f})" for m in means)
            print(
                f"| {name} | {stage} | {statistics.mean(losses):.4f} ({min(losses):.4f} - {max(losses):.4f}) | "
                f"{spread} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
