"""`motif-video generate` end to end through the console script, on a tiny pipeline directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import run, run_main

from motif_video.media import read_video
from motif_video.random_weights import build_random_pipeline

FAST = ["--height", "32", "--width", "48", "--frames", "9", "--steps", "2", "--quiet"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights")
    build_random_pipeline(path)
    return path


def test_text_to_video_writes_mp4_and_sidecar(weights, tmp_path):
    out = tmp_path / "clip.mp4"
    result = run(
        "generate",
        "a red circle moves left",
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--fps",
        "12",
        "--seed",
        "3",
        "--gif",
        "--contact-sheet",
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    frames, fps = read_video(out)
    assert frames.shape == (9, 32, 48, 3) and fps == 12
    assert (tmp_path / "clip.gif").is_file() and (tmp_path / "clip.png").is_file()
    sidecar = json.loads((tmp_path / "clip.json").read_text())
    assert sidecar["prompt"] == "a red circle moves left" and sidecar["seed"] == 3 and sidecar["steps"] == 2
    assert sidecar["guidance"]["kind"] == "apg" and len(sidecar["weights_fingerprint"]) == 16
    assert sidecar["frames"] == 9 and sidecar["fps"] == 12
    assert sidecar["guidance_passes"] == "batched"  # auto, on a CPU
    assert sidecar["attention_kernels"] and all(k.startswith("sdpa:") for k in sidecar["attention_kernels"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif", "clip.json", "clip.mp4", "clip.png"]


def test_split_passes_and_compile_are_recorded(weights, tmp_path):
    out = tmp_path / "clip.mp4"
    result = run(
        "generate", "a red circle moves left", "--weights", str(weights), "--out", str(out),
        "--guidance-passes", "split", "--compile", *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["guidance_passes"] == "split"
    assert sidecar["compile"]["first_step_s"] > sidecar["compile"]["later_step_s"] > 0
    assert "--compile: the first step took" in result.stdout


def test_same_seed_same_video_and_batch_videos_differ(weights, tmp_path):
    # the PNG contact sheet is lossless: compare it rather than the H.264 frames
    run(
        "generate",
        "a blue square",
        "--weights",
        str(weights),
        "--out",
        str(tmp_path / "a.mp4"),
        "--contact-sheet",
        *FAST,
    )
    run(
        "generate",
        "a blue square",
        "--weights",
        str(weights),
        "--out",
        str(tmp_path / "b.mp4"),
        "--batch",
        "2",
        "--contact-sheet",
        *FAST,
    )
    a, b0, b1 = (np.asarray(Image.open(tmp_path / f"{n}.png")).astype(int) for n in ("a", "b-0", "b-1"))
    # video i depends on seed + i only, not on the batch (up to float rounding of batched matmuls)
    assert np.abs(a - b0).max() <= 1
    assert np.abs(b0 - b1).max() > 10
    assert json.loads((tmp_path / "b-1.json").read_text())["seed"] == 1
    assert read_video(tmp_path / "b-1.mp4")[0].shape == (9, 32, 48, 3)


def test_the_same_command_writes_the_same_bytes(tmp_path):
    # make demo's command, twice in one process: torch's threads have run between the two encodes, which
    # made a multi-threaded x264 write different bytes (up to 16 levels apart once decoded) from the same frames
    command = ["generate", "a red circle moves to the left on a gray background", "--quiet", "--out"]
    for name in ("a.mp4", "b.mp4"):
        assert run_main(*command, str(tmp_path / name)).returncode == 0
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_image_to_video(weights, tmp_path):
    Image.fromarray(np.full((32, 48, 3), (200, 30, 30), np.uint8)).save(tmp_path / "first.png")
    result = run(
        "generate",
        "a red circle",
        "--image",
        str(tmp_path / "first.png"),
        "--weights",
        str(weights),
        "--out",
        str(tmp_path / "i2v.mp4"),
        "--guidance",
        "cfg",
        "--guidance-scale",
        "3",
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    assert read_video(tmp_path / "i2v.mp4")[0].shape == (9, 32, 48, 3)
    sidecar = json.loads((tmp_path / "i2v.json").read_text())
    assert sidecar["image"].endswith("first.png") and sidecar["guidance"]["kind"] == "cfg"
    assert sidecar["guidance"]["scale"] == 3.0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--height", "40"], "height and width must be positive multiples of 16, got 40 x 48"),
        (["--frames", "10"], "frames must be 4k+1 (1, 5, 9, 13"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--image", "IMAGE_NOT_AN_IMAGE"], "cannot read image"),
        (["--image", "MISSING"], "cannot read image"),
        (["--out", "READONLY/x.mp4"], "is not writable"),
        (["--out", "FOLDER.mp4"], "it is a folder"),
        (["--out", "NOFOLDER/x.mp4"], "does not exist"),
        (["--out", "x.avi"], "--out must name an .mp4 file"),
        (["--device", "cuda:7"], "device 'cuda:7' is not available"),
        (["--dtype", "float16", "--device", "cpu"], "float16 is not supported on the CPU"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--height", "16384", "--width", "16384"], "GiB available; not even one frame at this size fits"),
        (["--frames", "100001"], "GiB available; at 48x32 and batch 1, at most"),
        (["--batch", "100000"], "GiB available; not even one frame at this size fits"),
        (
            ["--quantize", "fp8"],
            "--quantize fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper); got cpu",
        ),
    ],
)
def test_bad_input_one_line_error_and_no_file(weights, tmp_path, args, message):
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "ro").mkdir(mode=0o555)
    (tmp_path / "folder.mp4").mkdir()
    # root ignores permission bits: then use a folder no one may write to
    read_only = tmp_path / "ro" if os.geteuid() != 0 else Path("/sys")
    replace = {
        "IMAGE_NOT_AN_IMAGE": str(tmp_path / "bad.png"),
        "MISSING": str(tmp_path / "missing.png"),
        "READONLY/x.mp4": str(read_only / "x.mp4"),
        "FOLDER.mp4": str(tmp_path / "folder.mp4"),
        "NOFOLDER/x.mp4": str(tmp_path / "no" / "x.mp4"),
        "x.avi": str(tmp_path / "x.avi"),
    }
    args = [replace.get(a, a) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out.mp4")]
    before = set(tmp_path.rglob("*"))
    result = run_main("generate", "a red circle", "--weights", str(weights), *FAST, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert set(tmp_path.rglob("*")) == before


def test_empty_prompt_and_missing_weights(weights, tmp_path):
    result = run("generate", "  ", "--weights", str(weights), "--out", str(tmp_path / "x.mp4"), *FAST)
    assert result.returncode == 2 and "the prompt is empty" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # the whole process's stderr: no notice of a library
    incomplete = tmp_path / "incomplete"
    (incomplete / "transformer").mkdir(parents=True)
    (incomplete / "transformer" / "config.json").write_text("{}")
    result = run("generate", "a red circle", "--weights", str(incomplete), "--out", str(tmp_path / "x.mp4"))
    assert result.returncode == 2
    assert "incomplete; missing: vae/config.json, text_encoder/config.json" in result.stderr
    assert "transformer/*.safetensors" in result.stderr
    assert list(tmp_path.glob("*.mp4")) == []
