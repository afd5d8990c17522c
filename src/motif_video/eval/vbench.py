"""VBench: generate the standard prompt suite, score it with the `vbench` package, aggregate.

    VBench_full_info.json ─▶ jobs (prompt, index, seed) ─▶ videos/{prompt}-{index}.mp4   (our env, sharded by rank)
                                                          └▶ flicker/ (25 per temporal-flickering prompt)
    `vbench` in its own Python (--vbench-python, evaluator weights in VBENCH_CACHE_DIR):
        static_filter: flicker/ ─▶ static/filtered_videos
        VBench.evaluate, one dimension at a time ─▶ results/{dim}_eval_results.json
    results ─▶ VBench's normalisation and weights ─▶ Quality, Semantic, Total ─▶ vbench.json, vbench.md

The `vbench` package cannot live beside this project (it pins transformers 4.33 and pulls a CUDA
torch through torchvision), so it runs in its own environment and talks to us through files.
Sampling follows VBench's prompt-suite instructions: 5 videos per prompt named `{prompt}-{index}.mp4`,
a different seed for each video (here 2, 3, 4, ... in suite order: VBench seeds its sampling with
2), and 25 videos per temporal-flickering prompt, from which VBench's static filter keeps 5 static
ones. Every stage resumes: videos and per-dimension results already on disk are kept.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from motif_video.media import atomic_write, write_json, write_mp4

FLICKER = "temporal_flickering"


@dataclass(frozen=True)
class Dimension:
    group: str  # "quality" | "semantic"
    low: float  # VBench's normalisation range (scripts/constant.py, NORMALIZE_DIC)
    high: float
    weight: float  # DIM_WEIGHT


# VBench's scripts/constant.py: per-dimension normalisation and weights; Total = (4 Q + 1 S) / 5.
DIMENSIONS: dict[str, Dimension] = {
    "subject_consistency": Dimension("quality", 0.1462, 1.0, 1.0),
    "background_consistency": Dimension("quality", 0.2615, 1.0, 1.0),
    "temporal_flickering": Dimension("quality", 0.6293, 1.0, 1.0),
    "motion_smoothness": Dimension("quality", 0.706, 0.9975, 1.0),
    "dynamic_degree": Dimension("quality", 0.0, 1.0, 0.5),
    "aesthetic_quality": Dimension("quality", 0.0, 1.0, 1.0),
    "imaging_quality": Dimension("quality", 0.0, 1.0, 1.0),
    "object_class": Dimension("semantic", 0.0, 1.0, 1.0),
    "multiple_objects": Dimension("semantic", 0.0, 1.0, 1.0),
    "human_action": Dimension("semantic", 0.0, 1.0, 1.0),
    "color": Dimension("semantic", 0.0, 1.0, 1.0),
    "spatial_relationship": Dimension("semantic", 0.0, 1.0, 1.0),
    "scene": Dimension("semantic", 0.0, 0.8222, 1.0),
    "appearance_style": Dimension("semantic", 0.0009, 0.2855, 1.0),
    "temporal_style": Dimension("semantic", 0.0, 0.364, 1.0),
    "overall_consistency": Dimension("semantic", 0.0, 0.364, 1.0),
}
QUALITY_WEIGHT, SEMANTIC_WEIGHT = 4.0, 1.0

# Published rows (percent): the Motif-Video 2B report's Table 3 (as quoted in our notes); None: not
# found. Motif's Quality is not quoted; (5 * 83.76 - 80.44) / 4 = 84.59 follows from VBench's weights.
PUBLISHED = [
    ("Motif-Video 2B (report)", 83.76, None, 80.44),
    ("Wan2.1-T2V-14B (report)", 83.69, None, None),
    ("HunyuanVideo (report)", 83.24, None, None),
]


@dataclass(frozen=True)
class Job:
    prompt: str
    index: int
    seed: int
    folder: str  # "videos" or "flicker"

    @property
    def name(self) -> str:
        return f"{self.prompt}-{self.index}.mp4"


def load_suite(path: str | Path) -> list[dict]:
    """VBench_full_info.json: [{"prompt_en": ..., "dimension": [...]}, ...]."""
    path = Path(path)
    try:
        suite = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the VBench prompt suite {path}: {e}") from None
    if not isinstance(suite, list) or not all("prompt_en" in e and "dimension" in e for e in suite):
        raise ValueError(f"{path} is not a VBench full-info file (a list of {{prompt_en, dimension}})")
    return suite


def check_dimensions(dimensions: list[str]) -> None:
    unknown = [d for d in dimensions if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown VBench dimensions {unknown}; choose from {list(DIMENSIONS)}")


def plan(
    suite: list[dict], dimensions: list[str], per_prompt: int = 5, per_flicker_prompt: int = 25, seed: int = 2
) -> list[Job]:
    """Every video the selected dimensions need, each with its own seed, in suite order."""
    check_dimensions(dimensions)
    jobs, next_seed = [], seed
    for entry in suite:
        wanted = set(entry["dimension"]) & set(dimensions)
        if not wanted:
            continue
        flicker_only = wanted == {FLICKER}
        count, folder = (per_flicker_prompt, "flicker") if flicker_only else (per_prompt, "videos")
        for index in range(count):
            jobs.append(Job(entry["prompt_en"], index, next_seed, folder))
            next_seed += 1
    return jobs


def generate_suite(
    generate: Callable[[str, int], np.ndarray],
    jobs: list[Job],
    out: Path,
    fps: int,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
) -> int:
    """Write this rank's share (every world-th job) of the videos not on disk yet; returns how many."""
    from tqdm.auto import tqdm

    mine = [j for k, j in enumerate(jobs) if k % world == rank and not (out / j.folder / j.name).is_file()]
    for job in tqdm(mine, desc=f"VBench videos (rank {rank})", disable=not progress):
        (out / job.folder).mkdir(parents=True, exist_ok=True)
        write_mp4(generate(job.prompt, job.seed), out / job.folder / job.name, fps=fps)
    return len(mine)


