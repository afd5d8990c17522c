"""`train(cfg)`: the loop a curriculum stage, a fine-tune or the embedded model runs.

Reads top to bottom: distributed init -> the recipe's data -> model (on meta, then materialised)
-> REPA projector and teacher -> parallelize -> EMA -> optimizer -> the data plan -> resume ->
loop -> exports. The seams are torchtitan's: the objective (draws, inputs, losses) is
training/objective.py, one optimizer step (micro-batches, clipping, update, EMA) is
training/step.py, parallelism is training/parallel.py, and what a data source adds (the shapes
world's data chain, vocabulary and pipeline export) is a recipe (training/recipes.py) called
through `recipe_for(cfg)`, not branches here. `build` + `train_step` run single steps (tests).

Randomness is drawn per sample from a generator seeded by (seed, step, sample index), so a resumed
run repeats exactly what the interrupted one would have done; shard data is streamed by a plan
written once per epoch (data/stream.py), and the reader's position is a function of the step.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from motif_video import distributed
from motif_video.data.stream import StreamedShards, stage_buckets
from motif_video.data.synthetic import SyntheticLatents
from motif_video.model.checkpoint_io import save_transformer
from motif_video.model.lora import save_adapter
from motif_video.model.lora import to_official as lora_to_official
from motif_video.model.text_encoder import load_text_encoder
from motif_video.model.transformer import MotifVideoTransformer
from motif_video.model.word_encoder import WordTextEncoder
from motif_video.training import checkpoint
from motif_video.training.alignment import Projector, Teacher
from motif_video.training.compute import Routing, peak_flops, training_flops
from motif_video.training.config import TrainConfig
from motif_video.training.distill import Trajectories
from motif_video.training.ema import EMA, ema_weights, lora_adapters
from motif_video.training.export import LORA_FILE
from motif_video.training.optim import build_optimizer
from motif_video.training.parallel import parallelize
from motif_video.training.recipes import Recipe, recipe_for
from motif_video.training.step import train_step
from motif_video.training.transitions import start_from

__all__ = ["build", "train", "train_step"]


class Trainable(nn.Module):
    """Everything the optimizer updates: the transformer, the word-level text encoder when it is
    trained with it, and, while REPA runs, the projector."""

    def __init__(
        self,
        transformer: MotifVideoTransformer,
        projector: Projector | None,
        text_encoder: WordTextEncoder | None = None,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.projector = projector
        self.text_encoder = text_encoder


@dataclass
class TrainState:
    cfg: TrainConfig
    world: distributed.World
    model: Trainable
    optimizer: torch.optim.Optimizer
    ema: EMA
    data: SyntheticLatents | StreamedShards | Trajectories
    teacher: Teacher | None
    recipe: Recipe
    latent_shape: tuple[int, int, int, int]  # [Z, F, H, W] of the data's (first) sample
    skipped: int = 0
    history: list[dict] = field(default_factory=list)
    sampler: object | None = None  # the sample pipeline's VAE / text encoder, loaded on first use
    command: str = ""  # recorded in an exported pipeline's manifest
    frozen_text: object | None = None  # text.encoder "sentence" / "t5gemma2": encodes captions on the fly


def build(cfg: TrainConfig, world: distributed.World | None = None, progress: bool = False) -> TrainState:
    world = world or distributed.init()
    recipe = recipe_for(cfg)
    model_cfg = cfg.model.transformer()
    if cfg.model.init_from:  # a released checkpoint, or the previous curriculum stage (training/transitions.py)
        generator = torch.Generator(device=world.device).manual_seed(cfg.train.seed)
        transformer, transition = start_from(cfg.model.init_from, model_cfg, generator, world.device)
        if world.is_main:
            print(f"started from {cfg.model.init_from}: {transition.describe()}", flush=True)
    else:
        with torch.device("meta"):
            transformer = MotifVideoTransformer(model_cfg)
        transformer.to_empty(device=world.device)
        transformer.init_weights(torch.Generator(device=world.device).manual_seed(cfg.train.seed))
    if cfg.model.lora_rank > 0:
        transformer = add_lora(transformer, cfg.model.lora_rank)
        if world.is_main:
            trainable = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
            total = sum(p.numel() for p in transformer.parameters())
            wrapped = sum(1 for n, _ in transformer.named_modules() if n.endswith(".lora_A"))
            print(
                f"LoRA rank {cfg.model.lora_rank} (alpha {cfg.model.lora_rank}) on {wrapped} projections: "
                f"{trainable:,} trainable of {total:,} parameters ({trainable / total:.2%}); the exports merge it "
                f"into transformer/ and write it alone as {LORA_FILE}",
                flush=True,
            )
    shards = recipe.build_data(world, progress)
    distributed.barrier()
    if cfg.data.source == "teacher":  # a distillation: the teacher's trajectories (training/distill.py)
        data = Trajectories(shards, seed=cfg.data.seed)
        latent_shape = data.latent_shape
    elif shards is not None:
        stage = cfg.stage
        data = StreamedShards(
            shards,
            seed=cfg.data.seed,
            with_video=cfg.repa.enabled,
            workers=cfg.data.workers,
            prefetch=cfg.data.prefetch,
            window=cfg.data.window,
            text_tokens=stage.text_tokens if stage.name else 0,
        )
        first = data.first()
        latent_shape = tuple(first["latents"].shape)
        check_shards(first, data, transformer.cfg, Path(shards), cfg.text.encoder)
    else:
        data = SyntheticLatents(
            latent_channels=transformer.cfg.out_channels,
            text_dim=transformer.cfg.text_dim,
            image_dim=transformer.cfg.image_dim,
            frames=cfg.data.latent_frames,
            height=cfg.data.latent_height,
            width=cfg.data.latent_width,
            text_len=cfg.data.text_len,
            num_samples=cfg.data.num_samples,
            image_fraction=cfg.data.image_fraction,
            seed=cfg.data.seed,
        )
        latent_shape = (
            transformer.cfg.out_channels,
            cfg.data.latent_frames,
            cfg.data.latent_height,
            cfg.data.latent_width,
        )
    text_encoder = None
    if cfg.text.encoder == "word":
        vocab = {w for caption in data.captions for w in re.findall(r"[a-z0-9]+", caption.lower())}
        vocab |= recipe.vocabulary()
        torch.manual_seed(cfg.train.seed + 2)
        t = cfg.text
        if t.init_from:  # a fine-tune of a pipeline with its own word-level encoder: start from it
            text_encoder = WordTextEncoder.from_pretrained(Path(t.init_from) / "text_encoder", device=world.device)
            text_encoder.train().requires_grad_(not t.frozen)  # from_pretrained gives eval mode, no gradients
            missing = sorted(vocab - set(text_encoder.vocab))
            if missing:
                raise ValueError(
                    f"the word-level encoder of {t.init_from} does not know {missing[:10]} (words of these captions)"
                )
        else:
            text_encoder = WordTextEncoder(sorted(vocab), t.dim, t.layers, t.heads, t.max_len).to(world.device)
    frozen_text = None
    if cfg.text.encoder in ("sentence", "t5gemma2"):
        frozen_text = load_text_encoder(cfg.text.path, device=world.device)
        width = frozen_text.encode(["a"])[0].shape[-1]
        if width != model_cfg.text_dim:
            raise ValueError(
                f"the text encoder in {cfg.text.path} gives {width}-wide states; the transformer's text_dim is "
                f"{model_cfg.text_dim} (set model.overrides.text_dim = {width})"
            )
    teacher = projector = None
    if cfg.repa.enabled:
        teacher = Teacher.from_pretrained(cfg.repa.teacher, cfg.repa.teacher_path).to(world.device)
        torch.manual_seed(cfg.train.seed + 1)  # projector init: the same on every rank
        projector = Projector(transformer.cfg.hidden_size, teacher.dim, cfg.repa.projector_dim).to(world.device)
    model = parallelize(
        Trainable(transformer, projector, text_encoder),
        transformer,
        world,
        cfg.train.activation_checkpointing,
        cfg.train.compile,
        cfg.train.precision,
        cfg.train.hsdp_replicas,
    )
    model.train()
    ema = EMA(model, cfg.train.ema_decay, skip=("projector.",))
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optim)
    if isinstance(data, StreamedShards):  # the epochs' plan files, one per rank (rank 0 writes them)
        stage = cfg.stage
        admitted = (
            stage_buckets(data.index, stage.frame_buckets, stage.image_size, stage.video_size) if stage.name else ()
        )
        if stage.name and not admitted:
            raise ValueError(
                f"stage {stage.name}: none of the data's buckets {data.index.bucket_names} has the stage's "
                f"frame counts {list(stage.frame_buckets)} and sizes (images {stage.image_size[1]}x"
                f"{stage.image_size[0]}, videos {stage.video_size[1]}x{stage.video_size[0]})"
            )
        data.plan(
            Path(cfg.train.out_dir) / "plan",
            cfg.train.steps,
            world.rank,
            world.size,
            cfg.data.batch_size,
            stage.image_batch_size if stage.name else 0,
            stage.interleave if stage.name else "A",
            admitted,
            world.is_main,
        )
    return TrainState(cfg, world, model, optimizer, ema, data, teacher, recipe, latent_shape, frozen_text=frozen_text)


def check_shards(first: dict, data: StreamedShards, model_cfg, path: Path, text_encoder: str) -> None:
    """The model must take what the shards hold: latent channels, and text states of the width it reads.
    A mismatch names both sides and the setting to change (rather than a shape error deep in the model)."""
    made_by = ""
    record = path / "encoders.json"
    if record.is_file():
        info = json.loads(record.read_text())
        made_by = f" (made with {info.get('text_encoder')} from {info.get('weights')})"
    channels = first["latents"].shape[0]
    if channels != model_cfg.out_channels:
        raise ValueError(
            f"the shards in {path} hold {channels}-channel latents{made_by}; the transformer predicts "
            f"{model_cfg.out_channels} (set model.overrides.out_channels={channels} and "
            f"model.overrides.in_channels={2 * channels + 1})"
        )
    if data.has_text and text_encoder == "precomputed" and first["text"].shape[-1] != model_cfg.text_dim:
        width = first["text"].shape[-1]
        raise ValueError(
            f"the shards in {path} hold {width}-wide text states{made_by}; the transformer reads "
            f"{model_cfg.text_dim}-wide text (set model.overrides.text_dim={width})"
        )
    if text_encoder == "precomputed" and not data.has_text:
        raise ValueError(
            f"the shards in {path} hold no text states (precomputed with a text encoder trained with the "
            "transformer); set text.encoder to word, sentence or t5gemma2"
        )


# Every Linear projection inside the blocks (attention, MLPs, Shared Cross-Attention); not the embedders.
LORA_TARGETS = r".*_blocks\.\d+\.(.*\.)?(qkv|mlp_in|proj|video_attn_out|text_attn_out|fc1|fc2|q|kv)"


def add_lora(transformer: MotifVideoTransformer, rank: int) -> MotifVideoTransformer:
    """Freeze the weights and wrap every projection with a rank-`rank` LoRA adapter (peft)."""
    from peft import LoraConfig, inject_adapter_in_model

    transformer.requires_grad_(False)
    # alpha = rank: the adapter's scale is 1, so the merge in `merged_weights` (training/ema.py) is W + B @ A.
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, init_lora_weights=True)
    return inject_adapter_in_model(config, transformer)


def train(cfg: TrainConfig, progress: bool = True, command: str = "") -> list[dict]:
    """Run (or resume) the training described by `cfg`; returns this process's logged metrics.
    `command` (the command line that started it) is recorded in an exported pipeline's manifest."""
    world = distributed.init()
    run_dir = Path(cfg.train.out_dir)
    check_resume(run_dir, cfg)  # before anything is written: a refused resume changes nothing
    state = build(cfg, world, progress)
    state.command = command
    if world.is_main:  # written once the run could be built: a refused or broken config leaves no run folder
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        record = {"cwd": os.getcwd(), "command": command}  # relative paths in the config are relative to cwd
        (run_dir / "run.json").write_text(json.dumps(record, indent=2) + "\n")

    start = 0
    saved = checkpoint.checkpoints(run_dir)
    if saved:
        meta = checkpoint.load(saved[-1], state.model, state.optimizer, state.ema)
        start, state.skipped = meta["step"], meta.get("skipped", 0)
        where = ""
        if isinstance(state.data, StreamedShards) and start < cfg.train.steps:
            position = state.data.position(start)  # the reader restarts here: epoch, window, step in the epoch
            where = f"; data: epoch {position['epoch']}, step {position['step_in_epoch']}, window {position['window']}"
            if meta.get("data") not in (None, position):
                distributed.print0(f"note: the data plan changed since the checkpoint (it was at {meta['data']})")
        distributed.print0(f"resumed from {saved[-1]} (step {start}{where})")
    metrics_file = run_dir / "metrics.jsonl"
    if world.is_main and metrics_file.exists():  # drop lines the resumed run will write again
        kept = _readable_metrics(metrics_file, start)
        metrics_file.write_text("".join(line + "\n" for line in kept))
    writer = _tensorboard(run_dir) if world.is_main else None
    note = ema_warning(cfg, start)
    if note and world.is_main:
        print(f"note: {note}", flush=True)
    peak = peak_flops(world.device)  # None where the accelerator is not known (and on CPUs): no MFU then

    bar = tqdm(
        range(start, cfg.train.steps),
        initial=start,
        total=cfg.train.steps,
        desc="training",
        disable=not (progress and world.is_main),
    )
    for step in bar:
        started = time.perf_counter()
        metrics = train_step(state, step)
        elapsed = time.perf_counter() - started
        metrics["tokens_per_s"] = metrics["tokens"] / elapsed
        metrics["data_wait"] = metrics.pop("data_seconds") / elapsed  # share of the step spent waiting for data
        if peak is not None:
            metrics["mfu"] = step_flops(state, metrics) / elapsed / (peak * world.size)
        state.history.append(metrics)
        if state.teacher is not None and 0 < cfg.repa.until_step == step + 1:
            state.teacher = None  # early-phase REPA ends: free the teacher
        if world.is_main:
            with metrics_file.open("a") as f:
                f.write(json.dumps(metrics) + "\n")
            shown = {"loss": f"{metrics['loss']:.4f}", "tok_s": f"{metrics['tokens_per_s']:.0f}"}
            shown["data"] = f"{metrics['data_wait']:.0%}"
            if "mfu" in metrics:
                shown["mfu"] = f"{metrics['mfu']:.2f}"
            bar.set_postfix(shown)
            if writer is not None and (step % cfg.train.log_every == 0 or step + 1 == cfg.train.steps):
                for key in ("loss", "repa_loss", "grad_norm", "lr", "tokens_per_s", "data_wait", "skipped", "mfu"):
                    if key in metrics:
                        writer.add_scalar(f"train/{key}", metrics[key], step)
        if cfg.train.sample_every > 0 and (step + 1) % cfg.train.sample_every == 0:
            write_samples(state, step + 1, run_dir)
        if (step + 1) % cfg.train.save_every == 0 or step + 1 == cfg.train.steps:
            meta = {"skipped": state.skipped}
            if isinstance(state.data, StreamedShards) and step + 1 < cfg.train.steps:
                meta["data"] = state.data.position(step + 1)  # where the reader resumes
            checkpoint.save(
                run_dir, step + 1, state.model, state.optimizer, state.ema, meta, cfg.train.keep_last, world.is_main
            )
    if isinstance(state.data, StreamedShards):
        state.data.close()
    if writer is not None:
        writer.close()
    export_ema(state, run_dir / "ema-transformer")
    if cfg.model.lora_rank > 0:
        adapters = lora_adapters(state.ema)  # collective
        if world.is_main:
            save_adapter(
                run_dir / LORA_FILE,
                lora_to_official(state.model.transformer.cfg, adapters),
                cfg.model.lora_rank,
                cfg.model.lora_rank,
                base=str(cfg.model.init_from or ""),
            )
    state.recipe.finish(state, run_dir)
    return state.history


