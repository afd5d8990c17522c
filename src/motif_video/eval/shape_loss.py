"""Where a shapes-world model loses the shape: the shapes benchmark at each point of the chain.

For the benchmark's scenes (trained and held-out pairs), the world's own render is scored
- as rendered (the benchmark's ceiling),
- through the autoencoder (encode, decode: the ceiling the latents allow),
- through the autoencoder with only its first k latent channels (the patch autoencoder's channels are
  principal components, strongest first: how much of the shape the detail components carry),
- as the model's clean estimate x0 = x_t - t v from the clip noised to flow time t (guided as the
  pipeline guides): what the model recovers of a shape that is there, at each noise level; at t = 1
  it is the model's guess from the caption alone.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from motif_video.data import world
from motif_video.eval.shapes import COLUMNS as BENCHMARK_COLUMNS
from motif_video.eval.shapes import benchmark_scenes, score
from motif_video.model.vae import PatchAutoencoder
from motif_video.sampling.guidance import Guidance
from motif_video.training.flow import TIMESTEP_SCALE, interpolate

COLUMNS = BENCHMARK_COLUMNS[:4]  # the benchmark's scores, without their mean


def to_pixels(video: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(video).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # [1, 3, F, H, W]


def to_video(pixels: torch.Tensor) -> np.ndarray:
    return ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 3, 0).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def through_autoencoder(vae, video: np.ndarray) -> np.ndarray:
    """A [F, H, W, 3] uint8 video encoded (the mean, no sampling) and decoded by `vae`."""
    latents = vae.encode(to_pixels(video).to(vae.device, vae.dtype), sample=False)
    return to_video(vae.decode(latents))


@torch.no_grad()
def clean_estimate(
    pipe, latents: torch.Tensor, caption: str, t: float, seed: int, guided: bool = True, route=None
) -> torch.Tensor:
    """x0 = x_t - t v of the clip's latents noised to time t, with the pipeline's guidance (`guided`) or
    the conditional velocity alone; `route`: run the transformer with this TREAD route (model/routing.py)."""
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    xt = interpolate(latents, noise, torch.tensor([t]))
    z = latents.shape[1]
    dtype = next(pipe.transformer.parameters()).dtype
    x = torch.cat([xt, torch.zeros(1, z + 1, *latents.shape[2:])], dim=1).to(pipe.device, dtype)
    times = torch.full((1,), t * TIMESTEP_SCALE, device=pipe.device)

    def velocity(prompt: str) -> torch.Tensor:
        text, mask = pipe.text_encoder.encode([prompt])
        return pipe.transformer(
            x, times, text.to(pipe.device, dtype), mask.to(pipe.device), route=route
        ).velocity.float()

    if not guided:
        return xt.to(pipe.device) - t * velocity(caption)
    uncond = velocity("") if pipe.guidance.active else None
    v = Guidance(pipe.guidance)(velocity(caption), uncond)
    return xt.to(v) - t * v


def diagnose(
    pipe,
    count: int = 16,
    times: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 1.0),
    channels: tuple[int, ...] = (4, 8, 12),
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    progress: bool = True,
) -> list[dict]:
    """Rows {"stage", "trained": {column: mean}, "held_out": {...}}, in the order of the module text."""
    stages = ["renders", "autoencoder"]
    if isinstance(pipe.vae, PatchAutoencoder):
        stages += [f"first {k} of {pipe.vae.z_dim} channels" for k in channels if k < pipe.vae.z_dim]
    stages += [f"clean estimate, t = {t:g}" for t in times]
    scores: dict[str, dict[str, list]] = {s: {"trained": [], "held_out": []} for s in stages}
    bar = tqdm(total=2 * count, desc="shape diagnosis", unit="clip", disable=not progress)
    for split, held in (("trained", False), ("held_out", True)):
        for i, scene in enumerate(benchmark_scenes(count, held)):
            video = world.render(scene, frames, height, width)
            latents = pipe.vae.encode(to_pixels(video).to(pipe.vae.dtype), sample=False).float().cpu()
            made = {"renders": video, "autoencoder": to_video(pipe.vae.decode(latents))}
            for k in channels:
                name = f"first {k} of {latents.shape[1]} channels"
                if name in scores:
                    kept = latents.clone()
                    kept[:, k:] = 0  # the later components at their mean
                    made[name] = to_video(pipe.vae.decode(kept))
            for t in times:
                estimate = clean_estimate(pipe, latents, scene.caption, t, seed=i)
                made[f"clean estimate, t = {t:g}"] = to_video(pipe.vae.decode(estimate.cpu()))
            for name, clip in made.items():
                scores[name][split].append(score(clip, scene))
            bar.update()
    bar.close()
    return [
        {
            "stage": name,
            **{
                split: {c: float(np.mean([getattr(s, c) for s in rows])) for c in COLUMNS}
                for split, rows in by_split.items()
            },
        }
        for name, by_split in scores.items()
    ]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| stage | trained: color / shape / motion / stability | held-out: color / shape / motion / stability |",
        "|---|---|---|",
    ]
    for r in rows:
        cells = [" / ".join(f"{r[split][c]:.3f}" for c in COLUMNS) for split in ("trained", "held_out")]
        lines.append(f"| {r['stage']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"
