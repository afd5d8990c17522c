"""Data pipeline: the shapes world, prepare (shards, report, resume) and the bucket-balanced plan."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from motif_video.data import world
from motif_video.data.buckets import Bucket, assign, balanced_plan, naive_utilization, sizes_for_area, utilization
from motif_video.data.preprocess import PrepareConfig, prepare
from motif_video.data.shards import iterate_shard, read_metadata
from motif_video.media import read_video, write_mp4

CFG = PrepareConfig(fps=8, frame_buckets=(9, 17), area=32 * 48, shard_size=2)


def test_shapes_world_is_deterministic_and_holds_out_combinations():
    a, b = world.scene(3, 17), world.scene(3, 17)
    assert a == b and np.array_equal(world.render(a, 5, 32, 48), world.render(b, 5, 32, 48))
    assert world.scene(3, 18) != a
    train = [world.scene(0, i) for i in range(300)]
    held = [world.scene(0, i, held_out=True) for i in range(50)]
    assert not any(s.held_out for s in train) and all(s.held_out for s in held)
    assert set(" ".join(s.caption for s in train + held).split()) <= set(world.vocabulary())


def test_world_captions_come_in_three_variants_as_people_type_them(tmp_path):
    """long (the caption), short (the object clause, phrased variously), truncated (the terse fragment):
    every word known to the world's vocabulary, drawn per clip, the same for the same generator."""
    scenes = [world.scene(0, i, max_objects=1) for i in range(200)]
    variants = [s.captions(np.random.default_rng([0, i, 7])) for i, s in enumerate(scenes)]
    assert variants[5] == scenes[5].captions(np.random.default_rng([0, 5, 7]))
    assert all(long == s.caption for (long, _, _), s in zip(variants, scenes, strict=True))
    shorts, truncated = {v[1] for v in variants}, {v[2] for v in variants}
    assert not any(" on " in c for c in shorts | truncated)  # no background phrase
    assert all(c.split()[0] in world.COLORS and " moving " in c and " to the " not in c for c in truncated)
    for form in (r"^a \w+ \w+ moves (to the )?\w+$", r"^\w+ \w+ moving (to the )?\w+$", r" goes ", r" is moving "):
        assert any(re.search(form, c) for c in shorts), form  # every phrasing occurs
    words = {w for v in variants for c in v for w in c.split()}
    assert words <= set(world.vocabulary())
    cfg = PrepareConfig(fps=8, frame_buckets=(9,), area=32 * 32, shard_size=4)
    prepare("shapes:3", tmp_path / "clips", cfg, seed=0, progress=False)  # the shard metadata carries them
    rows = sorted(read_metadata(tmp_path / "clips"), key=lambda r: r["source"])
    assert [r["source"] for r in rows] == ["shapes:0", "shapes:1", "shapes:2"]
    for i, row in enumerate(rows):
        scene = world.scene(0, i, max_objects=cfg.max_objects)
        assert row["captions"] == list(scene.captions(np.random.default_rng([0, i, 7])))


def test_rendered_object_moves_the_named_way():
    scene = world.Scene((world.ShapeObject("red", "square", "right", 0.5, 0.3),), "black", "plain")
    video = world.render(scene, 9, 64, 96)
    red = (video[..., 0] > 180) & (video[..., 1] < 80)
    xs = [np.nonzero(red[f])[1].mean() for f in (0, 8)]
    ys = [np.nonzero(red[f])[0].mean() for f in (0, 8)]
    assert xs[1] > xs[0] + 10 and abs(ys[1] - ys[0]) < 1
    assert scene.caption == "a red square moves to the right on a black background"


