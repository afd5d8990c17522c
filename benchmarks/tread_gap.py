"""TREAD's train / sampling gap on a shapes-world model: the clean estimate at pure noise, unrouted vs routed.

A model trained with TREAD saw its routed blocks process only a share of the video tokens; sampling
runs every token through every block. For `--count` benchmark captions per split this measures, in
one run, how far the model's clean estimate at t = 1 (x0 = noise - v, the caption's prediction from
nothing) is from the caption's mean clip (`--renders` renders of the caption with the world's own
jitter of the start, encoded and averaged: the best possible prediction at t = 1), run both ways:
- unrouted: every token through every block (what sampling does);
- routed: a random `--keep` share of the tokens through blocks `--blocks` (what TREAD training did).
Also printed: how far the renders themselves scatter around the mean clip (what no model can remove),
the spread of the estimate over noise draws (whether the noise leaks through), and the brightness
channel's mean (channel 0 of the patch autoencoder: the background level the caption names).
A model without the gap has unrouted / routed near 1.

    python benchmarks/tread_gap.py [--weights DIR] [--count 6] [--keep 0.5] [--blocks 1 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import numpy as np
import torch

from motif_video.cli.common import silence_libraries
from motif_video.data import world
from motif_video.embedded import embedded_weights, manifest
from motif_video.eval.shape_loss import clean_estimate, to_pixels
from motif_video.eval.shapes import benchmark_scenes
from motif_video.model.routing import random_route
from motif_video.sampling.pipeline import MotifVideoPipeline


def main() -> None:
    silence_libraries()  # torchao's, torch's and diffusers' notices, as the CLI silences them
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="pipeline directory (default: the embedded model)")
    parser.add_argument("--count", type=int, default=6, help="benchmark captions per split")
    parser.add_argument("--renders", type=int, default=48, help="renders per caption for its mean clip")
    parser.add_argument("--draws", type=int, default=4, help="noise draws per caption")
    parser.add_argument("--keep", type=float, default=0.5, help="routed share of the video tokens (TREAD's)")
    parser.add_argument("--blocks", type=int, nargs=2, default=[1, 4], help="first and last routed block")
    args = parser.parse_args()
    weights = args.weights or embedded_weights()
    pipe = MotifVideoPipeline.from_pretrained(weights)
    defaults = manifest(weights).get("defaults", {})  # the model's own clip size
    frames, height, width = (defaults.get(k, v) for k, v in (("frames", 17), ("height", 64), ("width", 64)))
    rows = []
    for held_out in (False, True):
        for i, scene in enumerate(benchmark_scenes(args.count, held_out)):
            rng = np.random.default_rng(i)
            o = scene.objects[0]
            renders = []
            for _ in range(args.renders):  # the caption's clips: the same words, the world's jitter of the start
                moved = dataclasses.replace(scene, objects=(world._place(o.color, o.shape, o.motion, 0, 1, rng),))
                video = world.render(moved, frames, height, width)
                renders.append(pipe.vae.encode(to_pixels(video).to(pipe.vae.dtype), sample=False).float().cpu())
            latents = torch.cat(renders)
            mean_clip = latents.mean(0, keepdim=True)
            tokens = pipe.transformer.cfg.num_video_tokens(*mean_clip.shape[2:])
            generator = torch.Generator().manual_seed(i)
            errors = {"unrouted": [], "routed": []}
            channel0 = {"unrouted": [], "routed": []}
            draws = []
            for d in range(args.draws):
                for way in errors:
                    route = None
                    if way == "routed":
                        route = random_route(1, tokens, args.keep, *args.blocks, generator=generator)
                    # at t = 1 the estimate sees only the noise and the caption, not the clip
                    x0 = clean_estimate(pipe, mean_clip, scene.caption, 1.0, seed=100 + d, guided=False, route=route)
                    errors[way].append((x0 - mean_clip).square().mean().item())
                    channel0[way].append(x0[0, 0].mean().item())
                    if way == "unrouted":
                        draws.append(x0)
            spread = torch.cat(draws).var(0, unbiased=False).mean().item()
            rows.append(
                {
                    "caption": scene.caption,
                    "scatter": (latents - mean_clip).square().mean().item(),
                    "unrouted": statistics.mean(errors["unrouted"]),
                    "routed": statistics.mean(errors["routed"]),
                    "spread": spread,
                    "channel0": mean_clip[0, 0].mean().item(),
                    "channel0_unrouted": statistics.mean(channel0["unrouted"]),
                    "channel0_routed": statistics.mean(channel0["routed"]),
                }
            )
    print(
        f"{len(rows)} captions, {args.renders} renders each, {args.draws} noise draws; routed: keep {args.keep}, "
        f"blocks {args.blocks[0]}-{args.blocks[1]}; weights {args.weights or 'the embedded model'}"
    )
    print("| caption | renders' scatter | unrouted | routed | unrouted / routed | channel 0: clips, unrouted, routed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['caption']} | {r['scatter']:.3f} | {r['unrouted']:.3f} | {r['routed']:.3f} | "
            f"{r['unrouted'] / r['routed']:.2f} | {r['channel0']:+.2f}, {r['channel0_unrouted']:+.2f}, "
            f"{r['channel0_routed']:+.2f} |"
        )
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("scatter", "unrouted", "routed", "spread")}
    print(
        f"| **mean** | {mean['scatter']:.3f} | **{mean['unrouted']:.3f}** | **{mean['routed']:.3f}** | "
        f"**{mean['unrouted'] / mean['routed']:.2f}** | |"
    )
    print(f"spread of the unrouted estimate over noise draws: {mean['spread']:.4f}")


if __name__ == "__main__":
    main()
