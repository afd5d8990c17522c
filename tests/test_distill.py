"""Few-step distillation (`motif-video distill`): trajectories, the student's objective, resume, LoRA
students, the exported pipeline driving generate and the page, and the released layout under torchrun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import kill_after_steps
from motif_video.cli import main
from motif_video.random_weights import build_random_pipeline
from motif_video.sampling.pipeline import DEFAULT_NEGATIVE_PROMPT
from motif_video.training.distill import Trajectories, load_distill_config, trajectory_inputs

SCRIPT = Path(sys.executable).parent / "motif-video"
PROMPTS = ["a red circle moves left", "a blue square moves up", "a green triangle moves down on a gray background"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A released-layout pipeline (T5Gemma2, Wan VAE, the released APG guider) with tiny random weights."""
    root = tmp_path_factory.mktemp("teacher") / "pipeline"
    build_random_pipeline(root, guider="apg")
    return root


def distill_config(tmp_path: Path, teacher: Path, *overrides: str) -> Path:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    config = tmp_path / "distill.toml"
    config.write_text(
        f"""
[distill]
teacher = {json.dumps(str(teacher))}
steps = 2
teacher_steps = 4
samples = 8
batch = 4
shard_size = 2
prompts = {json.dumps(str(prompts))}
height = 32
width = 32
frames = 5

[data]
batch_size = 4

[flow]
caption_dropout = 0.0
i2v_fraction = 0.0

[optim]
lr = 1e-3
warmup_steps = 1

[train]
steps = 12
save_every = 4
ema_decay = 0.0
log_every = 1
out_dir = {json.dumps(str(tmp_path / "run"))}
"""
    )
    return config


@pytest.fixture(scope="module")
def reference(tmp_path_factory, teacher) -> tuple[Path, Path]:
    """(config, run folder) of one uninterrupted 12-step distillation, one process: the reference of the
    resume and torchrun tests (constant lr, so its first steps are those of a shorter run) and the
    student the export / generate / page test loads."""
    root = tmp_path_factory.mktemp("reference")
    config = distill_config(root, teacher)
    run_distill(config)
    return config, root / "run"


