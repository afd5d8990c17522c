"""`motif-video eval vbench`: the suite plan, sharding, resuming, the scorer protocol and VBench's
aggregation. The real `vbench` cannot be installed beside torch 2.13 (see docs), so the scorer here
is a stand-in package with the same entry points (`vbench.VBench(...).evaluate`, `vbench.cli.vbench`)
that finds videos exactly the way VBench's standard mode does and logs every call."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from motif_video.cli import main
from motif_video.eval import vbench
from motif_video.random_weights import build_random_pipeline

SUITE = [
    {"prompt_en": "In a still frame, a stop sign", "dimension": ["temporal_flickering"]},
    {"prompt_en": "a person is riding a bike", "dimension": ["subject_consistency", "dynamic_degree"]},
    {"prompt_en": "a red car", "dimension": ["color"]},
]


def test_aggregate_matches_vbench_on_fixed_numbers():
    raw = {
        "subject_consistency": 0.9538,
        "background_consistency": 0.9574,
        "temporal_flickering": 0.9816,
        "motion_smoothness": 0.985,
        "dynamic_degree": 0.62,
        "aesthetic_quality": 0.61,
        "imaging_quality": 0.655,
        "object_class": 0.9293,
        "multiple_objects": 0.7729,
        "human_action": 0.95,
        "color": 0.86,
        "spatial_relationship": 0.8302,
        "scene": 0.52,
        "appearance_style": 0.215,
        "temporal_style": 0.25,
        "overall_consistency": 0.265,
    }
    # Expected values: VBench's own scripts/cal_final_score.py (commit 45e79ec) on the same numbers.
    summary = vbench.aggregate(raw)
    assert summary["complete"]
    assert summary["quality"] == pytest.approx(0.8262595385538819, abs=1e-12)
    assert summary["semantic"] == pytest.approx(0.7935520664151388, abs=1e-12)
    assert summary["total"] == pytest.approx(0.8197180441261332, abs=1e-12)
    # dynamic degree weighs half: zeroing it moves Quality by 0.5 * 0.62 / 6.5
    zero = vbench.aggregate({**raw, "dynamic_degree": 0.0})
    assert zero["quality"] == pytest.approx(0.7785672308615742, abs=1e-12)
    assert zero["total"] == pytest.approx(0.7815641979722872, abs=1e-12)
    partial = vbench.aggregate({"temporal_flickering": 1.0})
    assert not partial["complete"] and partial["quality"] == pytest.approx(1.0) and partial["semantic"] is None
    with pytest.raises(ValueError, match=r"unknown VBench dimensions \['sharpness'\]"):
        vbench.aggregate({"sharpness": 0.5})


def test_plan_gives_every_video_its_own_seed():
    jobs = vbench.plan(SUITE, list(vbench.DIMENSIONS))
    assert [(j.folder, j.prompt) for j in jobs].count(("flicker", SUITE[0]["prompt_en"])) == 25
    assert sum(j.folder == "videos" for j in jobs) == 10  # 5 per prompt
    assert [j.seed for j in jobs] == list(range(2, 2 + 35))
    assert jobs[25].name == "a person is riding a bike-0.mp4"
    only_color = vbench.plan(SUITE, ["color"])
    assert [j.prompt for j in only_color] == ["a red car"] * 5
    with pytest.raises(ValueError, match="unknown VBench dimensions"):
        vbench.plan(SUITE, ["colour"])


def test_ranks_share_the_suite_without_overlap(tmp_path):
    jobs = vbench.plan(SUITE, ["subject_consistency", "color"], per_prompt=3)
    made = []

    def generate(prompt: str, seed: int) -> np.ndarray:
        made.append(seed)
        return np.full((5, 16, 16, 3), seed % 255, np.uint8)

    counts = [vbench.generate_suite(generate, jobs, tmp_path, fps=8, rank=r, world=2, progress=False) for r in (0, 1)]
    assert counts == [3, 3] and sorted(made) == [j.seed for j in jobs]
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == sorted(j.name for j in jobs)
    assert vbench.generate_suite(generate, jobs, tmp_path, fps=8, progress=False) == 0  # all there: nothing redone


STAND_IN = {
    "vbench/__init__.py": """
        import json, os
        from pathlib import Path
        LOG = Path(os.environ["VBENCH_CACHE_DIR"]) / "calls.log"

        class VBench:
            def __init__(self, device, full_info_dir, output_path):
                self.full_info, self.output = json.loads(Path(full_info_dir).read_text()), Path(output_path)

            def evaluate(self, videos_path, name, dimension_list, local=False, **kwargs):
                # VBench's standard mode: videos named {prompt}-{i}{postfix}, i < 5, for the prompts of a dimension
                names = set(os.listdir(videos_path))
                found = [f"{e['prompt_en']}-{i}.mp4" for e in self.full_info for i in range(5)
                         if set(dimension_list) & set(e["dimension"]) and f"{e['prompt_en']}-{i}.mp4" in names]
                with open(LOG, "a") as log:
                    log.write(f"evaluate {name} {len(found)}\\n")
                results = {d: [len(found) / 10, [{"video_path": f} for f in found]] for d in dimension_list}
                (self.output / f"{name}_eval_results.json").write_text(json.dumps(results))
        """,
    "vbench/cli/__init__.py": "",
    "vbench/cli/vbench.py": """
        import os, shutil, sys
        from pathlib import Path

        def main():
            args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
            assert sys.argv[1] == "static_filter", sys.argv
            target = Path(args["--result_path"]) / "filtered_videos"
            target.mkdir(parents=True, exist_ok=True)
            videos = sorted(Path(args["--videos_path"]).iterdir())
            for v in videos[:5]:  # 'static' = the first five
                shutil.copy(v, target / v.name)
            with open(Path(os.environ["VBENCH_CACHE_DIR"]) / "calls.log", "a") as log:
                log.write(f"static_filter {len(videos)} {args['--model']}\\n")
        """,
}


@pytest.mark.slow
def test_cli_generates_scores_aggregates_and_resumes(tmp_path, monkeypatch, capsys):
    build_random_pipeline(tmp_path / "weights")
    for name, text in STAND_IN.items():
        (tmp_path / "env" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "env" / name).write_text(textwrap.dedent(text))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "env"))
    (tmp_path / "evaluators").mkdir()
    (tmp_path / "suite.json").write_text(json.dumps(SUITE))
    out = tmp_path / "out"
    argv = [
        "eval", "vbench", "--weights", str(tmp_path / "weights"), "--vbench-python", sys.executable,
        "--vbench-weights", str(tmp_path / "evaluators"), "--suite", str(tmp_path / "suite.json"),
        "--dimensions", "temporal_flickering", "subject_consistency", "--per-prompt", "2", "--per-flicker-prompt",
        "6", "--height", "32", "--width", "32", "--frames", "5", "--steps", "2", "--fps", "8", "--out", str(out),
        "--scorer-device", "cpu", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    assert len(list((out / "flicker").iterdir())) == 6 and len(list((out / "videos").iterdir())) == 2
    log = (tmp_path / "evaluators" / "calls.log").read_text().splitlines()
    assert log[0].startswith("static_filter 6 ") and log[0].endswith("raft_model/models/raft-things.pth")
    # VBench found the 5 filtered flicker videos and the 2 subject-consistency videos by their names
    assert log[1:] == ["evaluate temporal_flickering 5", "evaluate subject_consistency 2"]
    summary = json.loads((out / "vbench.json").read_text())
    assert summary["dimensions"] == {"temporal_flickering": 0.5, "subject_consistency": 0.2}
    assert summary["quality"] == pytest.approx(((0.5 - 0.6293) / (1 - 0.6293) + (0.2 - 0.1462) / (1 - 0.1462)) / 2)
    table = (out / "vbench.md").read_text()
    assert "| Motif-Video 2B (report) | 83.76 |" in table and "partial" in table

    # Resume: nothing is generated or scored again; a deleted video and a deleted result are redone.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == stamps
    assert len((tmp_path / "evaluators" / "calls.log").read_text().splitlines()) == 3
    (out / "videos" / "a person is riding a bike-1.mp4").unlink()
    (out / "results" / "subject_consistency_eval_results.json").unlink()
    assert main(argv) == 0
    log = (tmp_path / "evaluators" / "calls.log").read_text().splitlines()
    assert log[3:] == ["evaluate subject_consistency 2"]
    changed = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert [p.name for p in changed] == ["a person is riding a bike-1.mp4"]


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["eval", "vbench", "--suite", "x.json"]) == 2
    assert "needs --vbench-python and --vbench-weights" in capsys.readouterr().err
    assert main(["eval", "vbench", "--generate-only", "--suite", str(tmp_path / "nope.json")]) == 2
    assert "cannot read the VBench prompt suite" in capsys.readouterr().err
    assert main(["eval", "vbench", "--vbench-python", sys.executable, "--vbench-weights", str(tmp_path)]) == 2
    assert "no `vbench` package in" in capsys.readouterr().err
