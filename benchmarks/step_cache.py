"""Step caching on the embedded model: speed-up vs shapes-benchmark change, thresholds side by side.

For each threshold (None = off) the shapes benchmark runs on the same prompts and seeds; the
script prints the wall time, transformer passes, speed-up over no cache, and the benchmark's
trained / held-out means with their change from no cache.

    python benchmarks/step_cache.py --count 8 --thresholds 0.05 0.1 0.2
"""

from __future__ import annotations

import argparse
import time

import torch
from measure import device_name

from motif_video.cli.common import silence_libraries
from motif_video.embedded import embedded_weights, manifest
from motif_video.eval.shapes import evaluate
from motif_video.sampling.pipeline import MotifVideoPipeline


def main() -> None:
    silence_libraries()  # torchao's, torch's and diffusers' notices, as the CLI silences them
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="pipeline directory (default: the embedded model)")
    parser.add_argument("--count", type=int, default=8, help="prompts per split")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    args = parser.parse_args()
    weights = args.weights or embedded_weights()
    defaults = manifest(weights).get("defaults", {})
    size = {k: defaults.get(k, v) for k, v in {"height": 64, "width": 64, "frames": 17, "steps": 20}.items()}
    pipe = MotifVideoPipeline.from_pretrained(weights)
    print(f"{device_name('cpu')}; {size}")
    rows, base = [], None
    for threshold in [None, *args.thresholds]:
        passes = []

        def generate(caption: str, index: int, threshold=threshold, passes=passes):
            out = pipe(caption, **size, seed=index, progress=False, cache_threshold=threshold)
            passes.append(pipe.last_cache.computed if pipe.last_cache else size["steps"])
            return out.uint8()[0]

        started = time.perf_counter()
        with torch.no_grad():
            report = evaluate(generate, count=args.count)
        seconds = time.perf_counter() - started
        trained, held = report["trained"]["mean"]["mean"], report["held_out"]["mean"]["mean"]
        base = base or (seconds, trained, held)
        rows.append(
            (
                threshold,
                seconds,
                sum(passes) / len(passes),
                base[0] / seconds,
                trained,
                trained - base[1],
                held,
                held - base[2],
            )
        )
    print("| threshold | seconds | passes per video | speed-up | trained mean (change) | held-out mean (change) |")
    print("|---|---|---|---|---|---|")
    for t, s, p, r, tr, dtr, h, dh in rows:
        name = "off" if t is None else f"{t:g}"
        print(f"| {name} | {s:.1f} | {p:.1f} | {r:.2f}x | {tr:.3f} ({dtr:+.3f}) | {h:.3f} ({dh:+.3f}) |")


if __name__ == "__main__":
    main()
