"""The curriculum: stage files, the compute planner, and the micro curriculum end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from motif_video.cli import main
from motif_video.random_weights import build_curriculum_parts
from motif_video.sampling.pipeline import MotifVideoPipeline
from motif_video.training import curriculum
from motif_video.training.compute import Routing, gpu_hours, training_flops
from motif_video.training.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_2b_stages_mirror_the_report_table():
    stages = curriculum.load(CONFIGS / "motif-video-2b")
    assert [s.name[:2] for s in stages] == [f"{i:02d}" for i in range(1, 11)]
    text = [s.cfg.text.encoder for s in stages]
    assert text == ["sentence"] * 3 + ["t5gemma2"] * 7
    teachers = [s.cfg.repa.teacher if s.cfg.repa.enabled else "off" for s in stages]
    assert teachers == ["dinov2", "vjepa2", "vjepa2"] + ["off"] * 7
    sca = [s.cfg.model.transformer().cross_attention_single for s in stages]
    assert sca == [False] * 8 + [True] * 2  # inserted at stage 9
    assert stages[0].cfg.stage.task == "t2i" and all(s.cfg.stage.task == "t2iv" for s in stages[1:])
    assert stages[7].cfg.stage.init == "07-sft-480p"  # 720p starts from the 480p SFT result
    assert [s.cfg.stage.sft for s in stages].count(True) == 2
    assert all(s.cfg.stage.caption_variants == (0.5, 0.3, 0.2) and s.cfg.flow.caption_dropout == 0.1 for s in stages)
    assert max(stages[-1].cfg.stage.frame_buckets) == 121 and stages[-1].cfg.stage.video_size == (720, 1280)


def test_planner_counts_each_stage_from_its_config(capsys):
    stages = curriculum.load(CONFIGS / "motif-video-2b")
    result = curriculum.plan(stages, "h200", 64, 0.4)
    first = stages[0].cfg
    model = first.model.transformer()
    routing = Routing(first.tread.start, model.num_dual_blocks + model.num_single_blocks + first.tread.end, 0.5)
    tokens = model.num_video_tokens(1, 144 // 8, 256 // 8)
    expected = first.train.steps * first.stage.image_batch_size * training_flops(model, tokens, 1, routing=routing)
    assert result["stages"][0]["flops"] == pytest.approx(expected)
    assert result["stages"][0]["gpu_hours"] == pytest.approx(gpu_hours(expected, "h200", 0.4))
    assert result["total_gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in result["stages"]))
    # a 720p stage costs more per step than a 144p one
    assert result["stages"][7]["flops"] / stages[7].cfg.train.steps > result["stages"][1]["flops"] / 40_000
    assert main(["plan", str(CONFIGS / "motif-video-2b"), "--gpu", "h200", "--gpus", "64"]) == 0
    table = capsys.readouterr().out
    assert "| 09-sca-360p-121f |" in table and "of the report's budget (< 100,000 H200 GPU-hours)" in table


def test_stage_files_are_checked(tmp_path):
    stage = (CONFIGS / "micro-curriculum" / "02-t2iv-144p-33f.toml").read_text()
    (tmp_path / "a.toml").write_text(stage)
    with pytest.raises(ValueError, match="the first stage cannot start from 'previous'"):
        curriculum.load(tmp_path)
    (tmp_path / "a.toml").write_text(stage.replace('init = "previous"', 'init = "zz"'))
    with pytest.raises(ValueError, match="init 'zz' is not an earlier stage"):
        curriculum.load(tmp_path)
    (tmp_path / "a.toml").write_text(stage.replace('interleave = "IVV"', 'interleave = "IXV"'))
    with pytest.raises(ValueError, match="a.toml: stage.interleave must be a pattern of I and V, got 'IXV'"):
        curriculum.load(tmp_path)


@pytest.mark.slow
def test_micro_curriculum_runs_every_transition_resumes_and_generates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(CONFIGS / "micro-curriculum", "micro")
    build_curriculum_parts("runs/micro-curriculum/parts")
    assert main(["curriculum", "run", "micro", "--until", "03-t2iv-144p-65f", "--quiet"]) == 0
    record_file = Path("runs/micro-curriculum/curriculum.json")
    assert list(json.loads(record_file.read_text())["stages"]) == [
        "01-t2i-144p",
        "02-t2iv-144p-33f",
        "03-t2iv-144p-65f",
    ]
    first = Path("runs/micro-curriculum/01-t2i-144p/ema-transformer/diffusion_pytorch_model.safetensors")
    stamp = first.stat().st_mtime_ns
    assert main(["curriculum", "run", "micro", "--quiet"]) == 0  # resumes across stages: 1-3 are not redone
    assert first.stat().st_mtime_ns == stamp
    stages = json.loads(record_file.read_text())["stages"]
    assert len(stages) == 10 and all(s["status"] == "done" for s in stages.values())
    assert "text encoder sentence (48) -> t5gemma2 (32)" in stages["04-t2iv-360p-65f"]["transitions"]
    assert "REPA teacher vjepa2 -> off" in stages["04-t2iv-360p-65f"]["transitions"]
    assert "REPA teacher dinov2 -> vjepa2" in stages["02-t2iv-144p-33f"]["transitions"]
    assert "Shared Cross-Attention inserted (single blocks)" in stages["09-sca-360p-121f"]["transitions"]
    assert stages["08-t2iv-720p-121f"]["init_from"].endswith("07-sft-480p/ema-transformer")
    pipe = MotifVideoPipeline.from_pretrained("runs/micro-curriculum/10-t2iv-720p-final-sft/pipeline")
    assert pipe.transformer.cfg.cross_attention_single and pipe.transformer.cfg.text_dim == 32
    video = pipe("a red circle moves up", height=80, width=80, frames=17, steps=2, progress=False).frames
    assert video.shape == (1, 17, 80, 80, 3)


def test_interleave_pattern_makes_image_steps_from_video_batches():
    from motif_video.training.objective import first_frames, step_kind

    cfg = curriculum.load(CONFIGS / "micro-curriculum")[2].cfg  # 03: pattern IVV on 9-frame clips
    assert [step_kind(cfg, s) for s in range(6)] == ["I", "V", "V", "I", "V", "V"]
    video = {"latents": torch.randn(2, 16, 3, 4, 4), "captions": ["a", "b"], "video": torch.randn(2, 3, 9, 16, 16)}
    image = first_frames(video)
    assert image["latents"].shape == (2, 16, 1, 4, 4) and torch.equal(
        image["latents"][:, :, 0], video["latents"][:, :, 0]
    )
    assert image["video"].shape == (2, 3, 1, 16, 16) and image["captions"] == ["a", "b"]
    assert step_kind(TrainConfig(), 0) is None  # not a curriculum stage
