"""Extension on the embedded model: seams, motion per segment and colour drift, side by side.

For each of `--count` benchmark objects (trained colour-shape pairs, plain backgrounds), a
storyboard of `--segments` segments whose directions alternate (right, left, right, ... or up,
down, ...: the object stays in view), made four ways in one run:
- the model's default: the last two latent frames for a model trained with a prefix, else the last frame;
- last frame: conditioned on the last frame only (image-to-video chaining, what any model can do);
- last frame without the hand-over (the seam's change not spread over the first new frames);
- the default without colour matching;
- the default without the decoder's join smoothing (a patch autoencoder's `join_smoothing` set to 0).
Per way: the largest frame difference across a seam over the median one inside the segments
(the issue's bar: <= 1.5), the same seam over the median difference across the latent-chunk joins
inside the first segment (a clip changes most where one latent frame ends: each is drawn with its
own sampling error), the same largest difference over the seam and the frames the hand-over changed
after it (a hand-over, or any fade, spreads a seam's change over those frames: measured on the seam
alone, a fade that holds the old frame and then jumps would look seamless; over the stretch it does
not), the share of segments in which the object moves the asked way (the
shapes benchmark's motion score per segment), and the drift of the object's mean colour from the
first segment to the last (levels of 0-255). Then a two-segment storyboard, right then up, is
tracked and drawn (frames of both segments) into `--figure`.

    python benchmarks/extension.py [--weights DIR] [--count 8] [--figure docs/figures/storyboard.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import numpy as np

from motif_video.cli.common import silence_libraries
from motif_video.data import world
from motif_video.embedded import embedded_weights
from motif_video.eval.shapes import _object_pixels, benchmark_scenes, score
from motif_video.sampling import HANDOVER_FRAMES
from motif_video.sampling.extend import seam_ratio, storyboard
from motif_video.sampling.pipeline import MotifVideoPipeline

OPPOSITE = {"right": "left", "left": "right", "up": "down", "down": "up"}


def object_color(frames: np.ndarray, color: str) -> np.ndarray | None:
    """Mean RGB of the object's pixels (those near the asked colour) over `frames`."""
    target = np.array(world.COLORS[color], np.float32)
    pixels = [f[_object_pixels(np.linalg.norm(f.astype(np.float32) - target, axis=-1) < 60)] for f in frames]
    pixels = np.concatenate(pixels)
    return pixels.mean(axis=0) if len(pixels) > 20 else None


def centroid(frame: np.ndarray, color: str) -> tuple[float, float] | None:
    target = np.array(world.COLORS[color], np.float32)
    mask = _object_pixels(np.linalg.norm(frame.astype(np.float32) - target, axis=-1) < 60)
    return tuple(np.argwhere(mask).mean(axis=0)) if mask.sum() > 8 else None


