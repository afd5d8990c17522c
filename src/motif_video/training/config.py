"""Training run configuration: TOML files in configs/ plus dotted `section.key=value` overrides.

Every section is a frozen dataclass; unknown sections or keys and values of the wrong type are
rejected with the offending name. `TrainConfig.load("configs/debug.toml", ["optim.lr=1e-4"])`.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from motif_video.config import TransformerConfig, get_preset
from motif_video.data import world as shapes_world
from motif_video.training.autoencoder import AutoencoderConfig


@dataclass(frozen=True)
class ModelSection:
    preset: str = "debug"
    overrides: dict[str, Any] = field(default_factory=dict)  # TransformerConfig fields
    init_from: str | None = None  # a released checkpoint (directory or file) to fine-tune
    lora_rank: int = 0  # > 0: train LoRA adapters (peft) on every projection instead of all weights

    def transformer(self) -> TransformerConfig:
        known = {f.name for f in dataclasses.fields(TransformerConfig)}
        unknown = sorted(set(self.overrides) - known)
        if unknown:
            raise ValueError(f"unknown model.overrides keys {unknown}; known: {sorted(known)}")
        return get_preset(self.preset).replace(**self.overrides) if self.overrides else get_preset(self.preset)


@dataclass(frozen=True)
class TextSection:
    # "precomputed": text states come from the shards (T5Gemma2, `motif-video precompute`);
    # "word": a word-level encoder (model/word_encoder.py) is trained with the transformer on the captions;
    # "sentence" / "t5gemma2": a frozen encoder read from `path` (a folder with text_encoder/ and
    # tokenizer/) encodes the captions on the fly: the curriculum's early and late text encoders.
    encoder: Literal["precomputed", "word", "sentence", "t5gemma2"] = "precomputed"
    path: str = ""
    init_from: str = ""  # "word": a pipeline directory whose trained word-level encoder this one starts from
    frozen: bool = False  # "word" with init_from: keep that encoder as it is and train the transformer alone
    dim: int = 64  # must equal the transformer's text_dim
    layers: int = 2
    heads: int = 4
    max_len: int = 32


@dataclass(frozen=True)
class StageSection:
    """One stage of a training curriculum (configs/motif-video-2b/, training/curriculum.py)."""

    name: str = ""  # empty: not part of a curriculum
    task: Literal["t2i", "t2iv"] = "t2iv"  # "t2i": images only; "t2iv": images and videos
    init: str = "previous"  # start from: "previous" stage, "none" (fresh weights), or an earlier stage's name
    # The data's buckets the stage trains on (the trainer's plan admits only these): images of about
    # image_size pixels, videos of about video_size with frame counts in frame_buckets (1 = images).
    image_size: tuple[int, int] = (144, 256)  # height, width of the image buckets
    video_size: tuple[int, int] = (144, 256)  # height, width of the video buckets
    frame_buckets: tuple[int, ...] = (1,)  # 1 = images; 33 / 65 / 121 video lengths
    interleave: str = "I"  # the repeating step pattern: I = an image batch, V = a video batch
    image_batch_size: int = 0  # global batch of image steps (0: data.batch_size)
    sft: bool = False  # supervised fine-tuning on the curated subset (a transition resets the optimizer)
    caption_variants: tuple[float, float, float] = (1.0, 0.0, 0.0)  # P(long), P(short), P(truncated) caption
    text_tokens: int = 256  # text states padded to this length (longer ones cut); the planner counts it

    def validate(self) -> None:
        if not self.name:  # not a curriculum stage: the section is unused
            return
        if not self.interleave or set(self.interleave) - {"I", "V"}:
            raise ValueError(f"stage.interleave must be a pattern of I and V, got {self.interleave!r}")
        if self.task == "t2i" and (set(self.interleave) != {"I"} or self.frame_buckets != (1,)):
            raise ValueError("a t2i stage trains on images only: interleave 'I', frame_buckets [1]")
        if self.task == "t2iv" and "V" not in self.interleave:
            raise ValueError(f"a t2iv stage needs video steps (V) in stage.interleave, got {self.interleave!r}")
        if any(f < 1 or (f - 1) % 4 for f in self.frame_buckets):
            raise ValueError(f"stage.frame_buckets must be 4k+1 frame counts, got {self.frame_buckets}")
        if any(p < 0 for p in self.caption_variants) or abs(sum(self.caption_variants) - 1) > 1e-6:
            raise ValueError(
                f"stage.caption_variants must be 3 probabilities summing to 1, got {self.caption_variants}"
            )
        for size in (self.image_size, self.video_size):
            if size[0] % 16 or size[1] % 16 or min(size) <= 0:
                raise ValueError(f"stage sizes must be positive multiples of 16, got {size}")


@dataclass(frozen=True)
class WorldSection:
    """The shapes-world clips of data.source "shapes" (data/world.py)."""

    clips: int = 2000
    seed: int = 0
    frames: int = 17
    height: int = 64
    width: int = 64
    fps: float = 8.0
    max_objects: int = shapes_world.MAX_OBJECTS  # objects per clip: 1..max_objects
    # the share of clips whose objects start anywhere, not where the caption's layout puts them (for
    # extension training: only the conditioned prefix tells where the object is)
    free_layout: float = 0.0
    # the scale of an object's start jitter (world.scene): 1 the world's own, 0 exactly where the
    # caption's layout puts it, so the caption alone sets the clip
    jitter: float = 1.0


@dataclass(frozen=True)
class DataSection:
    # "synthetic": procedural latents; "shards": precomputed shards at `path`; "shapes": the shapes-world
    # chain (prepare -> autoencoder -> latents) built in `path`, each stage skipped once done.
    source: Literal["synthetic", "shards", "shapes", "teacher"] = "synthetic"
    path: str = ""  # folder written by `motif-video precompute` (source "shards"), or the shapes work folder
    batch_size: int = 4  # global batch, split over data-parallel ranks
    # the streamed reader of shards (data/stream.py): DataLoader worker processes (0: in the training
    # process), batches each worker reads ahead, and shards per rank read together (one plan window)
    workers: int = 1
    prefetch: int = 2
    window: int = 4
    latent_frames: int = 3
    latent_height: int = 8
    latent_width: int = 8
    image_fraction: float = 0.25  # share of 1-frame (image) batches, interleaved
    text_len: int = 16
    num_samples: int = 512
    seed: int = 0


@dataclass(frozen=True)
class FlowSection:
    timesteps: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    noise_fraction: float = 0.0  # share of samples trained at t = 1 (pure noise), besides the drawn times
    noise_phase: tuple[float, float] = (0.0, 0.0)  # [start, end) as shares of train.steps: a phase that puts
    # noise_phase_fraction of each batch at t = 1 instead of noise_fraction
    noise_phase_fraction: float = 1.0
    shift: float = 1.0  # at base_tokens; grows with sqrt(tokens / base_tokens)
    base_tokens: int = 256
    caption_dropout: float = 0.1  # for classifier-free guidance
    i2v_fraction: float = 0.25  # samples trained with the first-frame condition (image-to-video)
    # batches conditioned on a random prefix of 1..F-1 latent frames (mask = 1 on them), the loss on
    # the frames after it: what `motif-video extend` continues a video with (drawn after i2v_fraction)
    prefix_fraction: float = 0.0
    # per latent channel weights of the velocity loss (empty: all 1). The shapes world's patch latents
    # keep an object's outline in their small detail channels; weighting them trains the outline harder
    # without making the channels louder (which turns sampling error into speckle: shapes-world.md)
    channel_weights: tuple[float, ...] = ()
    # share of the samples drawn at a time in detail_times whose detail channels (detail_from on) are left
    # out of x_t: only noise there, the target still the clip (flow.without_detail). Sampling reaches the
    # middle of the path with a blob whose outline the noise has not yet decided; trained only on noised
    # clips, whose outline is still readable there, the model never needs the caption's shape word to draw it.
    # 1,000 steps of it (0.5 at [0.5, 0.9]) from v22 left the shape where a control put it: shapes-world.md
    detail_dropout: float = 0.0
    detail_times: tuple[float, float] = (0.5, 0.9)
    detail_from: int = 4
    # each word of a kept caption is left out with this probability (drawn per sample, on a stream of its
    # own): "a circle moves to the left" as well as "a red circle moves to the left", so each word is
    # trained for what it alone says of the clip; needs captions encoded in the step (not text.encoder
    # "precomputed")
    word_dropout: float = 0.0


@dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 20
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of lr
    grad_clip: float = 1.0


@dataclass(frozen=True)
class TreadSection:
    enabled: bool = False
    keep_ratio: float = 0.5  # share of video tokens that go through the routed blocks
    start: int = 1  # first routed block
    end: int = -2  # last routed block (negative: counted from the end of the encoder)

    def last_block(self, encoder_blocks: int) -> int:
        """`end` as an index into an encoder of `encoder_blocks` dual + single blocks."""
        return self.end if self.end >= 0 else encoder_blocks + self.end


@dataclass(frozen=True)
class RepaSection:
    enabled: bool = False
    teacher: Literal["vjepa2", "dinov2"] = "vjepa2"
    teacher_path: str = ""  # local directory of the transformers model
    block: int = 2  # student block whose video tokens are aligned
    weight: float = 0.5
    until_step: int = 0  # REPA switches off (teacher freed) at this step; 0 = never
    projector_dim: int = 256


@dataclass(frozen=True)
class TrainSection:
    steps: int = 200
    seed: int = 0
    out_dir: str = "runs/debug"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast, and FSDP2 computes in bf16
    grad_accum: int = 1  # micro-batches per step: the same update in less activation memory
    hsdp_replicas: int = 0  # FSDP2 replica groups (HSDP: replicate x shard); 0 = one per node
    activation_checkpointing: bool = False
    compile: bool = False
    ema_decay: float = 0.999
    max_skipped_steps: int = 10  # NaN/inf steps tolerated before the run stops
    log_every: int = 10
    save_every: int = 100
    keep_last: int = 2
    sample_every: int = 0  # > 0: write sample videos of the EMA model every N steps
    sample_weights: str = ""  # pipeline directory whose VAE, text encoder and scheduler the samples use
    sample_prompts: tuple[str, ...] = ("a red circle moves left", "a blue square moves up")
    sample_steps: int = 20
    guidance_scale: float = 4.0  # classifier-free guidance scale written to an exported pipeline's guider/


@dataclass(frozen=True)
class DistillSection:
    """Few-step distillation (`motif-video distill`, training/distill.py): the student learns the
    teacher's guided trajectory at the `steps` times of its own schedule, one pass per step."""

    teacher: str = ""  # a pipeline folder or a shipped model's name (shapes-tiny); empty: not a distillation
    steps: int = 4  # the student's sampling steps (teacher_steps must be a multiple)
    teacher_steps: int = 20  # the teacher's Euler steps per trajectory
    guidance_scale: float = 0.0  # the teacher's guidance scale (0: its guider's own); folded into the student
    negative_prompt: str | None = None  # the teacher's unconditional text (unset: as `generate` takes it)
    samples: int = 1024  # teacher trajectories generated (once; stored in data.path, resumable)
    prompts: str = "world"  # "world": the shapes world's training captions; else a text file, one prompt a line
    batch: int = 16  # trajectories generated per teacher call
    shard_size: int = 64  # trajectories per stored shard (the unit of resumption)
    seed: int = 0  # prompts and noise of the trajectories
    height: int = 0  # the videos' size; 0: the teacher's defaults (its manifest.json)
    width: int = 0
    frames: int = 0
    # "trajectory": regress the slope between the teacher's states at consecutive student times (what
    # the student's Euler step must reproduce); "reflow": rectified flow's straight path from each
    # noise to the teacher's sample (Liu et al. 2022), at any time
    objective: Literal["trajectory", "reflow"] = "trajectory"


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    text: TextSection = field(default_factory=TextSection)
    data: DataSection = field(default_factory=DataSection)
    world: WorldSection = field(default_factory=WorldSection)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    flow: FlowSection = field(default_factory=FlowSection)
    optim: OptimSection = field(default_factory=OptimSection)
    tread: TreadSection = field(default_factory=TreadSection)
    repa: RepaSection = field(default_factory=RepaSection)
    train: TrainSection = field(default_factory=TrainSection)
    stage: StageSection = field(default_factory=StageSection)
    distill: DistillSection = field(default_factory=DistillSection)

    def __post_init__(self) -> None:
        transformer = self.model.transformer()  # validates preset and overrides
        if self.data.source in ("shards", "shapes", "teacher") and not self.data.path:
            raise ValueError(
                f"data.source {self.data.source!r} needs data.path (the precomputed shards, or the shapes work folder)"
            )
        if self.world.height != self.world.width or self.world.height % 16:
            raise ValueError(f"world clips are square, a multiple of 16: got {self.world.height} x {self.world.width}")
        if self.world.max_objects < 1:
            raise ValueError(f"world.max_objects must be at least 1, got {self.world.max_objects}")
        if not 0.0 <= self.world.free_layout <= 1.0:
            raise ValueError(f"world.free_layout must be a share in [0, 1], got {self.world.free_layout}")
        if not 0.0 <= self.world.jitter <= 1.0:
            raise ValueError(f"world.jitter must be a scale in [0, 1], got {self.world.jitter}")
        if self.text.encoder in ("sentence", "t5gemma2") and not self.text.path:
            raise ValueError(f"text.encoder {self.text.encoder!r} needs text.path (its text_encoder/ and tokenizer/)")
        if self.data.source == "shapes" and self.text.encoder == "precomputed":
            raise ValueError(
                "data.source 'shapes' stores no text states: set text.encoder to word, sentence or t5gemma2"
            )
        if self.data.source == "synthetic" and self.text.encoder == "word":
            raise ValueError("text.encoder 'word' needs captions: use data.source 'shards' or 'shapes'")
        if self.text.frozen and not (self.text.encoder == "word" and self.text.init_from):
            raise ValueError(
                "text.frozen keeps a loaded word-level encoder: it needs text.encoder 'word' and text.init_from, "
                f"got text.encoder {self.text.encoder!r} and text.init_from {self.text.init_from!r}"
            )
        if self.text.encoder == "word" and self.text.dim != transformer.text_dim:
            raise ValueError(
                f"text.dim ({self.text.dim}) must equal the transformer's text_dim ({transformer.text_dim})"
            )
        if not 0.0 <= self.flow.noise_fraction < 1.0:
            raise ValueError(f"flow.noise_fraction must be in [0, 1), got {self.flow.noise_fraction}")
        f = self.flow
        if min(f.i2v_fraction, f.prefix_fraction) < 0 or f.i2v_fraction + f.prefix_fraction > 1:
            raise ValueError(
                f"flow.i2v_fraction ({f.i2v_fraction}) and flow.prefix_fraction ({f.prefix_fraction}) must be "
                ">= 0 and sum to at most 1"
            )
        if not 0.0 <= self.flow.noise_phase_fraction <= 1.0:
            raise ValueError(f"flow.noise_phase_fraction must be in [0, 1], got {self.flow.noise_phase_fraction}")
        if any(not math.isfinite(w) or w < 0 for w in f.channel_weights) or (
            f.channel_weights and max(f.channel_weights) == 0
        ):
            raise ValueError(f"flow.channel_weights must be finite, >= 0 and not all 0, got {list(f.channel_weights)}")
        if f.channel_weights and len(f.channel_weights) != transformer.out_channels:
            raise ValueError(
                f"flow.channel_weights has {len(f.channel_weights)} weights; the model's latents have "
                f"{transformer.out_channels} channels"
            )
        if not 0.0 <= f.detail_dropout <= 1.0:
            raise ValueError(f"flow.detail_dropout must be a share in [0, 1], got {f.detail_dropout}")
        if not 0.0 <= f.word_dropout < 1.0:
            raise ValueError(f"flow.word_dropout must be a probability in [0, 1), got {f.word_dropout}")
        if f.word_dropout and self.text.encoder == "precomputed":
            raise ValueError(
                "flow.word_dropout leaves words out of the captions before they are encoded; with text.encoder "
                "'precomputed' the text states come encoded from the data (use a text encoder run in the step)"
            )
        if len(f.detail_times) != 2 or not 0.0 < f.detail_times[0] <= f.detail_times[1] <= 1.0:
            raise ValueError(
                f"flow.detail_times must be [low, high] with 0 < low <= high <= 1, got {list(f.detail_times)}"
            )
        if f.detail_dropout and not 0 < f.detail_from < transformer.out_channels:
            raise ValueError(
                f"flow.detail_from must name a channel after the first and before {transformer.out_channels} "
                f"(the model's latent channels), got {f.detail_from}"
            )
        phase = self.flow.noise_phase
        if len(phase) != 2 or not 0.0 <= phase[0] <= phase[1] <= 1.0:
            raise ValueError(
                f"flow.noise_phase must be [start, end], shares of train.steps with 0 <= start <= end <= 1, "
                f"got {list(phase)}"
            )
        if self.data.workers < 0:
            raise ValueError(f"data.workers must be >= 0 (0: read in the training process), got {self.data.workers}")
        if self.train.hsdp_replicas < 0:
            raise ValueError(f"train.hsdp_replicas must be >= 0, got {self.train.hsdp_replicas}")
        if self.train.grad_accum < 1 or self.data.batch_size % self.train.grad_accum:
            raise ValueError(
                f"train.grad_accum must be >= 1 and divide data.batch_size {self.data.batch_size}, "
                f"got {self.train.grad_accum}"
            )
        if self.stage.name and self.stage.image_batch_size % self.train.grad_accum:
            raise ValueError(
                f"train.grad_accum {self.train.grad_accum} must divide stage.image_batch_size "
                f"{self.stage.image_batch_size}"
            )
        if not 0 < self.tread.keep_ratio <= 1:
            raise ValueError(f"tread.keep_ratio must be in (0, 1], got {self.tread.keep_ratio}")
        own_pipeline = self.data.source in ("shapes", "teacher")  # samples from its own export, or the teacher's
        if self.train.sample_every > 0 and not self.train.sample_weights and not own_pipeline:
            raise ValueError(
                "train.sample_every needs train.sample_weights (a pipeline directory with vae/ and text_encoder/)"
            )
        self.stage.validate()
        d = self.distill
        if (self.data.source == "teacher") != bool(d.teacher):
            raise ValueError(
                "a distillation sets both distill.teacher and data.source = 'teacher' (and neither otherwise)"
            )
        if d.teacher and (d.steps < 1 or d.teacher_steps < d.steps or d.teacher_steps % d.steps):
            raise ValueError(
                f"distill.teacher_steps ({d.teacher_steps}) must be a multiple of distill.steps ({d.steps}) >= 1: "
                "the student's times are then times of the teacher's own schedule"
            )
        if d.teacher and min(d.samples, d.batch, d.shard_size) < 1:
            raise ValueError(
                f"distill.samples, distill.batch and distill.shard_size must be >= 1, got {d.samples}, {d.batch}, "
                f"{d.shard_size}"
            )
        if d.teacher and (
            f.caption_dropout or f.i2v_fraction or f.prefix_fraction or self.repa.enabled or self.stage.name
        ):
            raise ValueError(
                "a distillation learns the teacher's guided text-to-video trajectories: flow.caption_dropout, "
                "flow.i2v_fraction and flow.prefix_fraction must be 0, and repa and stage unset (got "
                f"{f.caption_dropout}, {f.i2v_fraction}, {f.prefix_fraction}, repa.enabled={self.repa.enabled}, "
                f"stage.name={self.stage.name!r})"
            )
        if d.teacher and self.text.encoder != "precomputed":
            raise ValueError(
                "a distillation reads the teacher's text states from its trajectories: set text.encoder = 'precomputed'"
            )
        for name, value in (
            ("data.batch_size", self.data.batch_size),
            ("train.steps", self.train.steps),
            ("train.save_every", self.train.save_every),
            ("train.keep_last", self.train.keep_last),
            ("data.window", self.data.window),
            ("data.prefetch", self.data.prefetch),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
        return load_config(cls, path, overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(cls, path: str | Path | None = None, overrides: list[str] = ()):
    """A config dataclass from a TOML file plus dotted `section.key=value` overrides (any depth, e.g.
    model.overrides.hidden_size=64); a broken file or override is an error naming it."""
    return from_dict(cls, read_raw(path, overrides))


def read_raw(path: str | Path | None = None, overrides: list[str] = ()) -> dict[str, Any]:
    """The TOML file's tables with the overrides applied, before any checking."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config {path} is not valid TOML: {e}") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"override {item!r} must look like section.key=value")
        *sections, name = key.split(".")
        target = raw
        for section in sections:
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise ValueError(f"override {item!r}: {section} is not a section")
        target[name] = _parse_value(value)
    return raw


def from_dict(cls, raw: dict[str, Any], where: str = ""):
    """Build dataclass `cls` from a dict: unknown keys and wrong types are errors naming them."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"unknown config keys {[where + k for k in unknown]}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ValueError(f"config section {where + name!r} must be a table")
            values[name] = from_dict(hint, value, f"{where}{name}.")
        else:
            values[name] = _check_type(value, hint, where + name)
    return cls(**values)


def _check_type(value: Any, hint: Any, name: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or origin is dict:
        return value
    if origin is Literal:  # an enumerated setting: one of the listed values
        if value not in args:
            raise ValueError(f"config {name} must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config {name} must be a list, got {value!r}")
        return tuple(_check_type(v, args[0], name) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"config {name} must be a list of {len(args)} values, got {value!r}")
        return tuple(_check_type(v, a, name) for v, a in zip(value, args, strict=True))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ValueError(f"config {name} must be {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _parse_value(text: str) -> Any:
    """A command-line value as TOML reads it (numbers, booleans, lists, quoted strings); else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
