"""A distilled student vs its teacher, side by side: shapes benchmark, passes and wall time per video.

Rows: the teacher as it ships (its steps, guidance: two passes a step), the teacher cut to the
student's steps (what distillation is for), and the student at 4, 2 and 1 steps (one pass a step).
Every row generates the same prompts with the same seeds; the last column is the largest gap to the
teacher over the benchmark's columns (colour, shape, motion, stability) of both splits.

    python benchmarks/distillation.py --student shapes-tiny-4step --count 16
"""

from __future__ import annotations

import argparse
import time

import torch
from measure import device_name

from motif_video.cli.common import silence_libraries
from motif_video.embedded import manifest, resolve_weights
from motif_video.eval.shapes import evaluate
from motif_video.sampling.guidance import GuidanceConfig
from motif_video.sampling.pipeline import MotifVideoPipeline

COLUMNS = ("color", "shape", "motion", "stability")


def main() -> None:
    silence_libraries()  # torchao's, torch's and diffusers' notices, as the CLI silences them
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="shapes-tiny-4step", help="the student (folder or shipped name)")
    parser.add_argument("--teacher", default=None, help="the teacher (default: the one the student names)")
    parser.add_argument("--count", type=int, default=16, help="prompts per split")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 2, 1], help="the student's step counts")
    args = parser.parse_args()
    student_dir = resolve_weights(args.student)
    info = manifest(student_dir).get("distilled")
    if not info:
        parser.error(f"{student_dir} is not a distilled student (its manifest has no 'distilled' entry)")
    teacher_dir = resolve_weights(args.teacher or info["teacher"])
    size = {k: manifest(student_dir)["defaults"][k] for k in ("height", "width", "frames")}
    teacher, student = MotifVideoPipeline.from_pretrained(teacher_dir), MotifVideoPipeline.from_pretrained(student_dir)
    names = f"teacher {teacher_dir.name}, student {student_dir.name}"
    print(f"{device_name('cpu')}; {size}; {names}; {args.count} prompts a split")

    recorded = info["guidance"]  # the guidance the student learned from, not the teacher folder's default
    guidance = GuidanceConfig(**{**recorded, "norm_dims": tuple(recorded["norm_dims"])})
    negative = info.get("negative_prompt", "")

    def run(pipe, steps: int, guidance: GuidanceConfig) -> dict:
        def generate(caption: str, index: int):
            out = pipe(caption, **size, steps=steps, guidance=guidance, negative_prompt=negative, seed=index,
                       progress=False)  # fmt: skip
            return out.uint8()[0]

        started = time.perf_counter()
        with torch.no_grad():
            report = evaluate(generate, count=args.count)
        seconds = (time.perf_counter() - started) / (2 * args.count)
        passes = steps * (2 if guidance.active else 1)
        return {"report": report, "seconds": seconds, "passes": passes}

    rows = [(f"teacher, {info['teacher_steps']} steps", run(teacher, info["teacher_steps"], guidance))]
    rows.append((f"teacher, {info['steps']} steps", run(teacher, info["steps"], guidance)))
    for steps in args.steps:
        rows.append((f"student, {steps} steps", run(student, steps, student.guidance)))
    base = rows[0][1]
    print(
        "| sampler | passes | s / video | time ratio | trained: color / shape / motion / stability | "
        "held-out: color / shape / motion / stability | largest gap |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        cells, gap = [], 0.0
        for split in ("trained", "held_out"):
            m, t = r["report"][split]["mean"], base["report"][split]["mean"]
            cells.append(" / ".join(f"{m[c]:.3f}" for c in COLUMNS))
            gap = max(gap, *(abs(m[c] - t[c]) for c in COLUMNS))
        ratio = r["seconds"] / base["seconds"]
        print(f"| {name} | {r['passes']} | {r['seconds']:.2f} | {ratio:.3f} | {cells[0]} | {cells[1]} | {gap:.3f} |")


if __name__ == "__main__":
    main()
