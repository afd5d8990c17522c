"""The data chain of data.source "shapes": world clips -> small autoencoder -> latent shards.

    shapes:N ─ prepare ─▶ PATH/clips ─ train_autoencoder ─▶ PATH/vae ─ precompute ─▶ PATH/latents

All three stages run in the run's process before the transformer trains, each skipped once its
output is complete, so a second run with the same `data.path` (an ablation, a resumed run)
reuses the clips, the autoencoder and the latents. Each stage writes under a temporary name and
renames, so an interrupted chain restarts the unfinished stage and nothing else. The captions
stay text: the word-level encoder is trained with the transformer.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from motif_video.data import world as shapes_world
from motif_video.data.precompute import precompute
from motif_video.data.preprocess import PrepareConfig, prepare
from motif_video.distributed import print0
from motif_video.training.autoencoder import train_autoencoder

LATER_SETTINGS = {
    "path",
    "free_layout",
    "jitter",
    "decoder_noise",
    "decoder_context",
    "decoder_contrast",
    "decoder_width",
    "decoder_depth",
    "join_smoothing",
}  # recorded in recipe.json only when set to other than their default


def build_shapes_data(cfg, is_main: bool = True, progress: bool = True) -> Path:
    """Make (or reuse) PATH/clips, PATH/vae and PATH/latents for `cfg` (a TrainConfig); returns
    PATH/latents. Only the main process builds; the others wait at the caller's barrier."""
    root = Path(cfg.data.path)
    world = cfg.world

    def settings(section) -> dict:  # settings added after data folders were made: recorded only when not default
        default = asdict(type(section)())
        return {k: v for k, v in asdict(section).items() if k not in LATER_SETTINGS or v != default[k]}

    render = {"object_size": shapes_world.OBJECT_SIZE, "speed": shapes_world.SPEED}  # the world's constants
    # captions: each clip's meta holds its long / short / truncated captions (world.Scene.captions)
    recipe = {
        "world": settings(world),
        "render": render,
        "captions": "long-short-truncated",
        "autoencoder": settings(cfg.autoencoder),
    }
    recipe_file = root / "recipe.json"
    if recipe_file.is_file() and json.loads(recipe_file.read_text()) != recipe:
        raise ValueError(
            f"{root} holds shapes data built with other [world] / [autoencoder] settings or another version of the "
            f"world ({recipe_file}); "
            "use another data.path or delete that folder"
        )
    if not is_main:
        return root / "latents"
    root.mkdir(parents=True, exist_ok=True)
    recipe_file.write_text(json.dumps(recipe, indent=2) + "\n")

    clips = root / "clips"
    if not (clips / "report.json").is_file():  # prepare resumes by itself; report.json is written last
        print0(f"shapes data 1/3: rendering {world.clips} clips of {world.frames}x{world.height}x{world.width}")
        area = world.height * world.width
        prepare(
            f"shapes:{world.clips}",
            clips,
            PrepareConfig(
                fps=world.fps,
                frame_buckets=(world.frames,),
                area=area,
                shard_size=250,
                max_objects=world.max_objects,
                free_layout=world.free_layout,
                jitter=world.jitter,
            ),
            seed=world.seed,
            progress=progress,
        )
    vae = root / "vae"
    if not (vae / "config.json").is_file() and cfg.autoencoder.path:  # shared with other runs (a curriculum)
        print0(f"shapes data 2/3: autoencoder from {cfg.autoencoder.path}")
        shutil.rmtree(root / "vae.partial", ignore_errors=True)
        shutil.copytree(cfg.autoencoder.path, root / "vae.partial")
        os.replace(root / "vae.partial", vae)
    if not (vae / "config.json").is_file():
        ae = cfg.autoencoder
        what = "fitting the patch autoencoder (PCA)" if ae.kind == "patch-pca" else f"training for {ae.steps} steps"
        print0(f"shapes data 2/3: autoencoder: {what}")
        partial = root / "vae.partial"
        shutil.rmtree(partial, ignore_errors=True)
        result = train_autoencoder(clips, partial, cfg.autoencoder, progress=progress)
        (partial / "training.json").write_text(json.dumps(result, indent=2) + "\n")
        os.replace(partial, vae)
    latents = root / "latents"
    if not (latents / "done").is_file():
        print0("shapes data 3/3: encoding the clips into latents")
        precompute(clips, root, latents, progress=progress, with_text=False)
        (latents / "done").write_text("")
    return latents
