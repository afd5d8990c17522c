"""The streamed shard reader: per-rank plan files, only a rank's own shards read, front to back,
memory independent of the set's size, image steps with their own batch size, exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from motif_video.data import stream
from motif_video.data.stream import StreamedShards, read_index
from motif_video.random_weights import write_random_latent_shards as write_latent_shards

SCRIPT = Path(sys.executable).parent / "motif-video"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "debug.toml"


BUCKETS = {"9x32x32": (4, 3, 4, 4), "9x32x48": (4, 3, 4, 6), "1x32x32": (4, 1, 4, 4)}


def test_plan_gives_every_rank_its_own_shards_one_bucket_per_step_and_the_stage_pattern(tmp_path):
    root = write_latent_shards(tmp_path / "latents", shards=12, per_shard=12, buckets=BUCKETS)
    data = StreamedShards(root, seed=3, workers=0, window=2)
    epochs = data.plan(tmp_path / "plan", 1, 0, 2, batch_size=4, image_batch_size=8, pattern="IVV")
    index = read_index(root)
    plans = [np.load(tmp_path / "plan" / "epoch-0000" / f"rank{r}.npz") for r in range(2)]
    assert json.loads((tmp_path / "plan" / "plan.json").read_text())["epochs"] == epochs
    names = list(plans[0]["bucket_names"])
    assert set(plans[0]["shards"]).isdisjoint(plans[1]["shards"])  # a shard belongs to one rank
    assert sorted([*plans[0]["shards"], *plans[1]["shards"]]) == list(range(12))
    steps = len(plans[0]["kind"])
    assert steps == epochs[0]["steps"] > 10
    used = []
    for i in range(steps):
        kind = "VI"[plans[0]["kind"][i]]
        assert kind == "IVV"[i % 3]  # the stage's step pattern
        bucket = names[plans[0]["bucket"][i]]
        assert (bucket.startswith("1x")) == (kind == "I")  # image steps on the image bucket
        for r in range(2):
            ids = [int(x) for x in plans[r]["samples"][i] if x >= 0]
            assert len(ids) == (4 if kind == "I" else 2)  # per rank: image 8 / 2, video 4 / 2
            assert {index.buckets[x] for x in ids} == {bucket}  # all ranks on one bucket
            assert set(index.shard[ids]) <= set(plans[r]["shards"])  # only from its own shards
            used += ids
    assert len(used) == len(set(used))  # no sample twice in an epoch
    assert len(used) / len(index) > 0.6  # the pattern (1 image : 2 video steps) leaves some of each behind

    later = data.plan(tmp_path / "plan", epochs[0]["steps"] + 5, 0, 2, 4, 8, "IVV")  # a longer run: one more epoch
    assert later[0] == epochs[0] and len(later) == 2 and later[1]["start"] == epochs[0]["steps"]
    with pytest.raises(ValueError, match="no step of epoch 0 can be filled: 2 rank.* lower data.batch_size"):
        StreamedShards(root, workers=0).plan(tmp_path / "plan2", 1, 0, 2, batch_size=400)


def test_a_rank_opens_only_its_shards_once_each_as_a_stream(tmp_path, monkeypatch):
    root = write_latent_shards(tmp_path / "latents", shards=8, per_shard=6, buckets={"9x32x32": (4, 3, 4, 4)})
    opened: list[tuple[str, str]] = []
    real_open = tarfile.open

    def recording(name, mode="r", *args, **kwargs):
        opened.append((Path(name).name, mode))
        return real_open(name, mode, *args, **kwargs)

    monkeypatch.setattr(stream.tarfile, "open", recording)
    seen = {}
    for rank in range(2):
        data = StreamedShards(root, workers=0, window=2)
        epochs = data.plan(tmp_path / "plan", 1, rank, 2, batch_size=4)
        opened.clear()
        for step in range(epochs[0]["steps"]):
            data.batch(step)
        plan = np.load(tmp_path / "plan" / "epoch-0000" / f"rank{rank}.npz")
        mine = [f"shard-{n:06d}.tar" for n in plan["shards"]]
        assert [name for name, _ in opened] == mine  # its own shards, in its plan's order, each once
        assert {mode for _, mode in opened} == {"r|"}  # tar streams: read front to back, no seeks
        seen[rank] = set(mine)
    assert seen[0].isdisjoint(seen[1]) and len(seen[0] | seen[1]) == 8


MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from motif_video.data.stream import StreamedShards
    data = StreamedShards(sys.argv[1], workers=0, window=2)
    epochs = data.plan(sys.argv[2], 1, 0, 1, batch_size=4)
    for step in range(epochs[0]["steps"]):
        data.batch(step)
    print(epochs[0]["steps"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def test_memory_does_not_grow_with_the_number_of_shards(tmp_path):
    """A whole epoch over 10x more shards peaks at the same memory (within 10%): the reader holds a
    window, not the set (here the larger set is ~150 MB of latents, the process ~300 MB)."""
    peaks = {}
    for shards in (8, 80):
        root = write_latent_shards(tmp_path / f"s{shards}", shards, 8, {"9x48x48": (16, 5, 24, 24)}, seed=shards)
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(root), str(tmp_path / f"plan{shards}")],
            capture_output=True,
            text=True,
            check=True,
        )
        steps, peak = (int(v) for v in out.stdout.split())
        assert steps == shards * 2  # every sample of the epoch was read
        peaks[shards] = peak
    assert peaks[80] <= 1.1 * peaks[8], peaks


def _shards_config(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "data.source='shards'",
        f"data.path={json.dumps(str(tmp_path / 'latents'))}",
        "data.batch_size=4",
        "data.window=2",
        "model.overrides.in_channels=9",
        "model.overrides.out_channels=4",
        "train.ema_decay=0.9",
        *extra,
    ]


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def test_killed_streamed_run_resumes_with_the_reader_where_it_was(tmp_path):
    """kill -9 in the middle of the second epoch, resume: the same losses as an uninterrupted run,
    the reader restarted at the checkpoint's epoch, window and step (DataLoader worker, prefetch)."""
    write_latent_shards(tmp_path / "latents", shards=6, per_shard=8, buckets={"9x32x32": (4, 3, 4, 4)})
    args = _shards_config(tmp_path, "train.steps=30", "train.save_every=8", "data.workers=1")

    def command(run: Path) -> list[str]:
        return [str(SCRIPT), "train", str(CONFIG), *args, "--quiet", f"train.out_dir={json.dumps(str(run))}"]

    subprocess.run(command(tmp_path / "ref"), check=True, capture_output=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen(command(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(_metrics(run)) < 19:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 19 <= len(_metrics(run)) < 30
    epochs = json.loads((run / "plan" / "plan.json").read_text())["epochs"]
    assert epochs[0]["steps"] < 16 < 30  # the checkpoint at step 16 is inside epoch 1 (or later)
    resumed = subprocess.run(command(run), check=True, capture_output=True, text=True)
    assert "resumed from" in resumed.stdout and "(step 16; data: epoch 1, step" in resumed.stdout
    expected, got = _metrics(tmp_path / "ref"), _metrics(run)
    assert [m["step"] for m in got] == list(range(30))
    for a, b in zip(expected, got, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6), a["step"]


def test_a_stage_trains_on_its_buckets_with_its_image_batch(tmp_path):
    """Image steps take `stage.image_batch_size` samples (first latent frames of videos here), video
    steps `data.batch_size`; samples of buckets outside the stage's sizes and frame counts are not planned."""
    from motif_video.training.config import TrainConfig
    from motif_video.training.train import build, train_step

    write_latent_shards(
        tmp_path / "latents", shards=4, per_shard=16, buckets={"9x32x32": (4, 3, 4, 4), "17x96x96": (4, 5, 12, 12)}
    )
    stage = [
        "stage.name='s'",
        "stage.interleave='IV'",
        "stage.frame_buckets=[9]",
        "stage.image_size=[32, 32]",
        "stage.video_size=[32, 32]",
        "stage.image_batch_size=8",
        "train.steps=4",
        f"train.out_dir={json.dumps(str(tmp_path / 'run'))}",
        "data.workers=0",
    ]
    state = build(TrainConfig.load(None, _shards_config(tmp_path, *stage)))
    samples = [train_step(state, step)["samples"] for step in range(4)]
    assert samples == [8, 4, 8, 4]
    plan = np.load(tmp_path / "run" / "plan" / "epoch-0000" / "rank0.npz")
    assert list(plan["bucket_names"][np.unique(plan["bucket"])]) == ["9x32x32"]  # the 96x96 clips wait

    with pytest.raises(ValueError, match=r"none of the data's buckets \['17x96x96', '9x32x32'\] has the stage's"):
        build(TrainConfig.load(None, _shards_config(tmp_path, *stage, "stage.frame_buckets=[33]")))
