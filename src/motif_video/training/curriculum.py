"""A staged training curriculum: one TrainConfig per stage file, run in order, each stage starting
from an earlier stage's EMA transformer (training/transitions.py), and its compute plan.

    DIR/01-*.toml ─ train ─▶ out_dir/ema-transformer ─▶ DIR/02-*.toml (model.init_from) ─ ... ─▶ last stage
    ROOT/curriculum.json: per stage status, steps, loss, transitions, seconds (ROOT: the stages'
    common output folder)

Stage files sort by name. A stage resumes inside itself from its own checkpoints (`train`), and
`run` skips stages already recorded as done, so an interrupted curriculum continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from motif_video.media import write_json
from motif_video.training.compute import Routing, gpu_hours, training_flops
from motif_video.training.config import TrainConfig

VAE_SPATIAL, VAE_TEMPORAL = 8, 4  # Wan VAE factors: the planner's token counts
REPORTED_BUDGET_GPU_HOURS = 100_000  # the report: "< 100k H200 GPU-hours" in all


@dataclass(frozen=True)
class Stage:
    path: Path
    cfg: TrainConfig

    @property
    def name(self) -> str:
        return self.cfg.stage.name

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.train.out_dir)


def load(directory: str | Path, overrides: list[str] = ()) -> list[Stage]:
    """Every stage file of `directory`, in name order, with `overrides` applied to each."""
    directory = Path(directory)
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ValueError(f"{directory} has no stage files (*.toml)")
    stages = []
    for file in files:
        try:
            cfg = TrainConfig.load(file, list(overrides))
        except ValueError as e:
            raise ValueError(f"{file.name}: {e}") from None
        if not cfg.stage.name:
            raise ValueError(f"{file.name} has no [stage] name: every curriculum file is a stage")
        stages.append(Stage(file, cfg))
    names = [s.name for s in stages]
    for i, stage in enumerate(stages):
        if names.count(stage.name) > 1:
            raise ValueError(f"stage name {stage.name!r} is used twice")
        init = stage.cfg.stage.init
        if init == "previous" and i == 0:
            raise ValueError(f"{stage.path.name}: the first stage cannot start from 'previous'; use init = 'none'")
        if init not in ("previous", "none") and init not in names[:i]:
            raise ValueError(f"{stage.path.name}: init {init!r} is not an earlier stage; earlier: {names[:i]}")
    return stages


def start_of(stages: list[Stage], index: int) -> Stage | None:
    """The stage whose EMA transformer stage `index` starts from (None: fresh weights)."""
    init = stages[index].cfg.stage.init
    if init == "none":
        return None
    return stages[index - 1] if init == "previous" else next(s for s in stages if s.name == init)


def transitions(before: TrainConfig, after: TrainConfig) -> list[str]:
    """What changes from the stage a stage starts from to the stage itself, in words."""
    changes = []
    a, b = before.model.transformer(), after.model.transformer()
    if (before.text.encoder, before.text.path, a.text_dim) != (after.text.encoder, after.text.path, b.text_dim):
        changes.append(f"text encoder {before.text.encoder} ({a.text_dim}) -> {after.text.encoder} ({b.text_dim})")
    t_before, t_after = (c.repa.teacher if c.repa.enabled else "off" for c in (before, after))
    if t_before != t_after:
        changes.append(f"REPA teacher {t_before} -> {t_after}")
    for flag in ("cross_attention_dual", "cross_attention_single"):
        if getattr(b, flag) and not getattr(a, flag):
            changes.append(f"Shared Cross-Attention inserted ({flag.removeprefix('cross_attention_')} blocks)")
    sizes = [(c.stage.image_size, c.stage.video_size, c.stage.frame_buckets) for c in (before, after)]
    if sizes[0] != sizes[1]:
        changes.append(f"buckets {sizes[0]} -> {sizes[1]}")
    if after.stage.sft and not before.stage.sft:
        changes.append("supervised fine-tuning data")
    return changes


def run(
    directory: str | Path,
    until: str | None = None,
    overrides: list[str] = (),
    progress: bool = True,
    command: str = "",
    after_stage=None,
) -> dict:
    """Train the stages in order (up to and including `until`); returns the record.
    `after_stage(stage, pipeline_or_none)` runs after each finished stage (e.g. a benchmark) and
    may return a dict that is stored in the stage's record."""
    from motif_video.training.train import train

    stages = load(directory, overrides)
    if until is not None and until not in [s.name for s in stages]:
        raise ValueError(f"--until {until!r} is not a stage; stages: {[s.name for s in stages]}")
    root = Path(os.path.commonpath([s.out_dir.resolve() for s in stages]))
    record_file = root / "curriculum.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {"stages": {}}
    for index, stage in enumerate(stages):
        done = record["stages"].get(stage.name, {})
        if done.get("status") == "done":
            print(f"stage {stage.name}: done before, skipped", flush=True)
        else:
            before = start_of(stages, index)
            source = None if before is None else before.out_dir / "ema-transformer"
            cfg = stage.cfg
            if source is not None:
                cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=str(source)))
            changes = [] if before is None else transitions(before.cfg, cfg)
            print(f"stage {stage.name} ({index + 1}/{len(stages)}): {'; '.join(changes) or 'fresh start'}", flush=True)
            started = time.time()
            history = train(cfg, progress=progress, command=command or f"motif-video curriculum run {directory}")
            recent = history[-20:]
            done = {
                "status": "done",
                "file": stage.path.name,
                "init_from": None if source is None else str(source),
                "transitions": changes,
                "steps": cfg.train.steps,
                "final_loss": sum(m["loss"] for m in recent) / max(1, len(recent)),
                "seconds": round(time.time() - started, 1),
            }
            if after_stage is not None:
                pipeline = stage.out_dir / "pipeline"
                done.update(after_stage(stage, pipeline if pipeline.is_dir() else None) or {})
            record["stages"][stage.name] = done
            write_json(record, record_file)
        if stage.name == until:
            break
    return record