def test_world_layout_follows_the_caption():
    """An object starts a quarter of the frame behind the centre along its motion (jitter 0.05),
    one object in the middle across it, two objects in lanes 0.3 / 0.7 (jitter 0.08)."""
    scenes = [world.scene(0, i) for i in range(200)]
    for s in scenes:
        for lane, o in enumerate(s.objects):
            dy, dx = world.MOTIONS[o.motion]
            along, across = (o.y, o.x) if dy else (o.x, o.y)
            assert abs(along - (0.5 - 0.25 * (dy or dx))) <= 0.05
            middle = 0.5 if len(s.objects) == 1 else (0.3, 0.7)[lane]
            assert abs(across - middle) <= 0.08
    assert len({round(o.x, 3) for s in scenes for o in s.objects}) > 100  # jittered, not fixed
    assert {len(s.objects) for s in scenes} == {1, 2}
    # free layout (extension training): that share of the scenes start anywhere, the rest are unchanged,
    # and every scene keeps its objects, motions, captions and background
    free = [world.scene(0, i, free_layout=0.5) for i in range(200)]
    moved = [f for s, f in zip(scenes, free, strict=True) if s != f]
    assert 70 <= len(moved) <= 130
    assert all(s.caption == f.caption and s.background == f.background for s, f in zip(scenes, free, strict=True))
    starts = np.array([(o.y, o.x) for f in moved for o in f.objects])
    low, high = world.FREE_STARTS
    assert starts.min() >= low and starts.max() <= high and starts.std(axis=0).min() > 0.12  # spread on both axes
    assert world.scene(0, 3, free_layout=1.0) == world.scene(0, 3, free_layout=1.0) != world.scene(0, 3)
    # jitter 0: every object starts exactly where its caption's layout puts it; the rest of each scene
    # (objects, motions, captions, background) is the jittered world's
    exact = [world.scene(0, i, jitter=0.0) for i in range(200)]
    for s, e in zip(scenes, exact, strict=True):
        assert (e.caption, e.background, e.pattern) == (s.caption, s.background, s.pattern)
        for lane, o in enumerate(e.objects):
            dy, dx = world.MOTIONS[o.motion]
            middle = 0.5 if len(e.objects) == 1 else (0.3, 0.7)[lane]
            want = (0.5 - 0.25 * dy, middle) if dy else (middle, 0.5 - 0.25 * dx)
            assert (o.y, o.x) == pytest.approx(want, abs=1e-12)
    assert world.scene(0, 5, jitter=1.0) == scenes[5]
    with pytest.raises(ValueError, match="jitter must be a scale in \\[0, 1\\], got 1.5"):
        world.scene(0, 0, jitter=1.5)


def test_bucket_assignment():
    sizes = sizes_for_area(64 * 64)
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in sizes)
    assert assign(40, 720, 1280, (17, 33), sizes) == Bucket(33, 48, 80)  # 16:9, longest bucket that fits
    assert assign(20, 600, 600, (17, 33), sizes).frames == 17
    assert assign(10, 600, 600, (17, 33), sizes) is None
    assert Bucket.parse("33x48x80") == Bucket(33, 48, 80)


