"""`train(cfg)`: the rectified-flow recipe with TREAD routing and early-phase REPA.

Reads top to bottom: distributed init -> run dir + resolved config -> data -> model (on meta,
then materialised) -> REPA projector and teacher -> parallelize -> EMA -> optimizer -> resume ->
loop. `train_step` is separately callable (tests run single steps).

Randomness is drawn per sample from a generator seeded by (seed, step, sample index): noise,
time, caption dropout and the TREAD route of a sample do not depend on how the global batch is
split over ranks, and a resumed run repeats exactly what the interrupted one would have done.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from motif_video import distributed
from motif_video.data import world as shapes_world
from motif_video.data.latent_shards import LatentShards
from motif_video.data.synthetic import SyntheticLatents
from motif_video.model.checkpoint_io import save_transformer
from motif_video.model.lora import save_adapter
from motif_video.model.lora import to_official as lora_to_official
from motif_video.model.routing import Route
from motif_video.model.text_encoder import load_text_encoder
from motif_video.model.transformer import MotifVideoTransformer
from motif_video.model.word_encoder import WordTextEncoder
from motif_video.training import checkpoint
from motif_video.training.alignment import Projector, Teacher, repa_loss, resample_tokens
from motif_video.training.config import TrainConfig
from motif_video.training.ema import EMA
from motif_video.training.export import LORA_FILE, base_pipeline, export
from motif_video.training.flow import (
    TIMESTEP_SCALE,
    flow_loss,
    interpolate,
    resolution_shift,
    sample_times,
    velocity_target,
)
from motif_video.training.optim import build_optimizer, lr_factor
from motif_video.training.parallel import autocast, parallelize
from motif_video.training.shapes_data import build_shapes_data
from motif_video.training.transitions import start_from


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
    data: SyntheticLatents | LatentShards
    teacher: Teacher | None
    skipped: int = 0
    history: list[dict] = field(default_factory=list)
    sampler: object | None = None  # the sample pipeline's VAE / text encoder, loaded on first use
    command: str = ""  # recorded in an exported pipeline's manifest
    frozen_text: object | None = None  # text.encoder "sentence" / "t5gemma2": encodes captions on the fly


def build(cfg: TrainConfig, world: distributed.World | None = None, progress: bool = False) -> TrainState:
    world = world or distributed.init()
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
    shards = cfg.data.path
    if cfg.data.source == "shapes":
        shards = build_shapes_data(cfg, world.is_main, progress)
        distributed.barrier()
    data = (
        LatentShards(shards, seed=cfg.data.seed, with_video=cfg.repa.enabled)
        if cfg.data.source in ("shards", "shapes")
        else SyntheticLatents(
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
    )
    if isinstance(data, LatentShards):
        check_shards(data, transformer.cfg, Path(shards), cfg.text.encoder)
    text_encoder = None
    if cfg.text.encoder == "word":
        vocab = {w for caption in data.captions for w in re.findall(r"[a-z0-9]+", caption.lower())}
        if cfg.data.source == "shapes":
            vocab |= set(shapes_world.vocabulary())  # every word of the world, held-out prompts too
        torch.manual_seed(cfg.train.seed + 2)
        t = cfg.text
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
    return TrainState(cfg, world, model, optimizer, ema, data, teacher, frozen_text=frozen_text)


def check_shards(data: LatentShards, model_cfg, path: Path, text_encoder: str) -> None:
    """The model must take what the shards hold: latent channels, and text states of the width it reads.
    A mismatch names both sides and the setting to change (rather than a shape error deep in the model)."""
    made_by = ""
    record = path / "encoders.json"
    if record.is_file():
        info = json.loads(record.read_text())
        made_by = f" (made with {info.get('text_encoder')} from {info.get('weights')})"
    channels = data.samples[0]["latents"].shape[0]
    if channels != model_cfg.out_channels:
        raise ValueError(
            f"the shards in {path} hold {channels}-channel latents{made_by}; the transformer predicts "
            f"{model_cfg.out_channels} (set model.overrides.out_channels={channels} and "
            f"model.overrides.in_channels={2 * channels + 1})"
        )
    if data.has_text and text_encoder == "precomputed" and data.samples[0]["text"].shape[-1] != model_cfg.text_dim:
        width = data.samples[0]["text"].shape[-1]
        raise ValueError(
            f"the shards in {path} hold {width}-wide text states{made_by}; the transformer reads "
            f"{model_cfg.text_dim}-wide text (set model.overrides.text_dim={width})"
        )


# Every Linear projection inside the blocks (attention, MLPs, Shared Cross-Attention); not the embedders.
LORA_TARGETS = r".*_blocks\.\d+\.(.*\.)?(qkv|mlp_in|proj|video_attn_out|text_attn_out|fc1|fc2|q|kv)"


def add_lora(transformer: MotifVideoTransformer, rank: int) -> MotifVideoTransformer:
    """Freeze the weights and wrap every projection with a rank-`rank` LoRA adapter (peft)."""
    from peft import LoraConfig, inject_adapter_in_model

    transformer.requires_grad_(False)
    # alpha = rank: the adapter's scale is 1, so the merge in `merged_weights` is W + B @ A.
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, init_lora_weights=True)
    return inject_adapter_in_model(config, transformer)


def merged_weights(named: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict with LoRA adapters (peft names) -> plain weights: W + B @ A, adapter keys dropped."""
    out = {}
    for name, value in named.items():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        if ".base_layer." in name:
            prefix, _, leaf = name.partition(".base_layer.")
            if leaf == "weight":
                a, b = named[f"{prefix}.lora_A.default.weight"], named[f"{prefix}.lora_B.default.weight"]
                value = value + b.float() @ a.float()
            name = f"{prefix}.{leaf}"
        out[name] = value
    return out