# -- the compute planner ----------------------------------------------------------------------------


def plan(stages: list[Stage], gpu: str = "h200", gpus: int = 64, mfu: float = 0.4) -> dict:
    """FLOPs and GPU-hours per stage from each stage's model, buckets, steps and batch sizes.

    Steps follow the stage's interleave pattern (I: image batch, V: video batch); video steps are
    shared equally among the video frame buckets."""
    rows = []
    for stage in stages:
        cfg, s = stage.cfg, stage.cfg.stage
        model = cfg.model.transformer()
        routing = None
        if cfg.tread.enabled:
            end = cfg.tread.last_block(model.num_dual_blocks + model.num_single_blocks)
            routing = Routing(cfg.tread.start, end, cfg.tread.keep_ratio)
        text = 1 if cfg.text.encoder == "sentence" else s.text_tokens

        def tokens(frames: int, size: tuple[int, int], model=model) -> int:
            latent = (frames - 1) // VAE_TEMPORAL + 1
            return model.num_video_tokens(latent, size[0] // VAE_SPATIAL, size[1] // VAE_SPATIAL)

        image_steps = cfg.train.steps * s.interleave.count("I") / len(s.interleave)
        video_steps = cfg.train.steps - image_steps
        video_buckets = [f for f in s.frame_buckets if f > 1]
        image_batch = s.image_batch_size or cfg.data.batch_size
        image_tokens = tokens(1, s.image_size)
        flops = image_steps * image_batch * training_flops(model, image_tokens, text, routing=routing)
        video_tokens = [tokens(f, s.video_size) for f in video_buckets]
        for n in video_tokens:
            flops += (
                video_steps / len(video_buckets) * cfg.data.batch_size * training_flops(model, n, text, routing=routing)
            )
        hours = gpu_hours(flops, gpu, mfu)
        rows.append(
            {
                "stage": stage.name,
                "task": s.task,
                "image": f"{s.image_size[1]}x{s.image_size[0]}",
                "video": f"{s.video_size[1]}x{s.video_size[0]}" if video_buckets else "-",
                "frames": list(s.frame_buckets),
                "steps": cfg.train.steps,
                "batch": [image_batch, cfg.data.batch_size],
                "tokens_per_step": max([image_batch * image_tokens] + [cfg.data.batch_size * n for n in video_tokens]),
                "flops": flops,
                "gpu_hours": hours,
                "days": hours / gpus / 24,
            }
        )
    total = sum(r["gpu_hours"] for r in rows)
    return {
        "gpu": gpu,
        "gpus": gpus,
        "mfu": mfu,
        "stages": rows,
        "total_flops": sum(r["flops"] for r in rows),
        "total_gpu_hours": total,
        "total_days": total / gpus / 24,
        "reported_budget_gpu_hours": REPORTED_BUDGET_GPU_HOURS,
    }


def plan_table(result: dict) -> str:
    lines = [
        f"| stage | task | image | video | frames | steps | batch (I/V) | tokens/step (max) | FLOPs | "
        f"{result['gpu'].upper()}-hours | days on {result['gpus']} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["stages"]:
        lines.append(
            f"| {r['stage']} | {r['task']} | {r['image']} | {r['video']} | {'/'.join(map(str, r['frames']))} | "
            f"{r['steps']:,} | {r['batch'][0]}/{r['batch'][1]} | {r['tokens_per_step']:,} | {r['flops']:.2e} | "
            f"{r['gpu_hours']:,.0f} | {r['days']:.1f} |"
        )
    lines.append(
        f"| **total** | | | | | | | | {result['total_flops']:.2e} | {result['total_gpu_hours']:,.0f} | "
        f"{result['total_days']:.1f} |"
    )
    ratio = result["total_gpu_hours"] / result["reported_budget_gpu_hours"]
    lines.append("")
    lines.append(
        f"At {result['mfu']:.0%} MFU: {result['total_gpu_hours']:,.0f} GPU-hours, {ratio:.0%} of the report's "
        f"budget (< {result['reported_budget_gpu_hours']:,} H200 GPU-hours)."
    )
    return "\n".join(lines) + "\n"
