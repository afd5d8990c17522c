"""Extension and storyboards: last-frame chaining on released-layout weights, prefix conditioning on
a model trained for it, seams, drift control, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import run, run_main
from test_shapes_model import tiny_shapes_config

from motif_video.cli import main
from motif_video.media import read_video, write_mp4
from motif_video.random_weights import build_random_pipeline
from motif_video.sampling import HANDOVER_FRAMES
from motif_video.sampling.extend import (
    color_stats,
    extend,
    hand_over,
    match_color_stats,
    seam_ratio,
)
from motif_video.sampling.pipeline import MotifVideoPipeline

FAST = ["--frames", "9", "--steps", "2", "--quiet"]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Tiny random weights in the released layout (T5Gemma2 with its vision tower: first-frame I2V)."""
    path = tmp_path_factory.mktemp("released")
    build_random_pipeline(path)
    return path


@pytest.fixture(scope="module")
def prefix_model(tmp_path_factory):
    """A tiny shapes model trained a few steps with the prefix condition on half of its batches."""
    from motif_video.training.train import train

    root = tmp_path_factory.mktemp("prefix")
    train(tiny_shapes_config(root, "flow.prefix_fraction=0.5", "train.sample_every=0"), progress=False)
    return root / "run" / "pipeline"


def test_last_frame_chaining_on_released_layout_weights(released, tmp_path):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (9, 32, 48, 3), dtype=np.uint8)
    write_mp4(video, tmp_path / "in.mp4", fps=8)
    result = run("extend", str(tmp_path / "in.mp4"), "a red circle moves up", "--weights", str(released),
                 "--segments", "2", *FAST)  # fmt: skip
    assert result.returncode == 0, result.stderr
    frames, fps = read_video(tmp_path / "in-extended.mp4")
    assert frames.shape == (9 + 2 * 8, 32, 48, 3) and fps == 8  # each 9-frame segment adds 8 (its first is given)
    sidecar = json.loads((tmp_path / "in-extended.json").read_text())
    assert sidecar["segments"]["overlap"] == 1 and sidecar["segments"]["seams"] == [9, 17]
    assert sidecar["color_match"] is True and sidecar["extends"].endswith("in.mp4")
    assert sidecar["segments"]["seam_difference"] > 0


def test_prefix_conditioning_continues_from_the_given_latent_frames(prefix_model, tmp_path):
    pipe = MotifVideoPipeline.from_pretrained(prefix_model)
    first = pipe("a red circle moves up", height=32, width=32, frames=9, steps=2, progress=False).uint8()[0]
    out = extend(pipe, first, ["a red circle moves up"] * 2, frames=9, steps=2, progress=False)
    assert out.overlap == 2  # the model's manifest says it was trained with a prefix: two latent frames
    assert out.seams == [9, 13] and out.frames.shape == (17, 32, 32, 3)  # 9-frame segments add 4 frames each
    assert np.array_equal(out.frames[:9], first)
    # the transformer gets the video's last 5 frames, encoded, as its first two latent frames' condition
    import torch

    seen = []
    forward = pipe.transformer.forward
    pipe.transformer.forward = lambda x, *a, **k: seen.append(x.clone()) or forward(x, *a, **k)
    extend(pipe, out.frames, ["a red circle moves up"], frames=9, steps=2, progress=False)
    z = pipe.vae.z_dim
    tail = torch.from_numpy(out.frames[-5:]).permute(3, 0, 1, 2).float()[None] / 127.5 - 1
    given = pipe.vae.encode(tail, sample=False)[0]
    for x in seen:  # [noise | condition | mask] per sample
        assert bool((x[:, 2 * z, :2] == 1).all()) and not x[:, 2 * z, 2:].any()
        torch.testing.assert_close(x[0, z : 2 * z, :2], given, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="--overlap must be 1 to 2 latent frames for 9-frame segments"):
        extend(pipe, first, ["x"], overlap=3, frames=9, steps=2, progress=False)


