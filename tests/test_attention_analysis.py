"""The attention probe and the per-block cross-frame analysis."""

from __future__ import annotations

import json

import torch
from test_cli import run

from helpers import make_inputs, perturb_
from motif_video import MotifVideoTransformer, get_preset
from motif_video.model.attention import AttentionProbe


def test_probe_matches_the_full_attention_matrix():
    g = torch.Generator().manual_seed(0)
    frames, per, text = 3, 4, 5
    q = torch.randn(2, 2, frames * per + text, 8, generator=g)
    k = torch.randn(2, 2, frames * per + text, 8, generator=g)
    mask = torch.ones(2, 1, 1, frames * per + text, dtype=torch.bool)
    mask[1, ..., -2:] = False  # padded text of sample 1
    probe = AttentionProbe(frames, per, chunk=5)  # chunks cut across frames
    probe.block = 7
    probe.record(q, k, mask)
    # reference: the whole softmax at once
    scores = (q @ k.transpose(-2, -1) / 8**0.5).masked_fill(~mask, float("-inf")).softmax(-1)[:, :, : frames * per]
    video = scores[..., : frames * per].reshape(2, 2, frames, per, frames, per).sum(-1)  # [B, N, Tq, per, Tk]
    expected = video.mean(dim=(0, 1, 3))
    torch.testing.assert_close(probe.frame_matrix[7], expected)
    context = scores[..., frames * per :].sum(-1).mean()
    assert abs(probe.context_mass[7] - context.item()) < 1e-6
    off = 1 - expected.diagonal().sum() / expected.sum()
    assert abs(probe.cross_frame_score(7) - off.item()) < 1e-6


def test_probe_leaves_the_output_unchanged_and_covers_every_block():
    model = perturb_(MotifVideoTransformer(get_preset("debug"))).eval()
    inputs = make_inputs()
    with torch.no_grad():
        plain = model(**inputs).velocity
        probe = AttentionProbe(3, 6, chunk=4)
        probed = model(**inputs, probe=probe).velocity
    assert torch.equal(plain, probed)
    assert sorted(probe.frame_matrix) == list(range(6))
    assert all(0 <= probe.context_mass[b] <= 1 for b in range(6))


def test_analyze_attention_command(tmp_path):
    from motif_video.random_weights import build_random_pipeline

    build_random_pipeline(tmp_path / "weights")
    result = run(
        "analyze",
        "attention",
        "--weights",
        str(tmp_path / "weights"),
        "--prompt",
        "a red circle moves left",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "attention.json").read_text())
    assert [b["stage"] for b in report["blocks"].values()] == ["dual"] * 2 + ["single"] * 2 + ["decoder"] * 2
    assert len(report["blocks"]["0"]["frame_matrix"]) == 5  # 17 frames -> 5 latent frames
    assert (tmp_path / "out" / "attention.png").stat().st_size > 1000
    bad = run("analyze", "attention", "--weights", str(tmp_path / "weights"), "--prompt", "x", "--t", "2")
    assert bad.returncode == 2 and "--t must be a flow time" in bad.stderr

    # a given video instead of a generated one
    from motif_video.data import world
    from motif_video.media import write_mp4

    write_mp4(world.render(world.scene(0, 1), 20, 40, 60), tmp_path / "clip.mp4", fps=8)

    def analyze_clip(frames: str, out: str):
        video = ["--video", str(tmp_path / "clip.mp4"), "--frames", frames, "--out", str(tmp_path / out)]
        return run("analyze", "attention", "--weights", str(tmp_path / "weights"), "--prompt", "a red circle", *video)

    given = analyze_clip("9", "given")
    assert given.returncode == 0, given.stderr
    assert len(json.loads((tmp_path / "given" / "attention.json").read_text())["blocks"]["5"]["frame_matrix"]) == 3
    short = analyze_clip("33", "short")
    assert short.returncode == 2 and "fewer than the 33 asked for" in short.stderr