def step_flops(state: TrainState, metrics: dict) -> float:
    """Model FLOPs of a training step (all ranks): forward + backward of every sample."""
    cfg, model_cfg = state.cfg, state.model.transformer.cfg
    tokens = metrics["tokens"] // max(1, metrics["samples"])
    routing = None
    if cfg.tread.enabled:
        last = cfg.tread.last_block(model_cfg.num_dual_blocks + model_cfg.num_single_blocks)
        routing = Routing(cfg.tread.start, last, cfg.tread.keep_ratio)
    text = metrics.get("text_tokens", 0)
    return metrics["samples"] * training_flops(model_cfg, tokens, text, routing=routing)


RESUMABLE_CHANGES = {
    "train.steps",
    "train.log_every",
    "train.save_every",
    "train.keep_last",
    "train.sample_every",
    "train.sample_weights",
    "train.sample_prompts",
    "train.sample_steps",
    "train.guidance_scale",
    "train.max_skipped_steps",
    "train.activation_checkpointing",
    "train.compile",
    "train.grad_accum",
    "train.hsdp_replicas",
}


# Settings added after runs existed whose old behaviour was not their default: what a run folder without the
# key did. A word-level encoder loaded by text.init_from stayed frozen before text.frozen existed.
LEGACY_SETTINGS = {"text.frozen": lambda saved: bool(saved.get("text.init_from"))}