def test_storyboard_writes_one_video_of_its_segments(prefix_model, tmp_path, capsys):
    board = tmp_path / "board.toml"
    board.write_text('prompts = ["a red circle moves to the right", "a red circle moves up"]\n')
    result = run("generate", "--storyboard", str(board), "--weights", str(prefix_model), "--out",
                 str(tmp_path / "story.mp4"), *FAST)  # fmt: skip
    assert result.returncode == 0, result.stderr
    frames, _ = read_video(tmp_path / "story.mp4")
    assert frames.shape[0] == 9 + 4
    sidecar = json.loads((tmp_path / "story.json").read_text())
    assert sidecar["segments"]["prompts"] == ["a red circle moves to the right", "a red circle moves up"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"prompts": []}')
    refused = run("generate", "--storyboard", str(bad), "--weights", str(prefix_model), *FAST)
    assert refused.returncode == 2 and "must hold `prompts" in refused.stderr
    latin = tmp_path / "latin.toml"
    latin.write_bytes('prompts = ["a red circle moves up \u00e9"]'.encode("latin-1"))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('prompts = ["a red circle moves up", "a red elephant moves up"]\n')
    weights = ["--weights", str(prefix_model), *FAST]
    for args, message in (  # in this process: one line each, exit 2
        (["--storyboard", str(latin)], f"storyboard {latin} is not UTF-8 text"),
        (["--storyboard", str(tmp_path)], f"storyboard {tmp_path} is a folder; give the TOML or JSON file"),
        (["--storyboard", str(unknown)], "storyboard prompt 2 ('a red elephant moves up'): unknown words"),
        (["a red circle moves up", "--no-color-match"], "--no-color-match goes with --storyboard"),
        (["a red circle moves up", "--handover", "2"], "--handover goes with --storyboard"),
        (["--storyboard", str(board), "--handover", "-1"], "--handover must be >= 0 frames (0: off), got -1"),
    ):
        assert main(["generate", *args, *weights, "--out", str(tmp_path / "never.mp4")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "never.mp4").exists()  # the unknown word is refused before the first segment
    raw = ["--storyboard", str(tmp_path / "board.toml"), "--no-color-match", "--handover", "0"]
    assert main(["generate", *raw, "--out", str(tmp_path / "raw.mp4"), *weights]) == 0
    assert json.loads((tmp_path / "raw.json").read_text())["color_match"] is False
    assert json.loads((tmp_path / "raw.json").read_text())["handover"] == 0
    story = json.loads((tmp_path / "story.json").read_text())
    assert story["color_match"] is True and story["handover"] == HANDOVER_FRAMES


def test_given_frames_are_held_on_the_flow_path():
    """The sampler holds an extension's given latent frames where training put them: (1 - t) given + t noise
    at every step (t = timestep / 1000), and exactly `given` at the end; the other frames are untouched."""
    import torch

    from motif_video.sampling.sampler import Hold

    given, noise = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3)
    state = torch.randn(1, 4, 5, 3, 3)
    hold = Hold(given, noise)
    for t, expected in ((1000.0, noise), (0.0, given), (250.0, 0.75 * given + 0.25 * noise)):
        held = hold(state, torch.tensor(t))
        torch.testing.assert_close(held[:, :, :2], expected)
        assert torch.equal(held[:, :, 2:], state[:, :, 2:])
    assert torch.equal(hold.final(state)[:, :, :2], given)


def test_color_matching_moves_a_segment_to_the_reference_statistics():
    rng = np.random.default_rng(1)
    reference = rng.integers(40, 200, (4, 8, 8, 3), dtype=np.uint8)
    drifted = np.clip(reference.astype(int) * 0.8 + 30, 0, 255).astype(np.uint8)
    matched = match_color_stats(drifted, color_stats(reference))
    for got, want in zip(color_stats(matched), color_stats(reference), strict=True):
        np.testing.assert_allclose(got, want, atol=0.6)
    video = np.zeros((6, 2, 2, 3), np.uint8)
    video[3:] = 100  # one jump, at the seam
    assert seam_ratio(video, [3]) == (100.0, 0.0)