def step_kind(cfg: TrainConfig, step: int) -> str | None:
    """ "I" (an image batch) or "V" (a video batch) from a curriculum stage's interleave pattern."""
    return cfg.stage.interleave[step % len(cfg.stage.interleave)] if cfg.stage.name else None


def first_frames(batch: dict) -> dict:
    """An image batch from a video batch: the first latent frame (the causal VAE encodes the first
    frame alone, so it is that frame's image latent), and the first pixel frame for REPA."""
    out = {**batch, "latents": batch["latents"][:, :, :1]}
    if "video" in batch:
        out["video"] = batch["video"][:, :, :1]
    return out


def variant_index(probabilities: tuple[float, float, float], generator: torch.Generator) -> int:
    """0 (long), 1 (short) or 2 (truncated), drawn with the given probabilities."""
    u = torch.rand(1, generator=generator).item()
    return 0 if u < probabilities[0] else 1 if u < probabilities[0] + probabilities[1] else 2


def caption_variant(caption: str, probabilities: tuple[float, float, float], generator: torch.Generator) -> str:
    """For data with one caption: the caption, a short one (its first clause) or a truncated one (cut
    after a random word), with the given probabilities (the report's 0.5 / 0.3 / 0.2 in its curriculum).
    Data with its own three variants draws among them with `variant_index` instead."""
    if probabilities[0] >= 1.0:
        return caption
    u = torch.rand(1, generator=generator).item()
    words = caption.split()
    if u < probabilities[0] or len(words) < 3:
        return caption
    if u < probabilities[0] + probabilities[1]:
        short = re.split(r" and | on | with |, ", caption, maxsplit=1)[0]
        return short
    keep = 2 + int(torch.randint(0, len(words) - 2, (1,), generator=generator))
    return " ".join(words[:keep])


def _generator(seed: int, step: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 100_003 + index)


def pure_noise_share(cfg: TrainConfig, step: int) -> float:
    """The share of step `step`'s samples trained at t = 1: `flow.noise_phase_fraction` inside the
    phase `flow.noise_phase` (shares of the run: [0.5, 0.9] of 1,000 steps is steps 500..899),
    `flow.noise_fraction` elsewhere. (A phase at pure noise, where the caption alone must say what
    the clip is, is where the shapes-tiny model learns what a direction word means; the steps after
    it bring back the rest of the path.)"""
    start, end = (round(share * cfg.train.steps) for share in cfg.flow.noise_phase)
    return cfg.flow.noise_phase_fraction if start <= step < end else cfg.flow.noise_fraction