# Run inside the vbench environment: one dimension of VBench's standard evaluation.
_SCORE_ONE = """
import sys
from vbench import VBench
device, info, results, videos, dimension = sys.argv[1:]
VBench(device, info, results).evaluate(videos_path=videos, name=dimension, dimension_list=[dimension], local=True)
"""
_STATIC_FILTER = """
import sys
from vbench.cli.vbench import main
sys.argv = ["vbench", "static_filter", *sys.argv[1:]]
main()
"""


def suite_in(python: str) -> Path:
    """The prompt suite shipped inside the `vbench` package of another Python (found without importing it)."""
    code = "import importlib.util, os; s = importlib.util.find_spec('vbench'); print(os.path.dirname(s.origin))"
    try:
        found = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except OSError as e:
        raise ValueError(f"cannot run --vbench-python {python}: {e}") from None
    if found.returncode != 0:
        raise ValueError(f"no `vbench` package in {python} (pip install vbench into that environment)")
    return Path(found.stdout.strip()) / "VBench_full_info.json"


def score(
    out: Path, dimensions: list[str], python: str, weights: str | Path, suite: Path, device: str = "cuda"
) -> dict[str, float]:
    """Run VBench on the generated folders, one dimension at a time; dimensions with a result file are
    not scored again. Returns {dimension: raw score in [0, 1]}."""
    env = {**os.environ, "VBENCH_CACHE_DIR": str(Path(weights).resolve())}
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    scores = {}
    for dimension in dimensions:
        result = results / f"{dimension}_eval_results.json"
        if not result.is_file():
            videos = out / "videos"
            if dimension == FLICKER:
                static = out / "static"
                if not (static / "done").is_file():
                    raft = Path(weights) / "raft_model" / "models" / "raft-things.pth"
                    args = ["--videos_path", str(out / "flicker"), "--result_path", str(static), "--model", str(raft)]
                    _run([python, "-c", _STATIC_FILTER, *args], env, "VBench static filter")
                    (static / "done").write_text("")
                videos = static / "filtered_videos"
            command = [python, "-c", _SCORE_ONE, device, str(suite), str(results), str(videos), dimension]
            _run(command, env, f"VBench {dimension}")
            if not result.is_file():
                raise RuntimeError(f"VBench {dimension} finished without writing {result}")
        scores[dimension] = float(json.loads(result.read_text())[dimension][0])
    return scores


def _run(command: list[str], env: dict, what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{tail}")


def aggregate(scores: dict[str, float]) -> dict:
    """VBench's aggregation: per dimension (raw - low) / (high - low) * weight; Quality and Semantic are
    the weighted means of their groups, Total = (4 Quality + 1 Semantic) / 5. With dimensions missing
    the groups average what is there and `complete` is false (VBench itself would count them as 0)."""
    check_dimensions(list(scores))
    normalised = {
        d: (s - DIMENSIONS[d].low) / (DIMENSIONS[d].high - DIMENSIONS[d].low) * DIMENSIONS[d].weight
        for d, s in scores.items()
    }

    def group(name: str) -> float | None:
        members = [d for d in scores if DIMENSIONS[d].group == name]
        if not members:
            return None
        return sum(normalised[d] for d in members) / sum(DIMENSIONS[d].weight for d in members)

    quality, semantic = group("quality"), group("semantic")
    if quality is None or semantic is None:
        total = quality if semantic is None else semantic
    else:
        total = (QUALITY_WEIGHT * quality + SEMANTIC_WEIGHT * semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)
    return {
        "dimensions": scores,
        "normalised": normalised,
        "quality": quality,
        "semantic": semantic,
        "total": total,
        "complete": set(scores) == set(DIMENSIONS),
    }


def markdown(summary: dict, name: str) -> str:
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.2f}"

    note = "" if summary["complete"] else " (partial: only the dimensions below)"
    lines = ["| model | Total | Quality | Semantic |", "|---|---|---|---|"]
    lines.append(f"| {name}{note} | {pct(summary['total'])} | {pct(summary['quality'])} | {pct(summary['semantic'])} |")
    for row, total, quality, semantic in PUBLISHED:
        q = "—" if quality is None else f"{quality:.2f}"
        s = "—" if semantic is None else f"{semantic:.2f}"
        lines.append(f"| {row} | {total:.2f} | {q} | {s} |")
    lines += ["", "| dimension | raw | normalised x weight |", "|---|---|---|"]
    for d, raw in summary["dimensions"].items():
        lines.append(f"| {d} | {100 * raw:.2f} | {summary['normalised'][d]:.4f} |")
    return "\n".join(lines) + "\n"


def write_report(summary: dict, out: Path, name: str) -> str:
    table = markdown(summary, name)
    write_json(summary, out / "vbench.json")
    atomic_write(out / "vbench.md", lambda tmp: tmp.write_text(table))
    return table
