"""The training recipe: flow objective, REPA, TREAD in training, the loop, checkpoints and resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import kill_after_steps
from motif_video.random_weights import build_random_teacher
from motif_video.training import flow
from motif_video.training.alignment import Projector, Teacher, repa_loss, resample_tokens
from motif_video.training.config import TrainConfig
from motif_video.training.train import build, train, train_step

SCRIPT = Path(sys.executable).parent / "motif-video"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "debug.toml"


def tiny_config(tmp_path, *overrides: str) -> TrainConfig:
    return TrainConfig.load(CONFIG, [f"train.out_dir={json.dumps(str(tmp_path / 'run'))}", *overrides])


# -- the objective -------------------------------------------------------------------------------


def test_flow_convention():
    x0, noise = torch.randn(3, 4, 2, 2, 2), torch.randn(3, 4, 2, 2, 2)
    assert torch.equal(flow.interpolate(x0, noise, torch.zeros(3)), x0)  # t = 0 is data
    assert torch.equal(flow.interpolate(x0, noise, torch.ones(3)), noise)  # t = 1 is noise
    # the target is the time derivative of x_t
    t, dt = torch.full((3,), 0.3), 1e-3
    numeric = (flow.interpolate(x0, noise, t + dt) - flow.interpolate(x0, noise, t)) / dt
    torch.testing.assert_close(numeric, flow.velocity_target(x0, noise), rtol=1e-2, atol=1e-2)
    # an Euler step with the exact velocity lands on the data
    xt = flow.interpolate(x0, noise, torch.full((3,), 0.7))
    torch.testing.assert_close(xt - 0.7 * flow.velocity_target(x0, noise), x0)


def test_time_sampling_and_shift():
    g = torch.Generator().manual_seed(0)
    t = flow.sample_times(10_000, g, "logit_normal")
    assert 0 < t.min() and t.max() < 1 and abs(t.median() - 0.5) < 0.02
    shifted = flow.sample_times(10_000, torch.Generator().manual_seed(0), "logit_normal", shift=3.0)
    assert (shifted >= t).all() and shifted.median() > 0.7  # more noise for larger shifts
    assert flow.resolution_shift(1024, 1.0, 256) == 2.0
    # a share at pure noise: the other samples keep the times drawn without it
    mixed = flow.sample_times(10_000, torch.Generator().manual_seed(0), "logit_normal", shift=3.0, noise_fraction=0.2)
    at_one = mixed == 1.0
    assert abs(at_one.float().mean() - 0.2) < 0.02 and torch.equal(mixed[~at_one], shifted[~at_one])
    with pytest.raises(ValueError, match="unknown timestep sampling 'beta'"):
        flow.sample_times(2, g, "beta")


def test_channel_weights_scale_each_channels_share_of_the_loss():
    target = torch.zeros(2, 4, 3, 2, 2)
    prediction = target.clone()
    prediction[:, 1] = 1.0  # an error of 1 in channel 1 only
    assert flow.flow_loss(prediction, target) == pytest.approx(1 / 4)
    assert flow.flow_loss(prediction, target, channel_weights=(1, 4, 1, 1)) == pytest.approx(4 / 4)
    assert flow.flow_loss(prediction, target, channel_weights=(1, 0, 1, 1)) == 0
    prediction[:, 3, :1] = 2.0  # the first frame is a given condition: its error is not counted
    assert flow.flow_loss(prediction, target, 1, channel_weights=(1, 4, 1, 9)) == pytest.approx(4 / 4)


def test_detail_dropout_leaves_the_detail_out_of_xt_and_keeps_the_clean_estimate(tmp_path):
    """flow.detail_dropout: a dropped sample's detail channels are noise alone in x_t, and its target is the
    velocity whose clean estimate is the whole clip; the other channels and samples are as without it."""
    from motif_video.training.objective import make_inputs

    x0, noise, t = torch.randn(3, 6, 2, 2, 2), torch.randn(3, 6, 2, 2, 2), torch.tensor([0.5, 0.7, 0.9])
    xt, target = flow.without_detail(x0, noise, t, 4)
    times = t.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(xt[:, 4:], times * noise[:, 4:])  # no trace of the clip's detail
    torch.testing.assert_close(xt[:, :4], flow.interpolate(x0, noise, t)[:, :4])
    torch.testing.assert_close(target[:, :4], flow.velocity_target(x0, noise)[:, :4])
    torch.testing.assert_close(xt - times * target, x0)  # the clean estimate is the clip, detail included
    assert not torch.allclose(target[:, 4:], flow.velocity_target(x0, noise)[:, 4:])

    def inputs(*overrides):
        cfg = tiny_config(tmp_path, "flow.i2v_fraction=0.0", *overrides)
        state = build(cfg)
        return [make_inputs(state, state.data.batch(step, 8), step) for step in (1, 2, 3, 5)]

    plain, dropped = inputs(), inputs("flow.detail_dropout=1.0", "flow.detail_times=[0.3, 0.8]")
    inside = 0
    for a, b in zip(plain, dropped, strict=True):
        torch.testing.assert_close(a.t, b.t)  # the same draws: the dropout is drawn last
        chosen = (a.t >= 0.3) & (a.t <= 0.8)
        inside += int(chosen.sum())
        torch.testing.assert_close(b.xt[~chosen], a.xt[~chosen])
        torch.testing.assert_close(b.xt[chosen, :4], a.xt[chosen, :4])
        assert not torch.allclose(b.xt[chosen, 4:], a.xt[chosen, 4:])
    assert 0 < inside < 32  # some samples' times fall inside [0.3, 0.8] and some outside
    with pytest.raises(ValueError, match=r"flow.detail_dropout must be a share in \[0, 1\], got 1.5"):
        tiny_config(tmp_path, "flow.detail_dropout=1.5")
    with pytest.raises(ValueError, match=r"flow.detail_times must be \[low, high\] .*got \[0.8, 0.3\]"):
        tiny_config(tmp_path, "flow.detail_times=[0.8, 0.3]")
    with pytest.raises(ValueError, match=r"flow.detail_from must name a channel .* before 16 .*got 16"):
        tiny_config(tmp_path, "flow.detail_dropout=0.5", "flow.detail_from=16")


def test_a_phase_trains_at_pure_noise_only(tmp_path, monkeypatch):
    from motif_video.training import objective

    cfg = tiny_config(tmp_path, "train.steps=7", "flow.noise_fraction=0.2", "flow.noise_phase=[0.4, 0.7]")
    state = build(cfg)
    drawn: dict[int, list[float]] = {}
    step_now = 0

    def recording(*args):
        t = flow.sample_times(*args)
        drawn.setdefault(step_now, []).extend(t.tolist())
        return t

    monkeypatch.setattr(objective, "sample_times", recording)
    for step_now in range(7):
        train_step(state, step_now)
    assert all(t == 1.0 for step in (3, 4) for t in drawn[step])  # inside the phase: pure noise only
    assert any(t < 1.0 for step in range(3) for t in drawn[step])  # before it the drawn times ...
    assert any(t < 1.0 for step in (5, 6) for t in drawn[step])  # ... and after it again
    assert [objective.pure_noise_share(cfg, s) for s in range(7)] == [0.2] * 3 + [1.0] * 2 + [0.2] * 2


def test_prefix_conditioning_gives_a_prefix_and_masks_its_loss(tmp_path):
    """Extension training: a random prefix of latent frames is the condition (mask 1 on them, their
    clean latents beside), and the loss counts only the frames after it."""
    from motif_video.training.objective import make_inputs

    cfg = tiny_config(tmp_path, "flow.i2v_fraction=0.0", "flow.prefix_fraction=1.0", "data.latent_frames=5")
    state = build(cfg)
    seen = set()
    for step in range(1, 12):
        if step % 4 == 0:  # the debug data's image steps have one frame: nothing to condition
            continue
        batch = state.data.batch(step, 4)
        inputs = make_inputs(state, batch, step)
        z, frames = batch["latents"].shape[1], batch["latents"].shape[2]
        prefix = inputs.loss_from
        assert 1 <= prefix < frames
        seen.add(prefix)
        mask = inputs.condition[:, z]
        assert bool((mask[:, :prefix] == 1).all()) and bool((mask[:, prefix:] == 0).all())
        torch.testing.assert_close(inputs.condition[:, :z, :prefix], batch["latents"][:, :, :prefix])
        assert not inputs.condition[:, :z, prefix:].any()
        target = inputs.target
        changed = target.clone()
        changed[:, :, :prefix] += 5.0  # a wrong prediction on the given frames costs nothing
        assert flow.flow_loss(changed, target, prefix) == 0
        changed[:, :, prefix:] += 1.0
        assert flow.flow_loss(changed, target, prefix) == pytest.approx(1.0)
    assert len(seen) > 1  # the prefix length is drawn
    train_step(state, 1)  # and a step trains with it
    with pytest.raises(ValueError, match=r"flow.i2v_fraction \(0.7\) and flow.prefix_fraction \(0.4\)"):
        tiny_config(tmp_path, "flow.i2v_fraction=0.7", "flow.prefix_fraction=0.4")


# -- REPA ----------------------------------------------------------------------------------------


def test_repa_loss_is_minus_one_for_aligned_features():
    teacher = torch.randn(2, 12, 8)
    assert repa_loss(teacher * 3.0, teacher).item() == pytest.approx(-1.0, abs=1e-6)
    assert repa_loss(-teacher, teacher).item() == pytest.approx(1.0, abs=1e-6)
    projector = Projector(16, 8, hidden=32)
    assert projector(torch.randn(2, 12, 16)).shape == (2, 12, 8)


def test_teacher_tokens_resampled_to_the_student_grid():
    tokens = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 32, 1)
    assert torch.equal(resample_tokens(tokens, (2, 4, 4), (2, 4, 4)), tokens)
    coarse = resample_tokens(tokens, (2, 4, 4), (1, 2, 2))
    assert coarse.shape == (1, 4, 1)
    # a constant feature stays constant
    ones = resample_tokens(torch.ones(2, 64, 3), (4, 4, 4), (3, 5, 6))
    torch.testing.assert_close(ones, torch.ones(2, 90, 3))


@pytest.mark.parametrize("kind", ["vjepa2", "dinov2"])
def test_repa_runs_with_real_teacher_classes_and_switches_off(tmp_path, kind):
    teacher_dir = build_random_teacher(tmp_path / kind, kind)
    cfg = tiny_config(
        tmp_path,
        "repa.enabled=true",
        f"repa.teacher='{kind}'",
        f"repa.teacher_path={json.dumps(str(teacher_dir))}",
        "repa.until_step=3",
        "train.steps=5",
        "repa.projector_dim=32",
    )
    history = train(cfg, progress=False)
    repa = [m["repa_loss"] for m in history]
    assert all(-1.0 <= r < 0.5 for r in repa[:3]) and any(r != 0 for r in repa[:3])
    assert repa[3:] == [0.0, 0.0]  # switched off after until_step; the teacher was freed
    assert isinstance(Teacher.from_pretrained(kind, teacher_dir), Teacher)


# -- the loop ------------------------------------------------------------------------------------


def test_debug_run_lowers_the_loss_and_exports_ema(tmp_path):
    from motif_video import load_transformer

    history = train(tiny_config(tmp_path, "train.steps=200"), progress=False)
    first = sum(m["loss"] for m in history[:25]) / 25
    last = sum(m["loss"] for m in history[-25:]) / 25
    assert last < 0.8 * first, (first, last)
    assert all(m["skipped"] == 0 for m in history)
    exported = load_transformer(tmp_path / "run" / "ema-transformer")
    assert exported.cfg.num_decoder_blocks == 2
    assert (tmp_path / "run" / "tensorboard").is_dir()
    steps = sorted(p.name for p in (tmp_path / "run").glob("step-*"))
    assert steps == ["step-0000100", "step-0000200"]


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path):
    state = build(tiny_config(tmp_path, "train.max_skipped_steps=2"))
    original = state.data.batch

    def poisoned(step, *args):
        batch = original(step, *args)
        batch["latents"] = batch["latents"] * float("nan")
        return batch

    before = [p.detach().clone() for p in state.model.parameters()]
    state.data.batch = poisoned
    assert train_step(state, 1)["skipped"] == 1
    assert all(torch.equal(a, p) for a, p in zip(before, state.model.parameters(), strict=True))
    train_step(state, 2)
    with pytest.raises(FloatingPointError, match="3 steps had a non-finite loss"):
        train_step(state, 3)


def test_tread_routing_in_training_steps(tmp_path):
    from helpers import perturb_

    def step_loss(*overrides: str) -> float:
        state = build(tiny_config(tmp_path, *overrides))
        perturb_(state.model.transformer, seed=4)  # trained-like weights: blocks are not the identity
        return train_step(state, 1)["loss"]

    plain = step_loss("tread.enabled=false")
    assert step_loss("tread.keep_ratio=1.0") == pytest.approx(plain, rel=1e-6)  # keeping every token: unrouted
    assert step_loss("tread.keep_ratio=0.5") != pytest.approx(plain, rel=1e-3)  # half the tokens skip blocks 1-2


# -- checkpoints and resume ----------------------------------------------------------------------


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def run_train(out: Path, *args: str, launcher: tuple[str, ...] = (str(SCRIPT),)) -> subprocess.CompletedProcess:
    command = [*launcher, "train", str(CONFIG), *args, "--quiet", f"train.out_dir={json.dumps(str(out))}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_killed_run_resumes_exactly(tmp_path):
    args = ["train.steps=40", "train.save_every=10"]
    run_train(tmp_path / "ref", *args)

    run = tmp_path / "killed"
    command = [str(SCRIPT), "train", str(CONFIG), *args, "--quiet", f"train.out_dir={json.dumps(str(run))}"]
    kill_after_steps(command, run, 25)
    assert len(_metrics(run)) < 40
    # a half-written newer checkpoint must be ignored, and a torn last metrics line dropped
    (run / "step-0000030.partial").mkdir()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 27, "lo')
    run_train(run, *args)
    expected, got = _metrics(tmp_path / "ref"), _metrics(run)
    assert [m["step"] for m in got] == list(range(40))
    for a, b in zip(expected, got, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6), a["step"]


def test_a_broken_metrics_line_inside_the_file_is_named(tmp_path):
    from motif_video.training.train import _readable_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "lo')
    assert _readable_metrics(path, 5) == ['{"step": 0}', '{"step": 1}']
    path.write_text('{"step": 0}\nbroken\n{"step": 2}\n')
    with pytest.raises(ValueError, match=f"{path}: line 2 is not JSON"):
        _readable_metrics(path, 5)


def test_two_process_fsdp_matches_one_process(tmp_path):
    common = ["train.steps=8", "train.save_every=8", "data.batch_size=4"]
    run_train(tmp_path / "one", *common)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    run_train(tmp_path / "two", *common, launcher=(torchrun, "--nproc_per_node", "2", "-m", "motif_video"))
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert len(a) == len(b) == 8
    # same samples, noise and routes per sample; only float summation order differs
    for x, y in zip(a, b, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5), x["step"]  # seen: 2e-7
    # both exported the same (sharded vs unsharded) EMA weights up to float rounding
    from motif_video import load_transformer

    ea = load_transformer(tmp_path / "one" / "ema-transformer")
    eb = load_transformer(tmp_path / "two" / "ema-transformer")
    for (name, p), q in zip(ea.state_dict().items(), eb.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config keys \['optim.lrr'\]"):
        TrainConfig.load(CONFIG, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="config optim.lr must be float, got 'fast'"):
        TrainConfig.load(CONFIG, ["optim.lr=fast"])
    with pytest.raises(ValueError, match="must look like section.key=value"):
        TrainConfig.load(CONFIG, ["steps=3"])
    with pytest.raises(ValueError, match="unknown transformer preset 'huge'"):
        TrainConfig.load(CONFIG, ["model.preset='huge'"])
    with pytest.raises(ValueError, match=r"flow.noise_fraction must be in \[0, 1\), got 1.0"):
        TrainConfig.load(CONFIG, ["flow.noise_fraction=1.0"])
    with pytest.raises(ValueError, match=r"flow.noise_phase must be \[start, end\], .*got \[0.5, 1.2\]"):
        TrainConfig.load(CONFIG, ["flow.noise_phase=[0.5, 1.2]"])
    with pytest.raises(ValueError, match=r"flow.noise_phase_fraction must be in \[0, 1\], got 1.5"):
        TrainConfig.load(CONFIG, ["flow.noise_phase_fraction=1.5"])
    with pytest.raises(ValueError, match=r"flow.channel_weights has 3 weights; the model's latents have 16 channels"):
        TrainConfig.load(CONFIG, ["flow.channel_weights=[1, 2, 3]"])
    with pytest.raises(ValueError, match=r"flow.channel_weights must be finite, >= 0 and not all 0, got \[-1.0"):
        TrainConfig.load(CONFIG, [f"flow.channel_weights={[-1.0] + [1.0] * 15}"])
    cfg = TrainConfig.load(CONFIG, ["optim.betas=[0.8, 0.9]", "tread.enabled=false"])
    assert cfg.optim.betas == (0.8, 0.9) and cfg.tread.enabled is False


def test_fine_tuning_starts_from_a_released_checkpoint_and_bf16_steps_run(tmp_path):
    from helpers import perturb_
    from motif_video import MotifVideoTransformer, get_preset, save_transformer

    released = perturb_(MotifVideoTransformer(get_preset("debug")), seed=9)
    save_transformer(released, tmp_path / "released")
    state = build(
        tiny_config(tmp_path, f"model.init_from={json.dumps(str(tmp_path / 'released'))}", "train.precision='bf16'")
    )
    for (name, a), b in zip(released.state_dict().items(), state.model.transformer.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    metrics = train_step(state, 1)
    assert metrics["skipped"] == 0 and 0 < metrics["loss"] < 100


def test_lora_trains_only_adapters_and_exports_merged_weights(tmp_path):
    from helpers import make_inputs, perturb_
    from motif_video import MotifVideoTransformer, get_preset, load_transformer, save_transformer

    released = perturb_(MotifVideoTransformer(get_preset("debug")), seed=9, std=0.1)
    save_transformer(released, tmp_path / "released")
    cfg = tiny_config(
        tmp_path,
        f"model.init_from={json.dumps(str(tmp_path / 'released'))}",
        "model.lora_rank=4",
        "train.steps=6",
        "train.ema_decay=0.0",
        "optim.lr=1e-2",
        "optim.warmup_steps=1",
    )
    state = build(cfg)
    trainable = [n for n, p in state.model.transformer.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    for step in range(6):
        train_step(state, step)
    base = {n: p for n, p in state.model.transformer.named_parameters() if ".base_layer." in n}
    assert torch.equal(
        base["dual_blocks.0.video_attn.qkv.base_layer.weight"], released.dual_blocks[0].video_attn.qkv.weight
    )  # the released weights stay frozen
    from motif_video.training.train import export_ema

    export_ema(state, tmp_path / "merged")
    merged = load_transformer(tmp_path / "merged")
    inputs = make_inputs()
    with torch.no_grad():
        adapted = state.model.transformer.eval()(**inputs).velocity  # ema_decay 0: EMA = current adapters
        torch.testing.assert_close(merged(**inputs).velocity, adapted, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(released.eval()(**inputs).velocity, adapted, atol=1e-3)


def test_sample_videos_every_n_steps(tmp_path):
    from motif_video.media import read_video
    from motif_video.random_weights import build_random_pipeline

    build_random_pipeline(tmp_path / "pipe")  # its VAE has 4 latent channels, its text encoder width 32
    cfg = tiny_config(
        tmp_path,
        "model.overrides.in_channels=9",
        "model.overrides.out_channels=4",
        "train.steps=4",
        "train.sample_every=2",
        f"train.sample_weights={json.dumps(str(tmp_path / 'pipe'))}",
        "train.sample_steps=2",
        "data.latent_height=4",
        "data.latent_width=6",
    )
    train(cfg, progress=False)
    videos = sorted(p.name for p in (tmp_path / "run" / "samples").glob("*.mp4"))
    assert videos == ["step-0000002-0.mp4", "step-0000002-1.mp4", "step-0000004-0.mp4", "step-0000004-1.mp4"]
    frames, _ = read_video(tmp_path / "run" / "samples" / videos[0])
    assert frames.shape == (9, 32, 48, 3)


def test_gradient_accumulation_gives_the_same_update(tmp_path):
    """Micro-batches change no draw and no gradient: losses and weights after two steps match to float noise."""
    results = []
    for accum in (1, 2, 4):
        state = build(tiny_config(tmp_path / str(accum), "data.batch_size=4", f"train.grad_accum={accum}"))
        metrics = [train_step(state, step) for step in range(2)]
        losses = [m[k] for m in metrics for k in ("loss", "grad_norm")]  # the gradient's size too (Adam hides it)
        weights = {n: p.detach().clone() for n, p in state.model.named_parameters()}
        results.append((losses, weights))
    (base_losses, base_weights), *others = results
    for losses, weights in others:
        assert losses == pytest.approx(base_losses, rel=1e-5, abs=1e-6)
        for name, value in weights.items():
            torch.testing.assert_close(value, base_weights[name], rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ValueError, match="train.grad_accum must be >= 1 and divide data.batch_size 4, got 3"):
        tiny_config(tmp_path, "data.batch_size=4", "train.grad_accum=3")


def test_metrics_log_the_data_wait_share(tmp_path):
    history = train(tiny_config(tmp_path, "train.steps=2", "train.save_every=2"), progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1] and len(history) == 2
    assert all(0 <= m["data_wait"] < 1 and m["tokens_per_s"] > 0 for m in lines)


@pytest.mark.slow
def test_hsdp_two_by_two_matches_one_process_with_accumulation(tmp_path):
    """4 gloo processes on a 2 x 2 mesh (replicate x shard) train like one process with 4 micro-batches."""
    common = ["train.steps=4", "train.save_every=4", "data.batch_size=4"]
    run_train(tmp_path / "one", *common, "train.grad_accum=4")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    four = (torchrun, "--nproc_per_node", "4", "-m", "motif_video")
    hsdp = run_train(tmp_path / "hsdp", *common, "train.hsdp_replicas=2", launcher=four)
    assert "FSDP2 over 4 processes: mesh replicate 2 x shard 2" in hsdp.stdout
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "hsdp")
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5), x["step"]
    from motif_video import load_transformer

    ea = load_transformer(tmp_path / "one" / "ema-transformer")
    eb = load_transformer(tmp_path / "hsdp" / "ema-transformer")
    for (name, p), q in zip(ea.state_dict().items(), eb.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.slow
def test_bf16_sharded_training_computes_in_bf16_and_keeps_fp32_weights(tmp_path):
    common = ["train.steps=3", "train.save_every=3", "data.batch_size=4", "train.precision='bf16'"]
    run_train(tmp_path / "one", *common)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    two = run_train(tmp_path / "two", *common, launcher=(torchrun, "--nproc_per_node", "2", "-m", "motif_video"))
    assert "FSDP2 over 2 processes: mesh shard 2; compute bf16, gradient reduction fp32" in two.stdout
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    for x, y in zip(a, b, strict=True):  # bf16 parameters in compute: close, not equal
        assert y["loss"] == pytest.approx(x["loss"], rel=2e-2), x["step"]
    from motif_video import load_transformer

    exported = load_transformer(tmp_path / "two" / "ema-transformer")
    assert {p.dtype for p in exported.parameters()} == {torch.float32}