def train_step(state: TrainState, step: int) -> dict[str, float]:
    cfg, world = state.cfg, state.world
    transformer = state.model.transformer
    model_cfg = transformer.cfg
    fetch = time.perf_counter()
    batch = state.data.batch(step, cfg.data.batch_size, world.rank, world.size)
    data_seconds = time.perf_counter() - fetch
    if step_kind(cfg, step) == "I" and batch["latents"].shape[2] > 1:
        batch = first_frames(batch)
    x0 = batch["latents"]
    b, z, frames, height, width = x0.shape
    first = world.rank * b  # global index of this rank's first sample
    gens = [_generator(cfg.train.seed, step, first + i) for i in range(b)]
    tokens = model_cfg.num_video_tokens(frames, height, width)
    flow = cfg.flow
    shift = resolution_shift(tokens, flow.shift, flow.base_tokens)

    noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens])
    at_one = pure_noise_share(cfg, step)
    t = torch.cat([sample_times(1, g, flow.timesteps, flow.logit_mean, flow.logit_std, shift, at_one) for g in gens])
    drop = torch.cat([torch.rand(1, generator=g) < cfg.flow.caption_dropout for g in gens])
    text_encoder = state.model.text_encoder
    ids = None  # token ids of the word-level encoder, when it is trained here
    variants = cfg.stage.caption_variants
    # the data's own [long, short, truncated] captions (a captioner wrote them), drawn with the stage's probabilities
    given = batch.get("caption_variants") or [None] * b
    pick = [variant_index(variants, g) for g in gens] if variants[0] < 1.0 and all(given) else None
    if text_encoder is not None or state.frozen_text is not None:  # captions are encoded here
        if pick is not None:
            captions = [v[i] for v, i in zip(given, pick, strict=True)]
        else:
            captions = [caption_variant(c, variants, g) for c, g in zip(batch["captions"], gens, strict=True)]
        captions = ["" if d else c for d, c in zip(drop.tolist(), captions, strict=True)]  # dropped: empty prompt
        text = None
        if text_encoder is not None:  # trained with the transformer
            ids, text_mask = text_encoder.tokenize(captions)
        else:
            text, text_mask = state.frozen_text.encode(captions)
    else:
        text, text_mask = batch["text"], batch["text_mask"]
        if pick is not None and "text_variants" in batch:  # precomputed states of the three caption variants
            rows, chosen = torch.arange(b), torch.tensor(pick)
            text, text_mask = batch["text_variants"][chosen, rows], batch["text_variant_masks"][chosen, rows]
        text = torch.where(drop[:, None, None], state.data.null_text, text)
        text_mask = torch.where(drop[:, None], state.data.null_mask, text_mask)

    # Image-to-video for a whole batch at a time (the model takes one set of image tokens per batch).
    i2v = frames > 1 and torch.rand(1, generator=_generator(cfg.train.seed, step, -1)).item() < cfg.flow.i2v_fraction
    condition = torch.zeros(b, z + 1, frames, height, width)
    image_tokens = None
    if i2v:
        condition[:, :z, 0] = x0[:, :, 0]
        condition[:, z, 0] = 1.0
        image_tokens = batch.get("image_tokens")

    route = None
    if cfg.tread.enabled:
        keep = max(1, round(tokens * cfg.tread.keep_ratio))
        route = Route(
            cfg.tread.start,
            cfg.tread.last_block(model_cfg.num_dual_blocks + model_cfg.num_single_blocks),
            torch.stack([torch.rand(tokens, generator=g).argsort()[:keep].sort().values for g in gens]).to(
                world.device
            ),
        )

    repa_on = state.teacher is not None and (cfg.repa.until_step <= 0 or step < cfg.repa.until_step)
    device = world.device
    xt = interpolate(x0, noise, t)
    target_velocity = velocity_target(x0, noise)
    lr = cfg.optim.lr * lr_factor(step, cfg.optim, cfg.train.steps)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    state.optimizer.zero_grad(set_to_none=True)

    # Gradient accumulation: every random draw above was made per sample, so splitting the forward and
    # backward into micro-batches changes no input; each micro-batch's mean loss is weighted by its share
    # of the rank's batch, so the accumulated gradient is the full batch's.
    loss_flow = torch.zeros((), device=device)
    loss_repa = torch.zeros((), device=device)
    if b % cfg.train.grad_accum:
        raise ValueError(f"this rank's batch of {b} does not split into train.grad_accum={cfg.train.grad_accum} parts")
    micro = b // cfg.train.grad_accum
    for lo in range(0, b, micro):
        rows = slice(lo, lo + micro)
        share = micro / b
        with autocast(cfg.train.precision, device):
            if text_encoder is not None and ids is not None:  # the word-level encoder, inside autocast and the graph
                text_part = text_encoder(ids[rows].to(device), text_mask[rows].to(device))
            else:
                text_part = text[rows].to(device)
            part_route = None if route is None else Route(route.start, route.end, route.keep[rows])
            out = transformer(
                torch.cat([xt[rows], condition[rows]], dim=1).to(device),
                (t[rows] * TIMESTEP_SCALE).to(device),
                text_part,
                text_mask[rows].to(device),
                None if image_tokens is None else image_tokens[rows].to(device),
                route=part_route,
                capture=[cfg.repa.block] if repa_on else (),
            )
            part_flow = flow_loss(out.velocity, target_velocity[rows].to(device))
            part_loss = part_flow
            part_repa = torch.zeros((), device=device)
            if repa_on:
                student = out.features[cfg.repa.block]  # [B, L or K, D]
                pixels = batch["video"][rows] if "video" in batch else state.data.pixels(x0[rows])
                teacher_tokens, grid = state.teacher(pixels.to(device))
                target = resample_tokens(teacher_tokens, grid, (frames, height // 2, width // 2))
                if part_route is not None and part_route.start <= cfg.repa.block < part_route.end:
                    target = part_route.gather(target)  # the end block scatters before capture
                part_repa = repa_loss(state.model.projector(student), target)
                part_loss = part_loss + cfg.repa.weight * part_repa
        (part_loss * share).backward()
        loss_flow = loss_flow + part_flow.detach() * share
        loss_repa = loss_repa + part_repa.detach() * share
    loss = loss_flow + cfg.repa.weight * loss_repa

    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in state.model.parameters() if p.requires_grad], cfg.optim.grad_clip
    )
    grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    finite = _all_ranks(torch.isfinite(loss.detach()).float(), dist.ReduceOp.MIN).item() > 0
    if finite and math.isfinite(grad_norm):
        state.optimizer.step()
        state.ema.update(state.model)
    else:  # skip the update, count it; too many in a run stop it
        state.optimizer.zero_grad(set_to_none=True)
        state.skipped += 1
        if state.skipped > cfg.train.max_skipped_steps:
            raise FloatingPointError(
                f"{state.skipped} steps had a non-finite loss or gradient (limit train.max_skipped_steps="
                f"{cfg.train.max_skipped_steps}); lower optim.lr or check the data"
            )
    return {
        "step": step,
        "loss": _all_ranks(loss_flow.detach().float(), dist.ReduceOp.SUM).item() / world.size,
        "repa_loss": _all_ranks(loss_repa.detach().float(), dist.ReduceOp.SUM).item() / world.size,
        "grad_norm": grad_norm,
        "lr": lr,
        "tokens": tokens * cfg.data.batch_size,
        "skipped": state.skipped,
        "data_seconds": data_seconds,  # waiting for the batch (the loop turns it into a share of the step)
        # how many of this rank's samples got the long / short / truncated caption (data with three variants)
        **({"caption_variants": [pick.count(i) for i in range(3)]} if pick is not None else {}),
    }