def check_resume(run_dir: Path, cfg: TrainConfig) -> None:
    """A run folder with checkpoints resumes only with the settings it was started with (see
    RESUMABLE_CHANGES); a change is refused, naming the keys, before anything is written."""
    saved = run_dir / "config.json"
    if not checkpoint.checkpoints(run_dir) or not saved.is_file():
        return

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and k != "overrides":
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    now = flat(json.loads(json.dumps(cfg.to_dict())))  # tuples as lists, as the file has them
    # a setting added to motif-video after the run started is absent from its file: the run had its default,
    # or, where the setting names what older versions did anyway, that behaviour (LEGACY_SETTINGS)
    saved_flat = flat(json.loads(saved.read_text()))
    defaults = flat(json.loads(json.dumps(TrainConfig().to_dict())))
    before = {**defaults, **{k: was(saved_flat) for k, was in LEGACY_SETTINGS.items()}, **saved_flat}
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        listed = ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ValueError(
            f"{run_dir} holds checkpoints of a run with other settings ({listed}); resume with the same settings "
            "or start a new train.out_dir"
        )


def ema_warning(cfg: TrainConfig, start: int) -> str | None:
    """A note when the EMA export cannot have moved far from the starting weights (decay vs steps)."""
    left = cfg.train.steps - start
    kept = cfg.train.ema_decay ** max(cfg.train.steps, 1)
    if kept < 0.1 or left <= 0:
        return None
    return (
        f"train.ema_decay {cfg.train.ema_decay} over {cfg.train.steps} steps: the exported EMA weights keep "
        f"{kept:.0%} of the starting weights, so they will differ little from them; for a short run set "
        + (
            f"train.ema_decay to about {1 - 5 / cfg.train.steps:.3f} (or 0 for the last weights)"
            if cfg.train.steps > 5
            else "train.ema_decay = 0 (the last weights)"
        )
    )


