"""Few-step distillation: a student that samples in K steps with one transformer pass per step.

    teacher pipeline ─ guided Euler, teacher_steps ─▶ states at the student's K + 1 times ─▶ shards
    shards ─ trainer (objective "trajectory") ─▶ student transformer ─▶ pipeline: K steps, no guidance

The teacher's guided trajectory, from each stored noise, passes through the student's own schedule
times sigma_0 = 1 > sigma_1 > ... > sigma_K = 0 (teacher_steps is a multiple of K, so they are points
of the teacher's schedule). The student learns, at state x_k and time sigma_k, the slope that takes
one Euler step to the teacher's next state: v = (x_k - x_{k+1}) / (sigma_k - sigma_{k+1}). Its sampler
is then the usual Euler loop with K steps, and guidance is folded in (the teacher's states are
guided; the student runs the conditional pass only). The alternative objective, "reflow" (rectified
flow's straight path from each noise to the teacher's sample, Liu et al. 2022), is one line away in
the trainer; docs/distillation.md has both measured (4 steps: within 0.025 of the teacher vs 0.062).

The trajectories are generated once into data.path (`shard-NNNNN.safetensors`, each written beside
and renamed; a re-run generates only the missing ones, and a changed teacher or schedule is refused),
dealt over ranks by shard. The student then trains with the generic trainer (checkpoints, exact
resume, EMA, FSDP2, TensorBoard): this module is its data source and its recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from motif_video.data.synthetic import batch_indices
from motif_video.distributed import World
from motif_video.media import atomic_write, write_json
from motif_video.sampling.guidance import GuidanceConfig
from motif_video.sampling.pipeline import MotifVideoPipeline
from motif_video.training.config import DistillSection, TrainConfig
from motif_video.training.recipes import Recipe

RECORD = "teacher.json"


def teacher_path(cfg) -> Path:
    from motif_video.embedded import resolve_weights

    try:
        return resolve_weights(cfg.distill.teacher)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"distill.teacher: {e}".replace("--weights ", "")) from None


def load_distill_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """A distillation's TrainConfig: the TOML and overrides, with what the teacher decides filled in
    where the file leaves it out: the student's architecture (the teacher's transformer config, with the
    file's model.overrides on top), its starting weights (the teacher's transformer), precomputed text
    (the teacher's encoder, stored with the trajectories), data.source "teacher", data.path
    (train.out_dir/teacher), the samples' steps (distill.steps), and no caption dropout or
    image-to-video share (the trajectories are the guided text-to-video ones)."""
    from motif_video.model.checkpoint_io import read_config
    from motif_video.sampling.pipeline import check_weights_dir
    from motif_video.training.config import from_dict, read_raw

    raw = read_raw(path, overrides)
    name = raw.get("distill", {}).get("teacher")
    if not name:
        raise ValueError(f"{path} names no teacher: set distill.teacher (a pipeline folder or shapes-tiny)")
    teacher = teacher_path(SimpleNamespace(distill=SimpleNamespace(teacher=name)))
    check_weights_dir(teacher)
    model = raw.setdefault("model", {})
    if "preset" not in model:
        given = model.get("overrides", {})
        model.update(preset="debug", overrides={**dataclasses.asdict(read_config(teacher / "transformer")[0]), **given})
    model.setdefault("init_from", str(teacher / "transformer"))
    raw.setdefault("text", {}).setdefault("encoder", "precomputed")
    train = raw.setdefault("train", {})
    train.setdefault("out_dir", "runs/distill")
    train.setdefault("sample_steps", raw["distill"].get("steps", DistillSection.steps))
    flow = raw.setdefault("flow", {})
    flow.setdefault("caption_dropout", 0.0)
    flow.setdefault("i2v_fraction", 0.0)
    data = raw.setdefault("data", {})
    data.setdefault("source", "teacher")
    data.setdefault("path", str(Path(train["out_dir"]) / "teacher"))
    return from_dict(TrainConfig, raw)


# -- the teacher's trajectories ---------------------------------------------------------------------------


def prompts(cfg: TrainConfig, count: int, teacher_manifest: dict) -> list[str]:
    """The prompt of every trajectory: the shapes world's training captions (scenes of the run's seed,
    with the teacher's objects per clip), or a text file's lines in turn."""
    d = cfg.distill
    if d.prompts == "world":
        from motif_video.data import world

        objects = teacher_manifest.get("config", {}).get("world", {}).get("max_objects", 1)
        return [world.scene(d.seed, i, held_out=False, max_objects=objects).caption for i in range(count)]
    file = Path(d.prompts)
    if not file.is_file():
        raise FileNotFoundError(
            f"distill.prompts: {file} does not exist (give 'world' or a text file, one prompt a line)"
        )
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"distill.prompts: {file} has no prompts (one a line)")
    return [lines[i % len(lines)] for i in range(count)]


@dataclass
class TeacherSetup:
    """What the trajectories depend on, read from the teacher's files without loading its weights."""

    root: Path
    manifest: dict
    guidance: GuidanceConfig
    negative_prompt: str
    size: dict[str, int]
    latent_shape: tuple[int, int, int, int]
    sigmas: Tensor  # the student's K + 1 times, points of the teacher's schedule
    picks: list[int]  # their indices in the teacher's trace

    @classmethod
    def read(cls, cfg: TrainConfig) -> TeacherSetup:
        from motif_video.embedded import manifest as read_manifest
        from motif_video.model.checkpoint_io import read_config
        from motif_video.sampling.pipeline import DEFAULT_NEGATIVE_PROMPT, request_factors, validate_request
        from motif_video.sampling.schedule import load_scheduler, set_timesteps

        d, root = cfg.distill, teacher_path(cfg)
        info = read_manifest(root)
        defaults = info.get("defaults", {})
        size = {k: getattr(d, k) or defaults.get(k, 0) for k in ("height", "width", "frames")}
        if not all(size.values()):
            raise ValueError(
                f"the teacher {root} has no default video size (manifest.json): set distill.height, distill.width "
                "and distill.frames"
            )
        if info.get("distilled"):
            raise ValueError(
                f"distill.teacher {d.teacher} is itself a {info['distilled']['steps']}-step student; distil its "
                f"teacher ({info['distilled']['teacher']}) instead"
            )
        multiple, _ = request_factors(root)
        validate_request(["x"], size["height"], size["width"], size["frames"], d.teacher_steps, multiple)
        guider = root / "guider" / "guider_config.json"
        guidance = (
            GuidanceConfig.from_diffusers(json.loads(guider.read_text())) if guider.is_file() else GuidanceConfig()
        )
        if d.guidance_scale:
            guidance = guidance.with_kind(guidance.kind, d.guidance_scale)
        negative = d.negative_prompt  # as `generate` resolves it: the file's, the manifest's, the released default
        if negative is None:
            negative = defaults.get("negative_prompt", DEFAULT_NEGATIVE_PROMPT)
        vae = json.loads((root / "vae" / "config.json").read_text())
        spatial, temporal = vae.get("scale_factor_spatial", 8), vae.get("scale_factor_temporal", 4)
        shape = (
            vae["z_dim"],
            (size["frames"] - 1) // temporal + 1,
            size["height"] // spatial,
            size["width"] // spatial,
        )
        scheduler = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
        if scheduler.get("_class_name", "FlowMatchEulerDiscreteScheduler") != "FlowMatchEulerDiscreteScheduler":
            raise ValueError(
                f"the teacher's scheduler is {scheduler['_class_name']}; distillation learns Euler steps: give a "
                "teacher with FlowMatchEulerDiscreteScheduler"
            )
        tokens = read_config(root / "transformer")[0].num_video_tokens(*shape[1:])
        teacher_schedule, student_schedule = load_scheduler(scheduler), load_scheduler(scheduler)
        set_timesteps(teacher_schedule, d.teacher_steps, tokens, "cpu")
        set_timesteps(student_schedule, d.steps, tokens, "cpu")
        picks = list(range(0, d.teacher_steps + 1, d.teacher_steps // d.steps))
        sigmas = teacher_schedule.sigmas[picks].float()
        own = student_schedule.sigmas.float()
        if not torch.allclose(sigmas, own, atol=1e-5):
            listed = [[round(float(s), 4) for s in x] for x in (sigmas, own)]
            raise ValueError(
                f"the teacher's scheduler does not put the student's {d.steps} times on its {d.teacher_steps}-step "
                f"schedule ({listed[0]} vs {listed[1]}); use a static or dynamic shift without a terminal shift or "
                "Karras / exponential / beta sigmas"
            )
        return cls(root, info, guidance, negative, size, shape, sigmas, picks)

    def record(self, cfg: TrainConfig, captions: list[str]) -> dict:
        from motif_video.sampling.pipeline import weights_fingerprint

        d = cfg.distill
        return json.loads(
            json.dumps(
                {
                    "teacher": d.teacher,  # as given: a shipped model's name, or a folder
                    "teacher_fingerprint": weights_fingerprint(self.root),
                    "steps": d.steps,
                    "teacher_steps": d.teacher_steps,
                    "guidance": dataclasses.asdict(self.guidance),
                    "negative_prompt": self.negative_prompt,
                    "sigmas": [round(float(s), 6) for s in self.sigmas],
                    **self.size,
                    "latent_shape": list(self.latent_shape),
                    "dtype": "float32",
                    "samples": d.samples,
                    "shard_size": d.shard_size,
                    "prompts": d.prompts,
                    "prompts_sha256": hashlib.sha256("\n".join(captions).encode()).hexdigest()[:16],
                    "seed": d.seed,
                }
            )
        )  # as the file holds it (tuples as lists)


def write_trajectories(cfg: TrainConfig, world: World, progress: bool = True) -> Path:
    """Generate the missing trajectory shards into data.path (dealt over the ranks: missing shard i goes to
    rank i % ranks) and wait until every rank's are there; returns data.path. Every rank reads every shard:
    with several nodes, data.path is on shared storage."""
    from motif_video import distributed

    d = cfg.distill
    root = Path(cfg.data.path)
    teacher = TeacherSetup.read(cfg)
    captions = prompts(cfg, d.samples, teacher.manifest)
    record = teacher.record(cfg, captions)
    check_record(root, record)
    distributed.barrier()  # every rank lists the missing shards before any writes one
    shards = math.ceil(d.samples / d.shard_size)
    missing = [j for j in range(shards) if not (root / shard_name(j)).is_file()]
    mine = missing[world.rank :: world.size]
    root.mkdir(parents=True, exist_ok=True)
    if world.is_main and not (root / RECORD).is_file():
        write_json(record, root / RECORD)
    if mine:
        pipe = MotifVideoPipeline.from_pretrained(teacher.root, device=world.device)
        if world.is_main and not (root / "null.safetensors").is_file():
            null_text, null_mask = pipe.text_encoder.encode([""])  # the empty prompt, for caption dropout
            tensors = {"text": null_text[0].float().contiguous(), "text_mask": null_mask[0].contiguous()}
            atomic_write(root / "null.safetensors", lambda tmp: save_file(tensors, str(tmp)))
        g = teacher.guidance
        distributed.print0(
            f"teacher {teacher.root.name}: {len(missing)} of {shards} shards to make ({d.samples} trajectories in "
            f"all) of {d.teacher_steps} guided steps ({g.kind}, scale {g.scale}) at {teacher.size['width']}x"
            f"{teacher.size['height']}x{teacher.size['frames']}, kept at the student's {d.steps + 1} times, in {root}"
        )
        bar = tqdm(
            total=sum(len(shard_rows(j, d)) for j in mine),
            desc="teacher trajectories",
            unit="video",
            disable=not (progress and world.is_main),
        )
        for j in mine:
            write_shard(pipe, teacher, captions, j, root, d, bar)
        bar.close()
    while any(not (root / shard_name(j)).is_file() for j in missing):  # the other ranks' shards
        time.sleep(2.0)
    return root


def write_shard(
    pipe: MotifVideoPipeline,
    teacher: TeacherSetup,
    captions: list[str],
    j: int,
    root: Path,
    d: DistillSection,
    bar: tqdm,
) -> None:
    """Shard j: the teacher's states at the student's times, its text states, the captions."""
    states, texts, masks, names = [], [], [], []
    rows = shard_rows(j, d)
    for lo in range(0, len(rows), d.batch):
        part = rows[lo : lo + d.batch]
        batch = [captions[i] for i in part]
        trace: list[Tensor] = []
        pipe(
            batch,
            negative_prompt=teacher.negative_prompt,
            generators=[noise_generator(d.seed, i) for i in part],
            steps=d.teacher_steps,
            guidance=teacher.guidance,
            trace=trace,
            decode=False,
            progress=False,
            **teacher.size,
        )
        states.append(torch.stack([trace[k].float().cpu() for k in teacher.picks], dim=1))  # [b, K + 1, Z, F, H, W]
        text, mask = pipe.text_encoder.encode(batch)
        texts.append(text.float().cpu())
        masks.append(mask.cpu())
        names += batch
        bar.update(len(part))
    length = max(t.shape[1] for t in texts)
    tensors = {
        "states": torch.cat(states).contiguous(),
        "text": torch.cat([torch.nn.functional.pad(t, (0, 0, 0, length - t.shape[1])) for t in texts]).contiguous(),
        "text_mask": torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for m in masks]).contiguous(),
    }
    metadata = {"captions": json.dumps(names), "first": str(rows[0])}
    atomic_write(root / shard_name(j), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def shard_name(j: int) -> str:
    return f"shard-{j:05d}.safetensors"


def shard_rows(j: int, d: DistillSection) -> list[int]:
    return list(range(j * d.shard_size, min(d.samples, (j + 1) * d.shard_size)))


def noise_generator(seed: int, index: int) -> torch.Generator:
    """The noise of trajectory `index`: the same on every rank and in every re-run."""
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


def check_record(root: Path, record: dict) -> None:
    """Trajectories already in `root` must come from the same teacher (by its files, however it is named),
    schedule, guidance, size, prompts and seed."""
    file = root / RECORD
    if not file.is_file():
        return
    before = json.loads(file.read_text())
    changed = sorted(k for k in record if k != "teacher" and before.get(k) != record[k])
    if changed:
        listed = ", ".join(f"{k} {before.get(k)!r} -> {record[k]!r}" for k in changed)
        raise ValueError(
            f"{root} holds trajectories made with other settings ({listed}); set data.path to a new folder, or "
            "delete it to make them again"
        )


class Trajectories:
    """The stored trajectories as the trainer's data: a batch is a pure function of (step, rank), like
    the synthetic latents, so the data position of a run is its step. Tensors are read per batch from
    the memory-mapped shards."""

    def __init__(self, root: str | Path, seed: int = 0) -> None:
        root = Path(root)
        if not (root / RECORD).is_file():
            raise FileNotFoundError(f"{root} holds no teacher trajectories ({RECORD} missing)")
        self.record = json.loads((root / RECORD).read_text())
        self.files = [
            root / shard_name(j) for j in range(math.ceil(self.record["samples"] / self.record["shard_size"]))
        ]
        missing = [f.name for f in self.files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{root} lacks {len(missing)} trajectory shards ({missing[0]}, ...): run again")
        self.seed = seed
        self.sigmas = torch.tensor(self.record["sigmas"])
        self.latent_shape = tuple(self.record["latent_shape"])
        self.handles = [safe_open(str(f), "pt") for f in self.files]
        self.captions: list[str] = []
        self.rows: list[tuple[int, int]] = []
        lengths = []
        for n, h in enumerate(self.handles):
            names = json.loads(h.metadata()["captions"])
            self.captions += names
            self.rows += [(n, r) for r in range(len(names))]
            lengths.append(h.get_slice("text").get_shape()[1])
        self.text_len = max(lengths)
        null = safe_open(str(root / "null.safetensors"), "pt")
        self.null_text = self._pad(null.get_tensor("text")[None])[0]
        self.null_mask = self._pad(null.get_tensor("text_mask")[None])[0]
        self.has_text = True

    def __len__(self) -> int:
        return len(self.rows)

    def _pad(self, x: Tensor) -> Tensor:
        extra = self.text_len - x.shape[1]
        return torch.nn.functional.pad(x, (0, 0, 0, extra) if x.dim() == 3 else (0, extra))

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> dict:
        picked = batch_indices(len(self.rows), self.seed, step, batch_size, rank, world)
        states, texts, masks = [], [], []
        for i in picked:
            shard, row = self.rows[i]
            h = self.handles[shard]
            states.append(h.get_slice("states")[row : row + 1])
            texts.append(self._pad(h.get_slice("text")[row : row + 1]))
            masks.append(self._pad(h.get_slice("text_mask")[row : row + 1]))
        states = torch.cat(states)
        return {
            "latents": states[:, -1],  # the teacher's sample
            "trajectory": states,  # [b, K + 1, Z, F, H, W]
            "text": torch.cat(texts),
            "text_mask": torch.cat(masks),
            "captions": [self.captions[i] for i in picked],
        }


def trajectory_inputs(
    trajectory: Tensor, sigmas: Tensor, objective: str, t: Tensor, generators: list[torch.Generator]
) -> tuple[Tensor, Tensor, Tensor]:
    """(x_t, t, target velocity) of a batch of trajectories [B, K + 1, ...]. "trajectory": a student
    time k per sample, x_t the teacher's state there, the target the slope to its next state;
    "reflow": the drawn times `t` on the straight path from the stored noise to the teacher's sample."""
    from motif_video.training.flow import interpolate, velocity_target

    if objective == "reflow":
        x0, noise = trajectory[:, -1], trajectory[:, 0]
        return interpolate(x0, noise, t), t, velocity_target(x0, noise)
    steps = trajectory.shape[1] - 1
    k = torch.cat([torch.randint(0, steps, (1,), generator=g) for g in generators])
    rows = torch.arange(trajectory.shape[0])
    now, after = trajectory[rows, k], trajectory[rows, k + 1]
    dt = (sigmas[k] - sigmas[k + 1]).view(-1, *([1] * (now.dim() - 1)))
    return now, sigmas[k], (now - after) / dt


# -- the recipe --------------------------------------------------------------------------------------


class Distillation(Recipe):
    name = "distill"

    def build_data(self, world: World, progress: bool) -> Path:
        return write_trajectories(self.cfg, world, progress)

    def size(self, state) -> dict[str, int]:
        record = state.data.record
        return {k: record[k] for k in ("height", "width", "frames")}

    def sample_pipeline(self, state, run_dir: Path, step: int):
        """The teacher's pipeline with the student's EMA weights and no guidance (K steps: train.sample_steps)."""
        from motif_video.model.transformer import MotifVideoTransformer
        from motif_video.sampling.guidance import GuidanceConfig
        from motif_video.sampling.pipeline import MotifVideoPipeline
        from motif_video.training.ema import ema_weights

        model = MotifVideoTransformer(state.model.transformer.cfg)
        model.load_state_dict(ema_weights(state.model, state.ema), strict=True)
        if not state.world.is_main:
            return None
        if state.sampler is None:
            state.sampler = MotifVideoPipeline.from_pretrained(teacher_path(self.cfg), device=state.world.device)
            state.sampler.guidance = GuidanceConfig(kind="none")
        state.sampler.transformer = model.to(state.world.device).eval()
        return state.sampler

    def finish(self, state, run_dir: Path) -> None:
        if state.world.is_main:
            path = export_student(
                run_dir, run_dir / "pipeline", teacher_path(self.cfg), state.data.record, state.command
            )
            print(f"exported the {self.cfg.distill.steps}-step student {path} (generate --weights {path})", flush=True)


def student_of(run_dir: Path) -> tuple[Path, dict] | None:
    """(teacher, trajectory record) of a distillation run folder; None for other runs."""
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    teacher = config.get("distill", {}).get("teacher")
    if not teacher:
        return None
    from motif_video.embedded import resolve_weights

    run_record = run_dir / "run.json"
    started_in = (json.loads(run_record.read_text()).get("cwd") if run_record.is_file() else None) or "."
    record = Path(started_in) / config["data"]["path"] / RECORD
    if not record.is_file():
        raise FileNotFoundError(f"the distillation in {run_dir} has no trajectories record ({record})")
    given = Path(started_in) / teacher  # a folder named relative to where the run started, or a shipped name
    return resolve_weights(given if given.exists() else teacher), json.loads(record.read_text())


def export_student(run_dir: Path, out: Path, teacher: Path, record: dict, command: str = "") -> Path:
    """The student as a pipeline directory: the teacher's with the run's EMA transformer (LoRA merged,
    the adapter beside it), a guider that asks for one pass (CFG at scale 1), and a manifest whose
    defaults are the student's steps and size; its `distilled` entry records teacher, schedule and
    guidance. One folder, renamed into place when complete."""
    from diffusers.guiders import ClassifierFreeGuidance

    from motif_video.embedded import manifest as read_manifest
    from motif_video.training.export import export

    run_record = Path(run_dir) / "run.json"
    if not command and run_record.is_file():
        command = json.loads(run_record.read_text()).get("command", "")
    teacher_defaults = read_manifest(teacher).get("defaults", {})

    def finish(partial: Path) -> None:
        ClassifierFreeGuidance(guidance_scale=1.0).save_config(partial / "guider")  # folded in: one pass
        manifest = json.loads((partial / "manifest.json").read_text())
        manifest.update(name=Path(run_dir).name, command=command)
        manifest.setdefault("metrics", {})
        manifest["defaults"] = {
            **teacher_defaults,
            **{k: record[k] for k in ("height", "width", "frames")},
            "steps": record["steps"],
            "negative_prompt": record["negative_prompt"],
        }
        manifest["distilled"] = {
            "teacher": record["teacher"],
            "teacher_fingerprint": record["teacher_fingerprint"],
            "steps": record["steps"],
            "teacher_steps": record["teacher_steps"],
            "guidance": record["guidance"],
            "negative_prompt": record["negative_prompt"],
            "objective": manifest.get("config", {}).get("distill", {}).get("objective"),
            "trajectories": record["samples"],
        }
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    return export(run_dir, out, base=teacher, finish=finish)