def run_distill(config: Path, *args: str, launcher: tuple[str, ...] = (str(SCRIPT),)) -> subprocess.CompletedProcess:
    command = [*launcher, "distill", str(config), *args, "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_step_of_the_target_velocity_lands_on_the_teachers_next_state():
    """The "trajectory" objective: from state k at sigma_k, one Euler step with the target reaches state
    k + 1 exactly; "reflow": the straight path from the stored noise to the teacher's sample."""
    trajectory = torch.randn(6, 5, 4, 2, 3, 3)  # [B, K + 1, Z, F, H, W]
    sigmas = torch.tensor([1.0, 0.9, 0.7, 0.4, 0.0])
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    xt, t, target = trajectory_inputs(trajectory, sigmas, "trajectory", torch.rand(6), gens)
    for i in range(6):
        k = int((sigmas - t[i]).abs().argmin())
        assert k < 4 and torch.equal(xt[i], trajectory[i, k])
        torch.testing.assert_close(xt[i] - (sigmas[k] - sigmas[k + 1]) * target[i], trajectory[i, k + 1])
    assert len({float(v) for v in t}) > 1  # the times are drawn per sample
    times = torch.rand(6)
    xt, t, target = trajectory_inputs(trajectory, sigmas, "reflow", times, gens)
    torch.testing.assert_close(target, trajectory[:, 0] - trajectory[:, -1])
    torch.testing.assert_close(
        xt, (1 - times.view(-1, 1, 1, 1, 1)) * trajectory[:, -1] + times.view(-1, 1, 1, 1, 1) * trajectory[:, 0]
    )


def test_trajectories_are_the_teachers_own_guided_states(tmp_path, teacher):
    """The stored states are the teacher pipeline's 4-step guided sampling at the student's times; a
    missing shard is made again identical, and others are not rewritten; changed settings are refused."""
    from motif_video import distributed
    from motif_video.sampling.pipeline import MotifVideoPipeline
    from motif_video.training.distill import write_trajectories

    cfg = load_distill_config(distill_config(tmp_path, teacher))
    root = write_trajectories(cfg, distributed.init(), progress=False)
    data = Trajectories(root)
    assert len(data) == 8 and data.captions[:3] == PROMPTS and data.sigmas[0] == 1 and data.sigmas[-1] == 0
    assert data.sigmas.shape == (3,)  # the student's 2 steps: 3 times

    pipe = MotifVideoPipeline.from_pretrained(teacher)
    noise = torch.Generator().manual_seed(1)  # trajectory 1 of seed 0
    options = dict(height=32, width=32, frames=5, steps=4, negative_prompt=DEFAULT_NEGATIVE_PROMPT, progress=False)
    out = pipe(PROMPTS[1], generators=[noise], **options)  # as generate makes it (the teacher has no manifest)
    shard = load_file(str(root / "shard-00000.safetensors"))
    torch.testing.assert_close(shard["states"][1, -1], out.latents[0].float(), rtol=1e-4, atol=1e-5)
    trace: list = []
    pipe(PROMPTS[1], generators=[torch.Generator().manual_seed(1)], trace=trace, decode=False, **options)
    torch.testing.assert_close(shard["states"][1, 1], trace[2].float()[0], rtol=1e-4, atol=1e-5)  # sigma at step 2 of 4

    # the diffusers scheduler the student samples with, stepped with the training targets, lands on the states
    from motif_video.sampling.schedule import load_scheduler, set_timesteps

    states = shard["states"][0]
    schedule = load_scheduler(pipe.scheduler_config)
    timesteps = set_timesteps(schedule, 2, pipe.transformer.cfg.num_video_tokens(*states.shape[2:]), "cpu")
    torch.testing.assert_close(schedule.sigmas.float(), data.sigmas)
    for k, t in enumerate(timesteps):
        slope = (states[k] - states[k + 1]) / (data.sigmas[k] - data.sigmas[k + 1])
        stepped = schedule.step(slope[None], t, states[k][None], return_dict=False)[0][0]
        torch.testing.assert_close(stepped, states[k + 1], rtol=1e-5, atol=1e-5)

    kept = (root / "shard-00001.safetensors").stat().st_mtime_ns
    before = load_file(str(root / "shard-00002.safetensors"))
    (root / "shard-00002.safetensors").unlink()
    write_trajectories(cfg, distributed.init(), progress=False)
    assert (root / "shard-00001.safetensors").stat().st_mtime_ns == kept
    again = load_file(str(root / "shard-00002.safetensors"))
    assert torch.equal(again["states"], before["states"]) and torch.equal(again["text"], before["text"])
    changed = load_distill_config(distill_config(tmp_path, teacher), ["distill.teacher_steps=6"])
    with pytest.raises(ValueError, match=r"other settings \(teacher_steps 4 -> 6.*set data.path to a new folder"):
        write_trajectories(changed, distributed.init(), progress=False)


@pytest.mark.slow
def test_killed_distillation_resumes_exactly(tmp_path, reference):
    config, ref = reference
    run = tmp_path / "killed"
    command = [str(SCRIPT), "distill", str(config), "--quiet", f"train.out_dir={json.dumps(str(run))}"]
    kill_after_steps(command, run, 6)
    assert len(metrics(run)) < 12
    result = run_distill(config, f"train.out_dir={json.dumps(str(run))}")
    assert "resumed from" in result.stdout + result.stderr
    expected, got = metrics(ref), metrics(run)
    assert [m["step"] for m in got] == list(range(12))
    for a, b in zip(expected, got, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7), a["step"]


@pytest.mark.slow
def test_student_pipeline_drives_generate_with_its_steps_and_one_pass(tmp_path, reference):
    run = reference[1]
    student = run / "pipeline"
    manifest = json.loads((student / "manifest.json").read_text())
    assert manifest["defaults"]["steps"] == 2 and manifest["distilled"]["teacher_steps"] == 4
    assert manifest["distilled"]["guidance"]["kind"] == "apg" and manifest["distilled"]["guidance"]["scale"] == 8.0
    assert manifest["defaults"]["negative_prompt"] == DEFAULT_NEGATIVE_PROMPT  # the teacher's, as generate takes it
    again = tmp_path / "exported"  # `motif-video export` of the run makes the same student
    assert main(["export", str(run), "--out", str(again)]) == 0
    assert json.loads((again / "manifest.json").read_text())["distilled"] == manifest["distilled"]
    assert (again / "guider" / "guider_config.json").read_text() == (
        student / "guider" / "guider_config.json"
    ).read_text()
    out = tmp_path / "video.mp4"
    assert main(["generate", PROMPTS[0], "--weights", str(student), "--out", str(out), "--quiet"]) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["steps"] == 2 and sidecar["guidance_passes"] is None  # 2 steps, the conditional pass only
    assert sidecar["distilled"]["steps"] == 2
    assert (sidecar["height"], sidecar["width"], sidecar["frames"]) == (32, 32, 5)

    from motif_video.serve import Studio

    studio = Studio(student, "cpu", torch.float32, tmp_path / "page")
    assert studio.presets.steps == 2 and not studio.pipe.guidance.active
    assert "2-step student" in studio.description()


@pytest.mark.slow
def test_lora_student_applies_to_its_base_and_changes_the_output(tmp_path, teacher):
    from motif_video.sampling.pipeline import MotifVideoPipeline

    config = distill_config(tmp_path, teacher)
    run_distill(config, "model.lora_rank=4", "train.steps=4", "optim.lr=1e-2")
    adapter = tmp_path / "run" / "lora.safetensors"
    assert adapter.is_file() and (tmp_path / "run" / "pipeline" / "lora.safetensors").is_file()
    options = dict(height=32, width=32, frames=5, steps=2, seed=3, progress=False)
    base = MotifVideoPipeline.from_pretrained(teacher)
    with_lora = MotifVideoPipeline.from_pretrained(teacher, lora=adapter)
    merged = MotifVideoPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    guidance = merged.guidance  # the student's one pass, for all three
    a = base(PROMPTS[0], guidance=guidance, **options).latents
    b = with_lora(PROMPTS[0], guidance=guidance, **options).latents
    c = merged(PROMPTS[0], **options).latents
    assert (a - b).abs().max() > 1e-3  # the adapter changes the output
    torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-4)  # and equals the exported student