def test_hand_over_spreads_the_seam_over_the_first_new_frames():
    """The difference between the video's last frame and the new segment's drawing of it is added to the
    first new frames, fading linearly: a jump of 80 levels becomes steps of 20 over 3 frames."""
    given, remade = np.full((2, 2, 3), 120, np.uint8), np.full((2, 2, 3), 40, np.uint8)
    segment = np.full((5, 2, 2, 3), 40, np.uint8)  # the new segment, as drawn
    out = hand_over(given, remade, segment, 3)
    assert out[:, 0, 0, 0].tolist() == [100, 80, 60, 40, 40]
    assert seam_ratio(np.concatenate([given[None], out]), [1])[0] == 20.0
    assert np.array_equal(hand_over(given, remade, segment, 0), segment)  # 0: off
    # over the seam and the hand-over's frames the spread change is still steps of 20; a "fade" that holds
    # the old frame and jumps two frames later passes on the seam alone, not over the stretch
    assert seam_ratio(np.concatenate([given[None], out]), [1], span=4)[0] == 20.0
    held = np.concatenate([given[None]] * 3 + [segment[:3]])
    assert seam_ratio(held, [1]) == (0.0, 0.0)
    assert seam_ratio(held, [1], span=3) == (80.0, 0.0)


def test_seam_span_leaves_the_rest_inside():
    """Frame differences 1..9 (frame i -> i + 1 changes by i + 1 levels): the span's differences count as
    the seam's and leave the median of the rest; overlapping spans merge; a span past the end stops there."""
    video = np.cumsum(np.arange(11), dtype=np.int64).astype(np.uint8)[:, None, None, None].repeat(3, axis=-1)
    assert seam_ratio(video, [3]) == (3.0, np.median([1, 2, 4, 5, 6, 7, 8, 9, 10]))
    assert seam_ratio(video, [3], span=3) == (5.0, np.median([1, 2, 6, 7, 8, 9, 10]))
    assert seam_ratio(video, [3, 4], span=3) == (6.0, np.median([1, 2, 7, 8, 9, 10]))  # 3, 4, 5, 6 once
    assert seam_ratio(video, [9], span=5) == (10.0, np.median([1, 2, 3, 4, 5, 6, 7, 8]))  # 9, 10: the last two
    for seams, span, message in (
        ([3], 0, "span must be >= 1"),
        ([0], 1, "seams must be frame indices 1 to 10"),
        ([11], 1, "seams must be frame indices"),
        ([1], 10, "nothing is inside"),
    ):
        with pytest.raises(ValueError, match=message):
            seam_ratio(video, seams, span=span)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--segments", "0"], "--segments must be >= 1, got 0"),
        (["--overlap", "0"], "--overlap must be >= 1 latent frame"),
        (["--handover", "-1"], "--handover must be >= 0 frames (0: off), got -1"),
        (["WRONGSIZE"], "the video is 48x48; this model makes 32x32"),
        (["MISSING"], "does not exist"),
        (["FOLDER"], "is a folder; give the video file to extend"),
        (["--frames", "1"], "continuing a video needs segments of at least 5 frames"),
        (["--fps", "0"], "--fps must be >= 1, got 0"),
        (["OUT_IS_INPUT"], "is the video being extended; name another file"),
    ],
)
def test_bad_input_is_refused_with_one_line(prefix_model, tmp_path, args, message):
    video = np.zeros((9, 32, 32, 3), np.uint8)
    write_mp4(video, tmp_path / "ok.mp4", fps=8)
    write_mp4(np.zeros((9, 48, 48, 3), np.uint8), tmp_path / "wrong.mp4", fps=8)
    named = {"WRONGSIZE": tmp_path / "wrong.mp4", "MISSING": tmp_path / "missing.mp4", "FOLDER": tmp_path}
    source = named.get(args[0], tmp_path / "ok.mp4")
    extra = [a for a in args if a not in ("WRONGSIZE", "MISSING", "FOLDER", "OUT_IS_INPUT")]
    if "OUT_IS_INPUT" in args:
        extra += ["--out", str(tmp_path / "ok.mp4")]
    result = run_main("extend", str(source), "a red circle moves up", "--weights", str(prefix_model), *FAST, *extra)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*-extended.*"))  # nothing written