def segments_of(frames: np.ndarray, seams: list[int]) -> list[np.ndarray]:
    bounds = [0, *seams, len(frames)]
    return [frames[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def chunk_join(frames: np.ndarray, temporal: int = 4) -> float:
    """The median frame difference across the latent-chunk joins of one generated clip (frames 0 -> 1,
    4 -> 5, ...): each latent frame is drawn with its own sampling error, so a clip changes most there."""
    diffs = np.abs(np.diff(frames.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))
    return float(np.median(diffs[::temporal]))


def run_way(pipe, scenes, segments: int, overlap: int | None, match: bool, handover: int, steps: int) -> dict:
    ratios, regions, joins, moves, drifts = [], [], [], [], []
    for i, scene in enumerate(scenes):
        obj = scene.objects[0]
        directions = [obj.motion if k % 2 == 0 else OPPOSITE[obj.motion] for k in range(segments)]
        objects = [dataclasses.replace(obj, motion=d) for d in directions]
        prompts = [world.Scene((o,), scene.background, scene.pattern).caption for o in objects]
        out = storyboard(
            pipe, prompts, frames=17, height=64, width=64, seed=i, steps=steps, overlap=overlap,
            match_colors=match, handover=handover, progress=False,
        )  # fmt: skip
        across, inside = seam_ratio(out.frames, out.seams)
        ratios.append(across / max(inside, 1e-6))
        region, rest = seam_ratio(out.frames, out.seams, span=1 + handover)
        regions.append(region / max(rest, 1e-6))
        parts = segments_of(out.frames, out.seams)
        joins.append(across / max(chunk_join(parts[0]), 1e-6))
        for part, o in zip(parts, objects, strict=True):
            moves.append(score(part, world.Scene((o,), scene.background, scene.pattern)).motion)
        first, last = object_color(parts[0], obj.color), object_color(parts[-1], obj.color)
        if first is not None and last is not None:
            drifts.append(float(np.abs(last - first).mean()))
    return {
        "seam_ratio_median": statistics.median(ratios),
        "seam_ratio_max": max(ratios),
        "seam_over_join": statistics.median(joins),
        "region_ratio_median": statistics.median(regions),
        "motion": float(np.mean(moves)),
        "color_drift": statistics.median(drifts) if drifts else float("nan"),
    }


def main() -> None:
    silence_libraries()  # torchao's, torch's and diffusers' notices, as the CLI silences them
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="pipeline directory (default: the embedded model)")
    parser.add_argument("--count", type=int, default=8, help="objects (storyboards) per way")
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--figure", default=None, help="write the right-then-up storyboard's frames here (PNG)")
    args = parser.parse_args()
    pipe = MotifVideoPipeline.from_pretrained(args.weights or embedded_weights())
    scenes = benchmark_scenes(args.count, held_out=False)
    smoothing = getattr(pipe.vae, "join_smoothing", 0.0)
    ways = {  # name: (overlap, colour matching, hand-over frames, the decoder's join smoothing)
        "the model's default (prefix if trained for it)": (None, True, HANDOVER_FRAMES, smoothing),
        "last frame": (1, True, HANDOVER_FRAMES, smoothing),
        "last frame, no hand-over": (1, True, 0, smoothing),
        "the default, no colour match": (None, False, HANDOVER_FRAMES, smoothing),
    }
    if smoothing:  # a patch autoencoder's decode with join smoothing: the same without it
        ways["the default, no join smoothing"] = (None, True, HANDOVER_FRAMES, 0.0)
    print(f"{args.count} storyboards of {args.segments} segments x 17 frames, {args.steps} steps, CPU")
    print(
        "| conditioning | seam / inside difference (median, max) | seam / chunk join (median) "
        "| seam + hand-over frames / the rest (median) | motion per segment | object colour drift |"
    )
    print("|---|---|---|---|---|---|")
    for name, (overlap, match, handover, smooth) in ways.items():
        pipe.vae.join_smoothing = smooth
        r = run_way(pipe, scenes, args.segments, overlap, match, handover, args.steps)
        print(
            f"| {name} | {r['seam_ratio_median']:.2f}, {r['seam_ratio_max']:.2f} | {r['seam_over_join']:.2f} | "
            f"{r['region_ratio_median']:.2f} | {r['motion']:.2f} | {r['color_drift']:.1f} |"
        )
    pipe.vae.join_smoothing = smoothing  # the storyboard below as the model makes it
    prompts = ["a red circle moves to the right on a gray background", "a red circle moves up on a gray background"]
    out = storyboard(pipe, prompts, frames=17, height=64, width=64, seed=0, steps=args.steps, progress=False)
    first, second = segments_of(out.frames, out.seams)
    track = [centroid(f, "red") for f in (first[0], first[-1], second[0], second[-1])]
    spelled = ", ".join("none" if c is None else f"({c[0]:.1f}, {c[1]:.1f})" for c in track)
    print(f"storyboard right -> up: centroid (y, x) at segment 1 start, end, segment 2 start, end: {spelled}")
    if None not in track:
        right = track[1][1] - track[0][1]
        up = track[2][0] - track[3][0]
        print(f"segment 1 moved {right:+.1f} px in x (right > 0); segment 2 moved {up:+.1f} px up (> 0)")
    if args.figure:
        from motif_video.media import write_contact_sheet

        write_contact_sheet(out.frames, args.figure, columns=10)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
