"""What a data source adds to the generic trainer, behind one hook: `recipe_for(cfg)`.

The trainer (training/train.py) knows models, data streams, steps and checkpoints; a recipe knows
where the data comes from and what a finished run is. `Recipe` is the general case (precomputed
shards or synthetic latents: samples decoded with `train.sample_weights`, and a fine-tune of a
pipeline exported as a pipeline); `ShapesWorld` is the shapes-world chain of the embedded model
(its clips, autoencoder and latents built first, its words all known to the word-level encoder,
and every sample and the end of the run a complete pipeline of its own).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from motif_video.data import world as shapes_world
from motif_video.distributed import World


class Recipe:
    name = "shards"

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def build_data(self, world: World, progress: bool) -> Path | None:
        """The folder of the data the run reads (None: synthetic latents); made first where the recipe
        makes it (every rank calls this; a barrier follows)."""
        return Path(self.cfg.data.path) if self.cfg.data.source == "shards" else None

    def vocabulary(self) -> set[str]:
        """Words the word-level text encoder must know besides those of the data's captions."""
        return set()

    def size(self, state) -> dict[str, int]:
        """The video size (pixels, frames) of the training data, for sample videos."""
        cfg = state.cfg
        factors = json.loads((Path(cfg.train.sample_weights) / "vae" / "config.json").read_text())
        spatial, temporal = factors.get("scale_factor_spatial", 8), factors.get("scale_factor_temporal", 4)
        _, frames, height, width = state.latent_shape
        return {"height": height * spatial, "width": width * spatial, "frames": (frames - 1) * temporal + 1}

    def sample_pipeline(self, state, run_dir: Path, step: int):
        """The pipeline that draws the run's sample videos at `step` (EMA weights); rank 0 only
        gets one. A collective: every rank calls it."""
        from motif_video.model.transformer import MotifVideoTransformer
        from motif_video.sampling.pipeline import MotifVideoPipeline
        from motif_video.training.ema import ema_weights

        model = MotifVideoTransformer(state.model.transformer.cfg)
        model.load_state_dict(ema_weights(state.model, state.ema), strict=True)
        if not state.world.is_main:
            return None
        if state.sampler is None:
            state.sampler = MotifVideoPipeline.from_pretrained(
                state.cfg.train.sample_weights, device=state.world.device
            )
            if state.sampler.vae.z_dim != model.cfg.out_channels:
                raise ValueError(
                    f"train.sample_weights has a {state.sampler.vae.z_dim}-channel VAE, but the model predicts "
                    f"{model.cfg.out_channels} latent channels"
                )
        state.sampler.transformer = model.to(state.world.device).eval()
        return state.sampler

    def finish(self, state, run_dir: Path) -> None:
        """After the last step and the EMA export: a fine-tune of a pipeline is exported as one."""
        from motif_video.training.export import base_pipeline, export

        if state.world.is_main and base_pipeline(self.cfg.to_dict()) is not None:
            path = export(run_dir, run_dir / "pipeline")
            print(f"exported {path} (generate --weights {path})", flush=True)


class ShapesWorld(Recipe):
    name = "shapes"

    def build_data(self, world: World, progress: bool) -> Path:
        from motif_video.training.shapes_data import build_shapes_data

        return build_shapes_data(self.cfg, world.is_main, progress)

    def vocabulary(self) -> set[str]:
        return set(shapes_world.vocabulary())  # every word of the world, held-out prompts too

    def size(self, state) -> dict[str, int]:
        world = self.cfg.world
        return {"height": world.height, "width": world.width, "frames": world.frames}

    def sample_pipeline(self, state, run_dir: Path, step: int):
        from motif_video.sampling.pipeline import MotifVideoPipeline

        path = self.export(state, run_dir / "pipeline", step)  # collective
        return MotifVideoPipeline.from_pretrained(path, device=state.world.device) if state.world.is_main else None

    def finish(self, state, run_dir: Path) -> None:
        self.export(state, run_dir / "pipeline", self.cfg.train.steps)

    def export(self, state, path: Path, step: int) -> Path:
        """A complete pipeline directory: transformer/ (EMA), text_encoder/ (the word-level one trained
        here, EMA; or the frozen encoder's text_encoder/ and tokenizer/), the data's vae/, scheduler/
        (shift at the training size), guider/ and manifest.json (the run's recipe and figures).
        Written beside and renamed. A collective under FSDP2."""
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.guiders import ClassifierFreeGuidance

        from motif_video.model.checkpoint_io import save_transformer
        from motif_video.model.transformer import MotifVideoTransformer
        from motif_video.model.word_encoder import WordTextEncoder
        from motif_video.training.ema import ema_weights
        from motif_video.training.flow import resolution_shift

        model = MotifVideoTransformer(state.model.transformer.cfg)
        model.load_state_dict(ema_weights(state.model, state.ema), strict=True)
        encoder = state.model.text_encoder
        text_weights = ema_weights(state.model, state.ema, "text_encoder") if encoder is not None else None
        if not state.world.is_main:
            return path
        cfg = self.cfg
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
        size = self.size(state)
        _, frames, height, width = state.latent_shape
        shift = resolution_shift(
            model.cfg.num_video_tokens(frames, height, width), cfg.flow.shift, cfg.flow.base_tokens
        )
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


def recipe_for(cfg) -> Recipe:
    if cfg.data.source == "teacher":
        from motif_video.training.distill import Distillation

        return Distillation(cfg)
    return ShapesWorld(cfg) if cfg.data.source == "shapes" else Recipe(cfg)