@pytest.mark.slow
def test_released_layout_distils_under_torchrun(tmp_path, reference):
    """The 2B path: the released layout (T5Gemma2 text, Wan VAE, APG) on two gloo processes; the ranks
    share the shards out, and shards and losses equal the one-process run's up to float rounding."""
    config, one = reference
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "motif_video")
    two = tmp_path / "two"
    run_distill(config, "train.steps=4", f"train.out_dir={json.dumps(str(two))}", launcher=torchrun)
    assert sorted(p.name for p in (two / "teacher").glob("shard-*")) == [f"shard-0000{j}.safetensors" for j in range(4)]
    for j in range(4):
        a = load_file(str(two / "teacher" / f"shard-0000{j}.safetensors"))["states"]
        b = load_file(str(one / "teacher" / f"shard-0000{j}.safetensors"))["states"]
        torch.testing.assert_close(a, b)
    two_losses = metrics(two)
    assert len(two_losses) == 4
    for x, y in zip(metrics(one)[:4], two_losses, strict=True):  # constant lr: a 12-step run's first 4 steps
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5), x["step"]
    assert json.loads((two / "pipeline" / "manifest.json").read_text())["defaults"]["steps"] == 2


def test_shipped_names_and_bad_distill_settings(tmp_path, teacher, capsys):
    from motif_video.embedded import resolve_weights, shipped

    assert {"shapes-tiny", "shapes-tiny-4step"} <= set(shipped())
    assert resolve_weights("shapes-tiny-4step").name == "shapes-tiny-4step"
    assert main(["generate", "x", "--weights", "no-such-model", "--out", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err
    assert "--weights no-such-model: no such folder, and not a shipped model (shapes-tiny, shapes-tiny-4step" in err
    config = distill_config(tmp_path, teacher)
    assert main(["distill", str(config), "distill.teacher_steps=5", "--quiet"]) == 2
    assert "distill.teacher_steps (5) must be a multiple of distill.steps (2)" in capsys.readouterr().err
    assert main(["distill", str(config), "distill.height=0", "--quiet"]) == 2
    assert "has no default video size (manifest.json): set distill.height" in capsys.readouterr().err
    assert main(["distill", str(config), "distill.height=40", "--quiet"]) == 2  # checked before anything is written
    assert "height and width must be positive multiples of 16, got 40 x 32" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["distill", str(config), "distill.teacher='shapes-tiny-4step'", "--quiet"]) == 2
    assert "is itself a 4-step student; distil its teacher (shapes-tiny) instead" in capsys.readouterr().err
    assert main(["distill", str(config), "flow.caption_dropout=0.1", "--quiet"]) == 2
    assert "flow.caption_dropout, flow.i2v_fraction and flow.prefix_fraction must be 0" in capsys.readouterr().err
    assert main(["distill", str(config), "distill.teacher='nothing-here'", "--quiet"]) == 2
    assert "distill.teacher: nothing-here: no such folder, and not a shipped model" in capsys.readouterr().err
    import shutil

    shifted = tmp_path / "shifted"  # a schedule whose K-step times are not on its 20-step schedule
    shutil.copytree(teacher, shifted)
    config_file = shifted / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "shift_terminal": 0.02}))
    assert main(["distill", str(config), f"distill.teacher={json.dumps(str(shifted))}", "--quiet"]) == 2
    assert "does not put the student's 2 times on its 4-step schedule" in capsys.readouterr().err
    cfg = load_distill_config(config)  # what the teacher decides: architecture, start, text, data, samples
    assert cfg.model.init_from == str(teacher / "transformer") and cfg.text.encoder == "precomputed"
    assert cfg.data.path.endswith("run/teacher") and cfg.train.sample_steps == 2 and cfg.flow.i2v_fraction == 0
