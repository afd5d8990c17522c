"""End-to-end generation: our pipeline vs diffusers' MotifVideoPipeline, same components, one run.

Both load the same random-weight pipeline directory (official layout) and generate the same
video with the same seed and guidance. Prints the time per denoising step (from the first to the
last step callback, so loading, text encoding and decoding are left out), the total time, and
the peak memory of the whole call (CPU: profiler allocation events; CUDA: the allocator's peak).

    python benchmarks/sampling.py                                  # CPU, mid-size transformer
    python benchmarks/sampling.py --size 2b --device cuda --dtype bfloat16 --height 480 --width 832 --frames 49
    ... --compile              # both transformers compiled per block (ours: --compile; diffusers:
                               # compile_repeated_blocks); the first step, which compiles, is not timed
    ... --guidance-passes split  # ours: the two guidance passes as two unpadded calls (auto: split on a GPU)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from diffusers.utils import logging as diffusers_logging
from measure import device_name, peak_memory, sync
from transformers.utils import logging as transformers_logging

from motif_video.cli.common import silence_libraries
from motif_video.config import get_preset
from motif_video.random_weights import build_random_pipeline, tiny_transformer_config
from motif_video.sampling.pipeline import MotifVideoPipeline

SIZES = {
    "small": tiny_transformer_config(text_dim=256).replace(
        num_heads=4,
        head_dim=64,
        rope_axes_dim=(16, 24, 24),
        num_dual_blocks=3,
        num_single_blocks=3,
        num_decoder_blocks=2,
        cross_attention_dual=False,
    ),
    "2b": get_preset("motif-video-2b").replace(
        cross_attention_kv="separate", in_channels=9, out_channels=4, text_dim=256
    ),
}
PROMPT = "a red circle moves left on gray background"


def run_ours(pipe: MotifVideoPipeline, args) -> list[float]:
    stamps: list[float] = []

    def on_step(i: int, n: int) -> None:
        sync(args.device)
        stamps.append(time.perf_counter())

    pipe(
        PROMPT,
        height=args.height,
        width=args.width,
        frames=args.frames,
        steps=args.steps,
        seed=0,
        progress=False,
        on_step=on_step,
        guidance_passes=args.guidance_passes,
    )
    return stamps


def run_diffusers(pipe, args) -> list[float]:
    stamps: list[float] = []

    def on_step(p, i, t, kwargs):
        sync(args.device)
        stamps.append(time.perf_counter())
        return {}

    pipe(
        prompt=PROMPT,
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        num_inference_steps=args.steps,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        callback_on_step_end=on_step,
    )
    return stamps


def main() -> None:
    silence_libraries()  # torchao's, torch's and diffusers' notices, as the CLI silences them
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both pipelines")
    parser.add_argument("--compile", action="store_true", help="torch.compile both transformers block by block")
    parser.add_argument("--guidance-passes", choices=["auto", "batched", "split"], default="auto")
    args = parser.parse_args()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    dtype = getattr(torch, args.dtype)

    from diffusers import MotifVideoPipeline as DiffusersPipeline

    with tempfile.TemporaryDirectory() as root:
        build_random_pipeline(root, SIZES[args.size])
        ours = MotifVideoPipeline.from_pretrained(root, dtype=dtype, device=args.device, compile=args.compile)
        theirs = DiffusersPipeline.from_pretrained(root, torch_dtype=dtype).to(args.device)
        if args.compile:
            theirs.transformer.compile_repeated_blocks()
        theirs.set_progress_bar_config(disable=True)
        per_step: dict[str, list[float]] = {"ours": [], "diffusers": []}
        total: dict[str, list[float]] = {"ours": [], "diffusers": []}
        for _ in range(args.rounds):
            for name, runner, pipe in (("ours", run_ours, ours), ("diffusers", run_diffusers, theirs)):
                start = time.perf_counter()
                stamps = runner(pipe, args)
                sync(args.device)
                total[name].append(time.perf_counter() - start)
                per_step[name].append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
        peaks = {
            "ours": peak_memory(lambda: run_ours(ours, args), args.device),
            "diffusers": peak_memory(lambda: run_diffusers(theirs, args), args.device),
        }
        params = ours.transformer.num_parameters()

    step = {k: statistics.median(v) for k, v in per_step.items()}
    whole = {k: statistics.median(v) for k, v in total.items()}
    print(f"device: {device_name(args.device)}; torch {torch.__version__}; dtype {args.dtype}")
    print(
        f"transformer: {args.size} ({params / 1e6:.1f} M params); {args.width}x{args.height}, {args.frames} frames, "
        f"{args.steps} steps, APG (two transformer passes per step: ours {ours.last_passes})"
        + (", compiled per block" if args.compile else "")
    )
    print(
        f"time per step  ours {step['ours'] * 1e3:9.1f} ms  diffusers {step['diffusers'] * 1e3:9.1f} ms  "
        f"ratio {step['ours'] / step['diffusers']:.3f}"
    )
    print(
        f"total          ours {whole['ours']:9.2f} s   diffusers {whole['diffusers']:9.2f} s   "
        f"ratio {whole['ours'] / whole['diffusers']:.3f}"
    )
    print(
        f"peak memory    ours {peaks['ours'] / 2**20:9.1f} MiB diffusers {peaks['diffusers'] / 2**20:9.1f} MiB "
        f"ratio {peaks['ours'] / max(peaks['diffusers'], 1):.3f}"
    )


if __name__ == "__main__":
    main()