def _all_ranks(x: Tensor, op) -> Tensor:
    if dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x, op=op)
    return x


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
        distributed.print0(f"resumed from {saved[-1]} (step {start})")
    metrics_file = run_dir / "metrics.jsonl"
    if world.is_main and metrics_file.exists():  # drop lines the resumed run will write again
        kept = _readable_metrics(metrics_file, start)
        metrics_file.write_text("".join(line + "\n" for line in kept))
    writer = _tensorboard(run_dir) if world.is_main else None
    note = ema_warning(cfg, start)
    if note and world.is_main:
        print(f"note: {note}", flush=True)

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
        state.history.append(metrics)
        if state.teacher is not None and 0 < cfg.repa.until_step == step + 1:
            state.teacher = None  # early-phase REPA ends: free the teacher
        if world.is_main:
            with metrics_file.open("a") as f:
                f.write(json.dumps(metrics) + "\n")
            bar.set_postfix(
                loss=f"{metrics['loss']:.4f}",
                tok_s=f"{metrics['tokens_per_s']:.0f}",
                data=f"{metrics['data_wait']:.0%}",
            )
            if writer is not None and (step % cfg.train.log_every == 0 or step + 1 == cfg.train.steps):
                for key in ("loss", "repa_loss", "grad_norm", "lr", "tokens_per_s", "data_wait", "skipped"):
                    writer.add_scalar(f"train/{key}", metrics[key], step)
        if cfg.train.sample_every > 0 and (step + 1) % cfg.train.sample_every == 0:
            write_samples(state, step + 1, run_dir)
        if (step + 1) % cfg.train.save_every == 0 or step + 1 == cfg.train.steps:
            checkpoint.save(
                run_dir,
                step + 1,
                state.model,
                state.optimizer,
                state.ema,
                {"skipped": state.skipped},
                cfg.train.keep_last,
                world.is_main,
            )
    if writer is not None:
        writer.close()
    export_ema(state, run_dir / "ema-transformer")
    if cfg.model.lora_rank > 0:
        adapters = lora_adapters(state)  # collective
        if world.is_main:
            save_adapter(
                run_dir / LORA_FILE,
                lora_to_official(state.model.transformer.cfg, adapters),
                cfg.model.lora_rank,
                cfg.model.lora_rank,
                base=str(cfg.model.init_from or ""),
            )
    if cfg.data.source == "shapes":  # a complete pipeline: its own (or its frozen) text encoder, its autoencoder
        export_pipeline(state, run_dir / "pipeline", cfg.train.steps)
    elif world.is_main and base_pipeline(cfg.to_dict()) is not None:  # a fine-tune of a pipeline: export one
        path = export(run_dir, run_dir / "pipeline")
        print(f"exported {path} (generate --weights {path})", flush=True)
    return state.history


