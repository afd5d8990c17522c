"""Training a small video autoencoder (diffusers' `AutoencoderKLWan` class) on prepared clips.

For models too small for the Wan2.1 VAE (the embedded default): the same class with a small
config, trained on the clips of `motif-video prepare` with an L1 reconstruction loss and a small
KL term. At the end, the per-channel mean and std of the posterior means over the training clips
become the config's `latents_mean` / `latents_std`, so the transformer sees normalised latents
exactly as with the released VAE, and the result is saved with `save_pretrained` as a `vae/`
directory of a pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from motif_video.data.shards import iterate_shard
from motif_video.media import read_video


@dataclass(frozen=True)
class AutoencoderConfig:
    z_dim: int = 8
    base_dim: int = 16
    steps: int = 2000
    batch_size: int = 2
    lr: float = 1e-3
    kl_weight: float = 1e-6
    seed: int = 0


def load_clips(clips_dir: str | Path, limit: int | None = None) -> list[torch.Tensor]:
    """Every clip of a prepare folder as [3, F, H, W] in [-1, 1] (they are small)."""
    clips = []
    for shard in sorted(Path(clips_dir).glob("shard-*.tar")):
        for _, mp4 in iterate_shard(shard):
            frames, _ = read_video(mp4)
            clips.append(torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1)
            if limit is not None and len(clips) >= limit:
                return clips
    if not clips:
        raise FileNotFoundError(f"{clips_dir} has no clips (run `motif-video prepare` first)")
    return clips


def train_autoencoder(
    clips_dir: str | Path, out_dir: str | Path, cfg: AutoencoderConfig = AutoencoderConfig(), progress: bool = True
) -> dict:
    """Train, normalise and save; returns the first and last losses and the latent statistics."""
    from diffusers import AutoencoderKLWan

    clips = load_clips(clips_dir)
    shapes = {tuple(c.shape) for c in clips}
    if len(shapes) > 1:
        raise ValueError(f"clips of one shape are expected (one bucket), found {sorted(shapes)}")
    torch.manual_seed(cfg.seed)
    vae = AutoencoderKLWan(
        base_dim=cfg.base_dim,
        z_dim=cfg.z_dim,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * cfg.z_dim,
        latents_std=[1.0] * cfg.z_dim,
    )
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    losses = []
    vae.train()
    for _ in tqdm(range(cfg.steps), desc="autoencoder", disable=not progress):
        pick = torch.randint(len(clips), (cfg.batch_size,), generator=generator)
        video = torch.stack([clips[i] for i in pick])
        posterior = vae.encode(video).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        loss = (reconstruction - video).abs().mean() + cfg.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    vae.eval()
    with torch.no_grad():  # normalisation statistics of the posterior means
        means = torch.cat([vae.encode(c[None]).latent_dist.mode().flatten(2) for c in clips], dim=2)
    mean, std = means.mean(dim=(0, 2)), means.std(dim=(0, 2)).clamp_min(1e-4)
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    vae.save_pretrained(out_dir)
    window = max(1, len(losses) // 10)
    return {
        "first_loss": float(np.mean(losses[:window])),
        "last_loss": float(np.mean(losses[-window:])),
        "latents_mean": mean.tolist(),
        "latents_std": std.tolist(),
    }
