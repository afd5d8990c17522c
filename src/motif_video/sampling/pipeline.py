"""Text-to-video and image-to-video generation: wires the encoders, the transformer and the sampler.

    prompt ─ T5Gemma2 ─▶ text [B, S, Dt] (+ SigLIP tokens of the first image, I2V)
    noise [B, Z, F', H', W'] ─┬─ [noise | first-frame latent | mask] ─ transformer ─ guidance ─ scheduler ─▶ ...
                              └─ (T2V: condition and mask are zeros) ─────────────────────────────────────┘
    final latents ─ Wan VAE decode ─▶ frames [B, F, H, W, 3] in [0, 1]

One checkpoint does both tasks: image-to-video puts the VAE latent of the first frame in the 16
condition channels (mask 1 on latent frame 0) and prepends the image tokens to the text.
Randomness: one `torch.Generator` per video (seed, seed+1, ...), so a video does not depend on
the batch it was made in; for I2V the first-frame latent is sampled from the VAE posterior with
the first video's generator after the noise is drawn.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from motif_video.model import attention as attention_module
from motif_video.model.checkpoint_io import load_transformer
from motif_video.model.text_encoder import T5Gemma2TextEncoder, load_text_encoder
from motif_video.model.transformer import MotifVideoTransformer
from motif_video.model.vae import PatchAutoencoder, VideoAutoencoder, load_autoencoder
from motif_video.sampling.cache import StepCache
from motif_video.sampling.guidance import Guidance, GuidanceConfig
from motif_video.sampling.sampler import Conditioning, resolve_passes, sample
from motif_video.sampling.schedule import load_scheduler, set_timesteps

# Reported as the categories of the negative prompt the released model was trained against
# (third-party wrapper citing the model card); the exact wording was not available to us.
DEFAULT_NEGATIVE_PROMPT = (
    "text overlay, watermark, logo, subtitles, jerky motion, identity drift, flickering, ghosting, "
    "deformation, desaturated colors, exposure shift, worst quality, blurry, distorted"
)

# Files a pipeline directory must have (the official diffusers layout).
REQUIRED_FILES = (
    "transformer/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
)


@dataclass
class GenerationOutput:
    frames: Tensor | None  # [B, F, H, W, 3] float in [0, 1] (None: not decoded)
    latents: Tensor  # [B, Z, F', H', W'] final normalised latents

    def uint8(self) -> np.ndarray:
        return (self.frames * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


class MotifVideoPipeline:
    def __init__(
        self,
        transformer: MotifVideoTransformer,
        vae: VideoAutoencoder | PatchAutoencoder,
        text_encoder: T5Gemma2TextEncoder,
        scheduler_config: dict,
        guidance: GuidanceConfig | None = None,
        device: str | torch.device = "cpu",
        offload: bool = False,
    ) -> None:
        self.transformer = transformer.eval()
        self.vae = vae
        self.text_encoder = text_encoder
        self.scheduler_config = scheduler_config
        self.guidance = guidance or GuidanceConfig()
        self.device = torch.device(device)
        self.offload = offload  # keep models on the CPU and move each to the device only while used
        self.source: str | None = None
        self.dtype = next(transformer.parameters()).dtype
        self.lora: dict | None = None  # the adapter merged in at loading, and its scale
        self.manifest: dict = {}  # the weights' manifest.json (a run's recipe and defaults); {} for released weights
        self.last_cache: StepCache | None = None  # the last call's step cache (its counts)
        self.last_passes: str | None = None  # the last call's guidance passes ("batched" / "split")
        self.last_step_seconds: list[float] = []  # the last call's denoising step times
        self.last_attention: list[str] = []  # the attention kernels of the last call's eager calls

    @classmethod
    def from_pretrained(
        cls,
        root: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        offload: bool = False,
        vae_tiling: bool = False,
        quantize: str | None = None,
        gguf: str | Path | None = None,
        lora: str | Path | None = None,
        lora_scale: float = 1.0,
        compile: bool = False,
    ) -> MotifVideoPipeline:
        """Load every component from a pipeline directory in the official layout.

        quantize="int8": the transformer's block projections in weight-only int8 (torchao); "fp8":
        float8 dynamic activations and weights (torchao; GPUs of compute capability 8.9 and newer);
        compile: `torch.compile` per block, one compiled graph per kind of block (regional);
        gguf: the transformer from this GGUF file instead (its quantized layers stay quantized);
        lora: a LoRA adapter file (model/lora.py) merged into the transformer, times `lora_scale`."""
        root = Path(root)
        check_weights_dir(root)
        if quantize not in (None, "int8", "fp8"):
            raise ValueError(f"unknown quantization {quantize!r}; choose 'int8' or 'fp8' (or load a GGUF file)")
        if quantize == "fp8":  # before anything loads: say why it cannot run here
            from motif_video.model.quantized import fp8_unavailable

            reason = fp8_unavailable(device)
            if reason is None and offload:
                reason = "--quantize fp8 keeps the transformer on the GPU: drop --offload"
            if reason is not None:
                raise ValueError(reason)
        if lora is not None and gguf is not None:
            raise ValueError("a LoRA adapter merges into full weights: use --lora without --gguf")
        manifest = json.loads((root / "manifest.json").read_text()) if (root / "manifest.json").is_file() else {}
        own = manifest.get("lora")
        if lora is not None and own and own.get("merged") and Path(lora).resolve() == (root / own["file"]).resolve():
            raise ValueError(
                f"{root} already has {own['file']} merged in; give --lora with the base pipeline ({own.get('file')} "
                "applies to the base, not to this export)"
            )
        home = "cpu" if offload else device
        if gguf is not None:
            from motif_video.model.checkpoint_io import read_config
            from motif_video.model.quantized import load_gguf_transformer

            config = read_config(root / "transformer")[0]
            transformer = load_gguf_transformer(gguf, config, dtype=dtype, device=home)
        else:
            transformer = load_transformer(root / "transformer", dtype=dtype, device=home)
        if lora is not None:
            from motif_video.model.lora import apply_adapter

            apply_adapter(transformer, lora, lora_scale)
        if quantize == "int8":
            from motif_video.model.quantized import quantize_int8

            transformer = quantize_int8(transformer)
        elif quantize == "fp8":
            from motif_video.model.quantized import quantize_fp8

            transformer = quantize_fp8(transformer)
        if compile:
            transformer.compile_blocks()
        vae = load_autoencoder(root / "vae", dtype=dtype, device=home)
        if vae_tiling and isinstance(vae, VideoAutoencoder):  # the patch autoencoder needs no tiling
            vae.vae.enable_tiling()
        text_encoder = load_text_encoder(root, dtype=dtype, device=home)
        scheduler_config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
        guider_file = root / "guider" / "guider_config.json"
        guidance = GuidanceConfig.from_diffusers(json.loads(guider_file.read_text())) if guider_file.is_file() else None
        pipe = cls(transformer, vae, text_encoder, scheduler_config, guidance, device=device, offload=offload)
        pipe.manifest = manifest
        pipe.source = str(root)
        pipe.dtype = dtype
        pipe.lora = None if lora is None else {"file": str(Path(lora).resolve()), "scale": lora_scale}
        return pipe

    # -- request validation -----------------------------------------------------------------------

    def check_request(self, prompts: list[str], height: int, width: int, frames: int, steps: int) -> None:
        multiple = self.vae.spatial_factor * self.transformer.cfg.patch_size
        validate_request(prompts, height, width, frames, steps, multiple, self.vae.temporal_factor)

    # -- generation -------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        image: Tensor | None = None,
        negative_prompt: str | None = None,
        height: int = 480,
        width: int = 832,
        frames: int = 49,
        steps: int = 50,
        guidance: GuidanceConfig | None = None,
        scheduler: str | None = None,
        shift: float | None = None,
        seed: int = 0,
        generators: list[torch.Generator] | None = None,
        progress: bool = True,
        on_step=None,
        cache_threshold: float | None = None,
        guidance_passes: str = "auto",
        prefix: Tensor | None = None,
        trace: list[Tensor] | None = None,
        decode: bool = True,
    ) -> GenerationOutput:
        """Generate one video per prompt.

        image: the first frame for image-to-video, [3, H, W] in [-1, 1] at the output size
        (`load_image` makes one). `prefix`: latent frames [Z, N, h, w] that the video continues (the first
        N latent frames are given, mask 1 on them: sampling/extend.py), for models trained with a prefix
        condition; with `image` as well, the image gives the image tokens. `generators` (one per video)
        override `seed`.
        `cache_threshold`: step caching (sampling/cache.py), off when None; `self.last_cache` keeps
        its counts. `guidance_passes`: "batched", "split" or "auto" (sampling/sampler.py); the one
        used is kept in `self.last_passes` (None without guidance). `trace`: a list that receives the
        latents before every step and after the last (distillation's teacher trajectories); `decode=False`
        returns latents only (frames None).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        self.check_request(prompts, height, width, frames, steps)
        guidance = guidance or self.guidance
        batch = len(prompts)
        if generators is None:
            generators = [torch.Generator().manual_seed(seed + i) for i in range(batch)]
        if len(generators) != batch:
            raise ValueError(f"got {len(generators)} generators for {batch} prompts")

        # 1. Text (and image) conditioning.
        with self._on_device(self.text_encoder):
            text, text_mask = self.text_encoder.encode(prompts)
            negative = None
            if guidance.active:
                negative = self.text_encoder.encode([negative_prompt if negative_prompt is not None else ""] * batch)
            image_tokens = None
            if image is not None and self.transformer.cfg.image_dim is not None:  # a model without an image
                # embedder (the embedded one) is conditioned by the first-frame latent alone
                image_tokens = self.text_encoder.encode_image(((image[None] + 1) / 2).clamp(0, 1))
                image_tokens = image_tokens.expand(batch, -1, -1)

        # 2. Noise, one generator per video (drawn on the CPU: the same video on every device).
        z, lf, lh, lw = self.vae.latent_shape(frames, height, width)
        dtype = next(self.transformer.parameters()).dtype
        latents = torch.cat([torch.randn((1, z, lf, lh, lw), generator=g, dtype=dtype) for g in generators])
        latents = latents.to(self.device)

        # 3. First-frame condition: VAE latent at latent frame 0 and a mask channel (zeros for T2V).
        condition = torch.zeros(batch, z + 1, lf, lh, lw, device=self.device, dtype=dtype)
        if prefix is not None:
            given = prefix.shape[1]
            if tuple(prefix.shape) != (z, given, lh, lw) or not 0 < given < lf:
                raise ValueError(
                    f"prefix latents must be [{z}, N, {lh}, {lw}] with 0 < N < {lf} latent frames, "
                    f"got {tuple(prefix.shape)}"
                )
            condition[:, :z, :given] = prefix.to(self.device, dtype)
            condition[:, z, :given] = 1.0
        elif image is not None and lf > 1:  # a single latent frame leaves nothing to condition
            with self._on_device(self.vae):
                first = self.vae.encode(image[None, :, None].to(self.vae.dtype), generator=generators[0])
            condition[:, :z, :1] = first.to(self.device, dtype)
            condition[:, z, 0] = 1.0
        elif image is not None:
            image_tokens = None

        # 4. Denoise.
        schedule = load_scheduler(self.scheduler_config, scheduler, shift)
        cfg = self.transformer.cfg
        tokens = cfg.num_video_tokens(lf, lh, lw)
        timesteps = set_timesteps(schedule, steps, tokens, self.device)
        conditioning = Conditioning(
            condition=condition,
            text=text.to(self.device),
            text_mask=text_mask.to(self.device),
            negative_text=None if negative is None else negative[0].to(self.device),
            negative_mask=None if negative is None else negative[1].to(self.device),
            image_tokens=None if image_tokens is None else image_tokens.to(self.device),
        )
        cache = None if cache_threshold is None else StepCache(cache_threshold)
        self.last_cache = cache
        passes = resolve_passes(guidance_passes, self.device)
        self.last_passes = passes if guidance.active else None
        self.last_step_seconds = []
        attention_module.KERNELS.clear()
        clock = [time.perf_counter()]

        def timed(i: int, n: int) -> None:  # per-step wall time (the first includes any compilation)
            now = time.perf_counter()
            self.last_step_seconds.append(now - clock[0])
            clock[0] = now
            if on_step is not None:
                on_step(i, n)

        with self._on_device(self.transformer):
            latents = sample(
                self.transformer,
                latents,
                conditioning,
                schedule,
                timesteps,
                Guidance(guidance),
                progress=progress,
                on_step=timed,
                cache=cache,
                passes=passes,
                given=None if prefix is None else condition[:, :z, : prefix.shape[1]],
                trace=trace,
            )

        self.last_attention = sorted(attention_module.KERNELS)  # the kernels that ran (model/attention.py)

        if not decode:
            return GenerationOutput(frames=None, latents=latents)
        # 5. Decode, one video at a time (the VAE's memory grows with the batch).
        with self._on_device(self.vae):
            video = torch.cat(
                [self.vae.decode(z) for z in tqdm(latents.split(1), desc="decoding", disable=not progress)]
            )
        frames_out = (video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).cpu()  # [B, F, H, W, 3]
        return GenerationOutput(frames=frames_out, latents=latents)

    def _on_device(self, component):
        return _Placement(component, self.device, self.offload)


class _Placement:
    """Context manager: with offloading, the component lives on the device only inside the block."""

    def __init__(self, component, device: torch.device, offload: bool) -> None:
        self.component, self.device, self.offload = component, device, offload

    def __enter__(self):
        if self.offload:
            self.component.to(self.device)
        return self.component

    def __exit__(self, *_) -> None:
        if self.offload:
            self.component.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def resolve_runtime(device: str | None = None, dtype: str | None = None) -> tuple[str, torch.dtype]:
    """The device and dtype a command runs on: the given ones, else CUDA in bfloat16 where present, else the
    CPU in float32. A clear error for a device that is not there or a dtype the CPU cannot run."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"device {device!r} is not available: {str(e).splitlines()[0]}") from None
    name = dtype or ("bfloat16" if torch.device(device).type == "cuda" else "float32")
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {name!r}")
    if torch.device(device).type == "cpu" and name == "float16":
        raise ValueError("dtype float16 is not supported on the CPU; use float32 or bfloat16")
    return device, getattr(torch, name)


def load_pipeline(
    weights: str | Path, *, device: str | None = None, dtype: str | None = None, **options
) -> MotifVideoPipeline:
    """The one way every command (generate, serve, eval, analyze, curriculum) loads a pipeline:
    device and dtype resolved by `resolve_runtime`, `options` passed to `from_pretrained`."""
    device, torch_dtype = resolve_runtime(device, dtype)
    return MotifVideoPipeline.from_pretrained(weights, dtype=torch_dtype, device=device, **options)


def validate_request(
    prompts: list[str], height: int, width: int, frames: int, steps: int, multiple: int = 16, temporal: int = 4
) -> None:
    """Clear errors for requests the model cannot serve (sizes follow the VAE and patch factors)."""
    if not prompts or any(not p.strip() for p in prompts):
        raise ValueError("the prompt is empty; describe the video to generate")
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise ValueError(f"height and width must be positive multiples of {multiple}, got {height} x {width}")
    if frames < 1 or (frames - 1) % temporal:
        valid = ", ".join(str(temporal * k + 1) for k in range(6))
        raise ValueError(f"frames must be {temporal}k+1 ({valid}, ..., 49, ..., 121), got {frames}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def request_factors(root: Path) -> tuple[int, int]:
    """(size multiple, temporal factor) of a weights directory, read from its configs alone."""
    vae = json.loads((root / "vae" / "config.json").read_text())
    transformer = json.loads((root / "transformer" / "config.json").read_text())
    spatial = vae.get("scale_factor_spatial", 8)
    return spatial * transformer.get("patch_size", 2), vae.get("scale_factor_temporal", 4)


def training_run_hint(root: Path) -> str:
    """' (this is a training run: ...)', naming what to pass instead, when `root` is a `motif-video train`
    out_dir (its metrics or EMA weights); '' for anything else."""
    if not ((root / "metrics.jsonl").is_file() or (root / "ema-transformer").is_dir()):
        return ""
    if (root / "pipeline").is_dir():
        return f" (this is a training run: use --weights {root / 'pipeline'})"
    return " (this is a training run: `motif-video export RUN_DIR --out DIR` makes a pipeline of it)"


def check_weights_dir(root: Path) -> None:
    """A clear error for a pipeline directory that lacks a file, or has a config that is not JSON, weights
    that are not complete safetensors files (truncated, random bytes) or only pickle weights (which run
    code when loaded: refused). Reads configs and safetensors headers only."""
    from motif_video.model.checkpoint_io import check_safetensors, read_json

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"weights directory {root} does not exist")
    required = list(REQUIRED_FILES)
    text_config = root / "text_encoder" / "config.json"
    if text_config.is_file() and read_json(text_config).get("_class_name") == "WordTextEncoder":
        required.remove("tokenizer/tokenizer_config.json")  # the word-level encoder carries its vocabulary
    for part in ("transformer", "vae", "text_encoder"):
        folder = root / part
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt*")]
        if folder.is_dir() and pickles and not any(folder.glob("*.safetensors")):
            raise ValueError(
                f"{folder} has only pickle weights ({', '.join(sorted(pickles))}); they can run code when loaded, "
                "so they are refused: convert them to safetensors"
            )
        for file in sorted(folder.glob("*.safetensors")):
            check_safetensors(file)
    for config in [*(root / f for f in REQUIRED_FILES if f.endswith(".json")), root / "guider" / "guider_config.json"]:
        if config.is_file():
            read_json(config)
    missing = [f for f in required if not (root / f).is_file()]
    if not any((root / "transformer").glob("*.safetensors")) and "transformer/config.json" not in missing:
        missing.append("transformer/*.safetensors")
    if not any((root / "vae").glob("*.safetensors")) and "vae/config.json" not in missing:
        missing.append("vae/*.safetensors")
    if missing:
        hint = training_run_hint(root)
        if not hint and (root / "config.json").is_file() and any(root.glob("*.safetensors")):
            hint = (
                " (this is a transformer folder, not a pipeline: `motif-video export RUN_DIR --out DIR` makes a "
                "complete pipeline from a training run)"
            )
        raise FileNotFoundError(f"weights directory {root} is incomplete; missing: {', '.join(missing)}{hint}")


def load_image(path: str | Path, height: int, width: int) -> Tensor:
    """An image file -> [3, height, width] in [-1, 1], resized as diffusers' video processor does."""
    from diffusers.video_processor import VideoProcessor
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (FileNotFoundError, IsADirectoryError, UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e.__class__.__name__}: {e}") from None
    video = VideoProcessor(vae_scale_factor=8).preprocess_video([img], height=height, width=width)  # [1, 3, 1, H, W]
    return video[0, :, 0]


def weights_fingerprint(root: str | Path) -> str:
    """A short identity of a weights directory: every file's path and size, every JSON's content.

    Cheap (no hashing of gigabytes), and any re-export, different shard or changed config changes it."""
    root = Path(root)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        digest.update(f"{rel}:{file.stat().st_size}\n".encode())
        if file.suffix == ".json":
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def generation_record(
    pipe: MotifVideoPipeline,
    weights: str | Path,
    *,
    prompt: str,
    negative_prompt: str | None,
    image: str | Path | None,
    seed: int,
    steps: int,
    guidance: GuidanceConfig,
    scheduler: str | None,
    shift: float | None,
    height: int,
    width: int,
    frames: int,
    fps: int,
    dtype: str,
    device: str,
    seconds: float,
    command: list[str],
) -> dict:
    """Everything needed to make one video again: the JSON beside every generated MP4 (CLI and page)."""
    from dataclasses import asdict

    from motif_video import __version__

    return {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "image": str(Path(image).resolve()) if image else None,
        "seed": seed,
        "steps": steps,
        "guidance": asdict(guidance),
        "guidance_passes": pipe.last_passes,  # "batched" / "split" (None: one pass, no guidance)
        "attention_kernels": pipe.last_attention,
        "scheduler": scheduler or pipe.scheduler_config.get("_class_name"),
        "shift": shift if shift is not None else pipe.scheduler_config.get("shift"),
        "height": height,
        "width": width,
        "frames": frames,
        "fps": fps,
        "dtype": dtype,
        "device": device,
        "weights": str(Path(weights).resolve()),
        "weights_fingerprint": weights_fingerprint(weights),
        "lora": pipe.lora,  # the adapter file merged in and its scale, or None
        "distilled": pipe.manifest.get("distilled"),  # a few-step student: its teacher, schedule and guidance
        "motif_video_version": __version__,
        "torch_version": torch.__version__,
        "seconds": round(seconds, 2),
        "command": command,
    }