def _folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        write_mp4(world.render(world.scene(1, i), 24, 40, 60), src / f"good{i}.mp4", fps=8)
        (src / f"good{i}.txt").write_text(world.scene(1, i).caption)
    data = (src / "good0.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (src / "truncated.txt").write_text("a cut file")
    (src / "empty.mp4").write_bytes(b"")
    (src / "empty.txt").write_text("nothing")
    (src / "notes.doc").write_text("not a video")
    write_mp4(world.render(world.scene(1, 9), 5, 40, 60), src / "short.mp4", fps=8)
    (src / "short.txt").write_text("too short")
    write_mp4(world.render(world.scene(1, 8), 24, 40, 60), src / "nocaption.mp4", fps=8)
    return src


def test_prepare_writes_good_clips_and_reports_bad_files(tmp_path):
    src = _folder(tmp_path)
    report = prepare(str(src), tmp_path / "out", CFG, progress=False)
    reasons = {row["path"].rsplit("/", 1)[-1]: row["reason"] for row in report["skipped"]}
    assert set(reasons) == {"truncated.mp4", "empty.mp4", "notes.doc", "short.mp4", "nocaption.mp4"}
    assert reasons["empty.mp4"] == "empty file" and "not a video file" in reasons["notes.doc"]
    assert "too short" in reasons["short.mp4"] and "no caption" in reasons["nocaption.mp4"]
    rows = read_metadata(tmp_path / "out")
    assert {r["source"].rsplit("/", 1)[-1] for r in rows} == {"good0.mp4", "good1.mp4", "good2.mp4"}
    assert all(r["bucket"] == "17x32x48" for r in rows)  # 24 frames -> one 17-frame clip; 3:2 -> 32x48
    meta, mp4 = next(iterate_shard(tmp_path / "out" / rows[0]["shard"]))
    frames, fps = read_video(mp4)
    assert frames.shape == (17, 32, 48, 3) and fps == 8 and meta["caption"] == rows[0]["caption"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["clips"] == 3


def test_interrupted_prepare_resumes_without_duplicates_or_losses(tmp_path, monkeypatch):
    from motif_video.data import shards

    complete = prepare("shapes:9", tmp_path / "complete", CFG, progress=False)
    calls = {"n": 0}
    original = shards.os.replace

    def crash_on_second_shard(a, b):
        if str(b).endswith(".tar"):
            calls["n"] += 1
            if calls["n"] == 2:  # killed between the two renames of the second shard
                raise KeyboardInterrupt
        return original(a, b)

    monkeypatch.setattr(shards.os, "replace", crash_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        prepare("shapes:9", tmp_path / "resumed", CFG, progress=False)
    monkeypatch.setattr(shards.os, "replace", original)
    assert len(read_metadata(tmp_path / "resumed")) == 2  # only the first shard counts
    prepare("shapes:9", tmp_path / "resumed", CFG, progress=False)
    keys = sorted(r["key"] for r in read_metadata(tmp_path / "resumed"))
    assert keys == sorted(r["key"] for r in read_metadata(tmp_path / "complete")) and len(keys) == complete["clips"]
    assert not list((tmp_path / "resumed").glob("*.tmp"))


def test_balanced_plan_gives_every_rank_the_same_buckets():
    rng = np.random.default_rng(0)
    names = ["1x64x64", "17x48x80", "17x64x64", "33x48x80"]
    skew = rng.choice(names, size=4000, p=[0.55, 0.25, 0.15, 0.05]).tolist()
    plan = balanced_plan(skew, world_size=8, batch_size=4, seed=1)
    assert len({len(rank) for rank in plan}) == 1
    for step in range(len(plan[0])):
        assert len({skew[plan[r][step][0]] for r in range(8)}) == 1  # all ranks on one bucket
        for r in range(8):
            assert len({skew[i] for i in plan[r][step]}) == 1
    used = [i for rank in plan for batch in rank for i in batch]
    assert len(used) == len(set(used))
    assert utilization(plan, len(skew)) > 0.9 > 0.5 > naive_utilization(skew, 8, 4, seed=1)


def test_precompute_then_train_on_shards(tmp_path):
    import torch

    from motif_video.data.precompute import precompute
    from motif_video.data.stream import StreamedShards
    from motif_video.random_weights import build_random_pipeline
    from motif_video.training.config import TrainConfig
    from motif_video.training.train import train

    build_random_pipeline(tmp_path / "weights")  # 4-channel VAE, 32-wide text encoder with a vision tower
    prepare("shapes:8", tmp_path / "clips", CFG, progress=False)
    first = precompute(tmp_path / "clips", tmp_path / "weights", tmp_path / "latents", progress=False)
    assert (
        len(first) == 4
        and precompute(tmp_path / "clips", tmp_path / "weights", tmp_path / "latents", progress=False) == []
    )  # resumed: nothing left to do
    assert len(list((tmp_path / "latents").glob("shard-*.jsonl"))) == 4  # each shard's index, beside it

    def stream():
        data = StreamedShards(tmp_path / "latents", workers=0)
        data.plan(tmp_path / "plan", 6, 0, 1, 4)
        return data

    data = stream()
    batch = data.batch(0)
    assert batch["latents"].shape == (4, 4, 5, 4, 4)  # 17 frames -> 5 latent frames, 32x32 -> 4x4
    assert batch["text"].shape[2] == 32 and batch["text_mask"].any(dim=1).all()
    assert batch["image_tokens"].shape[0] == 4
    assert torch.equal(data.batch(5)["latents"], stream().batch(5)["latents"])

    cfg = TrainConfig.load(
        None,
        [
            "data.source='shards'",
            f"data.path={json.dumps(str(tmp_path / 'latents'))}",
            "data.batch_size=4",
            "model.overrides.in_channels=9",
            "model.overrides.out_channels=4",
            "train.steps=3",
            "train.save_every=3",
            f"train.out_dir={json.dumps(str(tmp_path / 'run'))}",
        ],
    )
    history = train(cfg, progress=False)
    assert len(history) == 3 and all(np.isfinite(m["loss"]) for m in history)


def test_prepare_lists_bad_rows_respellings_and_fixed_files(tmp_path, monkeypatch):
    src = _folder(tmp_path)
    listed = tmp_path / "list.csv"
    listed.write_text(
        f"path,caption\nsrc/good0.mp4,first\n{src / 'good0.mp4'},again\nsrc/missing.mp4,gone\nsrc/good1.mp4,second\n"
    )
    report = prepare(str(listed), tmp_path / "out", CFG, progress=False)
    assert report["sources"] == 2  # good0 listed twice (relative and absolute) is one source
    assert [Path(r["path"]).name for r in report["skipped"]] == ["missing.mp4"]
    assert "file does not exist" in report["skipped"][0]["reason"]
    rows = read_metadata(tmp_path / "out")
    assert len({r["key"] for r in rows}) == len(rows)

    (tmp_path / "headless.csv").write_text(f"{src / 'good0.mp4'},caption\n")
    with pytest.raises(ValueError, match="headless.csv: the first line must be a header naming a 'path' column"):
        prepare(str(tmp_path / "headless.csv"), tmp_path / "out2", CFG, progress=False)

    # the folder given once relative, once absolute: the second run adds nothing
    monkeypatch.chdir(tmp_path)
    first = prepare("src", tmp_path / "folder", CFG, progress=False)
    second = prepare(str(src), tmp_path / "folder", CFG, progress=False)
    assert second["clips"] == first["clips"] == 3
    # a skipped file that the user fixes is picked up by the next run
    (src / "nocaption.txt").write_text("a caption at last")
    third = prepare(str(src), tmp_path / "folder", CFG, progress=False)
    assert third["clips"] == 4 and "nocaption.mp4" not in {Path(r["path"]).name for r in third["skipped"]}


def test_precompute_names_a_bad_caption_and_leaves_nothing(tmp_path):
    from motif_video.data.precompute import precompute
    from motif_video.embedded import embedded_weights

    src = tmp_path / "src"
    src.mkdir()
    write_mp4(world.render(world.scene(1, 0), 24, 32, 32), src / "ok.mp4", fps=8)
    (src / "ok.txt").write_text(world.scene(1, 0).caption)
    write_mp4(world.render(world.scene(1, 1), 24, 32, 32), src / "odd.mp4", fps=8)
    (src / "odd.txt").write_text("a pink elephant dances")
    prepare(str(src), tmp_path / "clips", PrepareConfig(frame_buckets=(17,), area=1024), progress=False)
    out = tmp_path / "latents"
    with pytest.raises(ValueError, match=r"clip \w+ of .*shard-000000.tar \(from .*odd.mp4\): its caption 'a pink"):
        precompute(tmp_path / "clips", embedded_weights(), out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == []  # no .tar.tmp, no null_text.npy


def test_training_names_the_shards_encoder_width(tmp_path):
    import subprocess
    import sys

    from motif_video.data.precompute import precompute
    from motif_video.random_weights import build_random_pipeline

    build_random_pipeline(tmp_path / "weights")  # 4 latent channels, 32-wide text
    prepare("shapes:4", tmp_path / "clips", CFG, progress=False)
    precompute(tmp_path / "clips", tmp_path / "weights", tmp_path / "latents", progress=False)
    assert json.loads((tmp_path / "latents" / "encoders.json").read_text())["text_dim"] == 32
    script = Path(sys.executable).parent / "motif-video"
    config = Path(__file__).resolve().parents[1] / "configs" / "debug.toml"
    common = [
        str(script),
        "train",
        str(config),
        "data.source='shards'",
        f"data.path={json.dumps(str(tmp_path / 'latents'))}",
        f"train.out_dir={json.dumps(str(tmp_path / 'run'))}",
        "--quiet",
    ]
    result = subprocess.run(common, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hold 4-channel latents (made with" in result.stderr and "model.overrides.out_channels=4" in result.stderr
    wide = subprocess.run(
        [*common, "model.overrides.in_channels=9", "model.overrides.out_channels=4", "model.overrides.text_dim=64"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wide.returncode == 2 and "hold 32-wide text states" in wide.stderr
    assert "set model.overrides.text_dim=32" in wide.stderr