# Settings a resumed run may change: when and what it logs, saves and samples, how it is laid out over
# devices, and how long it runs. Anything else would make the resumed run a different run.
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

    before = flat(json.loads(saved.read_text()))
    now = flat(json.loads(json.dumps(cfg.to_dict())))  # tuples as lists, as the file has them
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


def lora_adapters(state: TrainState) -> dict[str, tuple[Tensor, Tensor]]:
    """{our weight name: (A, B)} of every LoRA adapter, EMA values. A collective under FSDP2."""

    def full(t: Tensor) -> Tensor:
        return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().float().cpu()

    ema = {n.removeprefix("transformer.").replace("_orig_mod.", ""): full(v) for n, v in state.ema.state_dict().items()}
    pairs = {}
    for name, a in ema.items():
        if ".lora_A." in name:
            module = name.split(".lora_A.")[0]
            pairs[module] = (a, ema[name.replace(".lora_A.", ".lora_B.")])
    return pairs


def ema_weights(state: TrainState, module: str = "transformer") -> dict[str, Tensor]:
    """Full (unsharded) CPU weights of `module` ("transformer" or "text_encoder") with the EMA
    values, LoRA merged in. A collective under FSDP2: every rank must call it."""

    def full(t: Tensor) -> Tensor:
        return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().float().cpu()

    prefix = module + "."
    weights = {n: full(p) for n, p in state.model.named_parameters() if n.startswith(prefix)}
    weights.update({n: full(s) for n, s in state.ema.state_dict().items() if n.startswith(prefix)})
    return merged_weights({n.removeprefix(prefix).removeprefix("_orig_mod."): w for n, w in weights.items()})


def ema_transformer(state: TrainState) -> MotifVideoTransformer:
    model = MotifVideoTransformer(state.model.transformer.cfg)
    model.load_state_dict(ema_weights(state), strict=True)
    return model