def write_samples(state: TrainState, step: int, run_dir: Path) -> list[Path]:
    """Generate the fixed sample prompts with the EMA weights (rank 0 writes `samples/step-N-i.mp4`),
    with the pipeline the recipe gives (its own export, or `train.sample_weights` with these weights)."""
    from motif_video.media import write_mp4

    cfg = state.cfg
    pipe = state.recipe.sample_pipeline(state, run_dir, step)  # collective
    if pipe is None:
        return []
    prompts = list(cfg.train.sample_prompts)
    size = state.recipe.size(state)
    out = pipe(prompts, steps=cfg.train.sample_steps, seed=cfg.train.seed, progress=False, **size)
    folder = run_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    return [write_mp4(v, folder / f"step-{step:07d}-{i}.mp4", fps=8) for i, v in enumerate(out.uint8())]


def export_ema(state: TrainState, path: Path) -> None:
    """Write the EMA weights as an official diffusers transformer directory (rank 0)."""
    model = MotifVideoTransformer(state.model.transformer.cfg)
    model.load_state_dict(ema_weights(state.model, state.ema), strict=True)  # collective
    if state.world.is_main:
        save_transformer(model, path)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional: metrics.jsonl has the same numbers
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _readable_metrics(path: Path, start: int) -> list[str]:
    """The lines of metrics.jsonl before step `start`. A torn last line (power loss, full disk) is
    dropped with a note; a broken line elsewhere is an error naming the file and the line."""
    lines = path.read_text().splitlines()
    kept = []
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                distributed.print0(f"{path}: dropped a torn last line ({len(line)} characters) before resuming")
                break
            raise ValueError(f"{path}: line {n} is not JSON; fix or remove it to resume") from None
        if record["step"] < start:
            kept.append(line)
    return kept
