"""The README's fine-tuning section, walked as a user walks it: prepare -> precompute -> a LoRA fine-tune
-> export -> generate with the exported pipeline and with the adapter on its base."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import run as console  # the installed console script, as a user runs it
from test_cli import run_main as cli  # in this process: the walk runs twenty-odd commands

from motif_video.data import world
from motif_video.media import read_video, write_mp4

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "debug.toml"


def test_prepare_precompute_lora_export_generate(tmp_path):
    from motif_video.random_weights import build_random_pipeline

    base = tmp_path / "base"
    build_random_pipeline(base)  # the pipeline a user fine-tunes (random weights of the released classes)
    clips = tmp_path / "my_clips"
    clips.mkdir()
    for i in range(4):
        scene = world.scene(3, i)
        write_mp4(world.render(scene, 24, 32, 32), clips / f"clip{i}.mp4", fps=8)
        (clips / f"clip{i}.txt").write_text(scene.caption)

    steps = [
        ("prepare", str(clips), str(tmp_path / "data/clips"), "--frame-buckets", "17", "--area", "1024", "--quiet"),
        ("precompute", str(tmp_path / "data/clips"), str(base), str(tmp_path / "data/latents"), "--quiet"),
    ]
    for step in steps:
        result = console(*step)
        assert result.returncode == 0, result.stderr

    def lora_run(out: Path, *extra: str) -> subprocess.CompletedProcess:
        return cli(
            "train",
            str(CONFIG),
            "--quiet",
            "data.source='shards'",
            f"data.path={json.dumps(str(tmp_path / 'data/latents'))}",
            "data.batch_size=2",
            f"model.init_from={json.dumps(str(base))}",
            "model.lora_rank=4",
            "model.overrides.in_channels=9",
            "model.overrides.out_channels=4",
            "model.overrides.cross_attention_kv='separate'",
            "train.steps=6",
            "train.save_every=6",
            "optim.lr=0.05",
            "optim.warmup_steps=1",
            f"train.out_dir={json.dumps(str(out))}",
            *extra,
        )

    run = tmp_path / "runs/lora"
    train = lora_run(run)
    assert train.returncode == 0, train.stderr
    assert "LoRA rank 4 (alpha 4) on" in train.stdout and "trainable of" in train.stdout
    assert "train.ema_decay 0.99 over 6 steps" in train.stdout  # the EMA export would barely move: said so
    assert (run / "pipeline" / "manifest.json").is_file()  # the trainer exports a fine-tune of a pipeline itself
    assert (run / "lora.safetensors").is_file()

    # the user's own export, of a run whose EMA moved (decay 0: the last weights)
    run2 = tmp_path / "runs/lora2"
    again = lora_run(run2, "train.ema_decay=0.0")
    assert again.returncode == 0, again.stderr
    assert "ema_decay" not in again.stdout
    exported = tmp_path / "exported"
    result = cli("export", str(run2), "--out", str(exported))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["base"] == str(base.resolve()) and manifest["run"] == str(run2.resolve())
    assert manifest["steps"] == 6 and manifest["lora"]["rank"] == 4
    adapter = exported / "lora.safetensors"

    common = [
        "a red circle moves up",
        "--steps",
        "2",
        "--height",
        "32",
        "--width",
        "32",
        "--frames",
        "5",
        "--fps",
        "8",
        "--quiet",
        "--guidance",
        "none",
    ]

    def video(name: str, *options: str) -> np.ndarray:
        out = tmp_path / f"{name}.mp4"
        result = cli("generate", *common, "--out", str(out), *options)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""  # nothing but progress bars, and --quiet has none
        return read_video(out)[0].astype(np.float32)

    plain = video("base", "--weights", str(base))
    merged = video("merged", "--weights", str(exported))
    adapted = video("adapted", "--weights", str(base), "--lora", str(adapter))
    off = video("off", "--weights", str(base), "--lora", str(adapter), "--lora-scale", "0")
    codec = 3.0  # H.264 round trip of the same frames moves a pixel by a few levels at most
    assert np.abs(merged - plain).mean() > codec and np.abs(adapted - plain).mean() > codec
    assert np.abs(adapted - merged).mean() < 1.0  # the adapter on its base is the exported pipeline
    assert np.array_equal(off, plain)  # scale 0: the base exactly
    sidecar = json.loads((tmp_path / "adapted.json").read_text())
    assert sidecar["lora"] == {"file": str(adapter.resolve()), "scale": 1.0}

    transformer_only = cli(
        "generate", *common, "--weights", str(run2 / "ema-transformer"), "--out", str(tmp_path / "x.mp4")
    )
    assert transformer_only.returncode == 2 and "motif-video export RUN_DIR" in transformer_only.stderr
    missing = cli("generate", *common, "--weights", str(base), "--lora", str(tmp_path / "none.safetensors"))
    assert missing.returncode == 2 and "--lora file" in missing.stderr

    # what a user gets wrong, refused in one line before anything changes
    def refused(*args: str) -> str:
        result = cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        return result.stderr

    assert f"use --weights {run2 / 'pipeline'}" in refused("generate", *common, "--weights", str(run2))
    assert "already has lora.safetensors merged in" in refused(
        "generate", *common, "--weights", str(exported), "--lora", str(adapter)
    )
    assert "is a folder" in refused("generate", *common, "--weights", str(base), "--lora", str(exported))
    for target, message in ((base, "is the base pipeline"), (run2, "is the run folder"), (clips, "is not an earlier")):
        before = sorted(p.name for p in target.iterdir())
        assert message in refused("export", str(run2), "--out", str(target))
        assert sorted(p.name for p in target.iterdir()) == before  # nothing was deleted
    assert cli("export", str(run2), "--out", str(exported)).returncode == 0  # an earlier export is replaced
    config_before = (run2 / "config.json").read_text()
    changed = lora_run(run2, "train.ema_decay=0.0", "model.lora_rank=8")
    assert changed.returncode == 2 and "model.lora_rank 4 -> 8" in changed.stderr
    assert (run2 / "config.json").read_text() == config_before
    latents_typo = lora_run(tmp_path / "runs/typo", "model.overrides.in_chanels=9")
    assert latents_typo.returncode == 2 and "unknown model.overrides keys ['in_chanels']" in latents_typo.stderr
    assert not (tmp_path / "runs/typo").exists()  # a refused config leaves no run folder
    clips_as_latents = cli(
        "train",
        str(CONFIG),
        "data.source='shards'",
        f"data.path={json.dumps(str(tmp_path / 'data/clips'))}",
        f"train.out_dir={json.dumps(str(tmp_path / 'runs/x'))}",
    )
    assert clips_as_latents.returncode == 2 and "holds clips (from `motif-video prepare`), not latents" in (
        clips_as_latents.stderr
    )
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["defaults"] == {"height": 32, "width": 32, "frames": 17, "fps": 8}  # the trained size


def test_adapter_names_follow_the_official_layout_and_round_trip(tmp_path):
    from helpers import make_inputs, perturb_
    from motif_video import MotifVideoTransformer, get_preset
    from motif_video.model.checkpoint_io import to_official
    from motif_video.model.lora import apply_adapter, save_adapter
    from motif_video.model.lora import to_official as adapter_to_official

    model = perturb_(MotifVideoTransformer(get_preset("debug")), seed=1).eval()
    d = model.cfg.hidden_size
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, d, generator=g) * 0.1, torch.randn(3 * d, 2, generator=g) * 0.1
    tensors = adapter_to_official(model.cfg, {"dual_blocks.0.video_attn.qkv": (a, b)})
    assert sorted(tensors) == sorted(
        f"transformer.transformer_blocks.0.attn.to_{p}.lora_{x}.weight" for p in "qkv" for x in "AB"
    )
    save_adapter(tmp_path / "a.safetensors", tensors, rank=2, alpha=2)
    expected = model.dual_blocks[0].video_attn.qkv.weight + b @ a
    before = to_official(model.cfg, model.state_dict())["transformer_blocks.0.attn.to_k.weight"].clone()
    assert apply_adapter(model, tmp_path / "a.safetensors", scale=1.0) == 1
    torch.testing.assert_close(model.dual_blocks[0].video_attn.qkv.weight, expected)
    after = to_official(model.cfg, model.state_dict())["transformer_blocks.0.attn.to_k.weight"]
    torch.testing.assert_close(after - before, b[d : 2 * d] @ a)  # the K rows of B go to to_k
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="junk.safetensors is not a readable safetensors file"):
        apply_adapter(model, tmp_path / "junk.safetensors")
    assert make_inputs() is not None