def write_samples(state: TrainState, step: int, run_dir: Path) -> list[Path]:
    """Generate the fixed sample prompts with the EMA weights (rank 0 writes `samples/step-N-i.mp4`).

    A run that trains its own text encoder samples from its own exported pipeline; otherwise the
    VAE and text encoder come from `train.sample_weights`."""
    from motif_video.media import write_mp4
    from motif_video.sampling.pipeline import MotifVideoPipeline

    cfg = state.cfg
    if cfg.data.source == "shapes":
        pipeline_dir = export_pipeline(state, run_dir / "pipeline", step)  # collective
        if not state.world.is_main:
            return []
        pipe = MotifVideoPipeline.from_pretrained(pipeline_dir, device=state.world.device)
    else:
        model = ema_transformer(state)  # collective: every rank takes part
        if not state.world.is_main:
            return []
        if state.sampler is None:
            state.sampler = MotifVideoPipeline.from_pretrained(cfg.train.sample_weights, device=state.world.device)
            if state.sampler.vae.z_dim != model.cfg.out_channels:
                raise ValueError(
                    f"train.sample_weights has a {state.sampler.vae.z_dim}-channel VAE, but the model predicts "
                    f"{model.cfg.out_channels} latent channels"
                )
        pipe = state.sampler
        pipe.transformer = model.to(state.world.device).eval()
    prompts = list(cfg.train.sample_prompts)
    out = pipe(prompts, steps=cfg.train.sample_steps, seed=cfg.train.seed, progress=False, **_size(state))
    folder = run_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    return [write_mp4(v, folder / f"step-{step:07d}-{i}.mp4", fps=8) for i, v in enumerate(out.uint8())]


def _size(state: TrainState) -> dict[str, int]:
    """The video size (pixels, frames) of the training data."""
    cfg = state.cfg
    if cfg.data.source == "shapes":
        return {"height": cfg.world.height, "width": cfg.world.width, "frames": cfg.world.frames}
    factors = json.loads((Path(cfg.train.sample_weights) / "vae" / "config.json").read_text())
    spatial, temporal = factors.get("scale_factor_spatial", 8), factors.get("scale_factor_temporal", 4)
    return {
        "height": cfg.data.latent_height * spatial,
        "width": cfg.data.latent_width * spatial,
        "frames": (cfg.data.latent_frames - 1) * temporal + 1,
    }


def export_ema(state: TrainState, path: Path) -> None:
    """Write the EMA weights as an official diffusers transformer directory (rank 0)."""
    model = ema_transformer(state)
    if state.world.is_main:
        save_transformer(model, path)


def export_pipeline(state: TrainState, path: Path, step: int) -> Path:
    """A run on the shapes data -> a complete pipeline directory: transformer/ (EMA), text_encoder/
    (the word-level one trained here, EMA; or the frozen encoder's text_encoder/ and tokenizer/),
    the data's vae/, scheduler/ (shift at the training size), guider/ and manifest.json (the run's
    recipe and figures). Written beside and renamed."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.guiders import ClassifierFreeGuidance

    model = ema_transformer(state)
    encoder = state.model.text_encoder
    text_weights = ema_weights(state, "text_encoder") if encoder is not None else None
    if not state.world.is_main:
        return path
    cfg = state.cfg
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_transformer(model, partial / "transformer")
    if encoder is not None:
        text_encoder = WordTextEncoder(encoder.vocab, encoder.dim, encoder.layers, encoder.heads, encoder.max_len)
        text_encoder.load_state_dict(text_weights, strict=True)
        text_encoder.save_pretrained(partial / "text_encoder")
    else:
        for part in ("text_encoder", "tokenizer"):
            shutil.copytree(Path(cfg.text.path) / part, partial / part)
    shutil.copytree(Path(cfg.data.path) / "vae", partial / "vae")
    size = _size(state)
    _, frames, height, width = state.data.samples[0]["latents"].shape
    tokens = model.cfg.num_video_tokens(frames, height, width)
    shift = resolution_shift(tokens, cfg.flow.shift, cfg.flow.base_tokens)
    FlowMatchEulerDiscreteScheduler(shift=shift).save_config(partial / "scheduler")
    ClassifierFreeGuidance(guidance_scale=cfg.train.guidance_scale).save_config(partial / "guider")
    recent = state.history[-100:]
    manifest = {
        "name": Path(cfg.train.out_dir).name,
        "command": state.command or "motif_video.training.train.train(cfg) (see config)",
        "steps": step,
        "data_seed": cfg.world.seed,
        "clips": cfg.world.clips,
        "defaults": {**size, "fps": int(cfg.world.fps), "steps": cfg.train.sample_steps, "negative_prompt": ""},
        "metrics": {"flow_loss_last_100": sum(m["loss"] for m in recent) / max(1, len(recent))},
        "config": cfg.to_dict(),
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)
    return path


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
