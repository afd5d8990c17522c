"""The streamed shard reader against what a training step asks of it, measured side by side.

Writes random latent shards in precompute's layout (the 2B model's 16 latent channels and
2560-wide text states; by default 33 frames at 144 x 256: 9 x 18 x 32 latents), then:
1. reads one epoch with the reader in the training process (workers 0) and with 1 and 2 DataLoader
   worker processes: samples per second of each;
2. trains a small transformer on the same shards with workers 0 and 1, and prints the share of the
   step spent waiting for data (metrics `data_wait`) and the samples per second the step consumes
   (its demand), so the reader's rate can be read against it.

    python benchmarks/data_loader.py                  # ~2 minutes on a 2-core CPU
    python benchmarks/data_loader.py --shards 64 --latent 13 30 52
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from motif_video.data.stream import StreamedShards
from motif_video.random_weights import write_random_latent_shards
from motif_video.training.config import TrainConfig
from motif_video.training.train import train

MODEL = [  # a small transformer that reads 2B-shaped latents and text
    "model.preset='debug'",
    "model.overrides.in_channels=33",
    "model.overrides.out_channels=16",
    "model.overrides.text_dim=2560",
]


def read_epoch(root: Path, plan: Path, workers: int, batch: int) -> tuple[float, int]:
    """Samples per second over one epoch, and the epoch's samples."""
    data = StreamedShards(root, workers=workers, window=2)
    epochs = data.plan(plan, 1, 0, 1, batch_size=batch)
    start = time.perf_counter()
    for step in range(epochs[0]["steps"]):
        data.batch(step)
    elapsed = time.perf_counter() - start
    data.close()
    samples = epochs[0]["steps"] * batch
    return samples / elapsed, samples


def train_wait(root: Path, out: Path, workers: int, args) -> tuple[float, float]:
    """Mean data-wait share of a step (window reads included) and the samples per second the steps consume."""
    cfg = TrainConfig.load(
        None,
        [
            *MODEL,
            "data.source='shards'",
            f"data.path={json.dumps(str(root))}",
            f"data.batch_size={args.batch}",
            f"data.workers={workers}",
            "data.window=2",
            "text.encoder='precomputed'",
            f"train.steps={args.steps}",
            "train.ema_decay=0",
            f"train.save_every={args.steps}",
            f"train.out_dir={json.dumps(str(out))}",
        ],
    )
    history = train(cfg, progress=False)[1:]  # the first step builds the reader
    wait = statistics.mean(m["data_wait"] for m in history)
    step_rate = statistics.median(m["samples"] * m["tokens_per_s"] / m["tokens"] for m in history)
    return wait, step_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--per-shard", type=int, default=16)
    parser.add_argument("--latent", type=int, nargs=3, default=(9, 18, 32), metavar=("F", "H", "W"))
    parser.add_argument("--text-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    f, h, w = args.latent
    bucket = f"{(f - 1) * 4 + 1}x{h * 8}x{w * 8}"
    with tempfile.TemporaryDirectory() as tmp:
        root = write_random_latent_shards(
            Path(tmp) / "latents", args.shards, args.per_shard, {bucket: (16, f, h, w)}, text_dim=2560
        )
        size = sum(p.stat().st_size for p in root.glob("shard-*.tar")) / 2**20
        print(
            f"{args.shards} shards x {args.per_shard} samples, bucket {bucket}, {size:.0f} MiB; CPU, "
            f"{torch.get_num_threads()} threads"
        )
        rates = {}
        for workers in (0, 1, 2):
            rates[workers], samples = read_epoch(root, Path(tmp) / f"plan{workers}", workers, args.batch)
            print(f"reader, {workers} worker(s): {rates[workers]:.0f} samples/s over an epoch of {samples}")
        print(f"ratio 1 worker / in-process: {rates[1] / rates[0]:.2f}x; 2 workers / 1: {rates[2] / rates[1]:.2f}x")
        for workers in (0, 1):
            wait, demand = train_wait(root, Path(tmp) / f"run{workers}", workers, args)
            print(
                f"training step, {workers} worker(s): data wait {wait:.1%} of the step; the step consumes "
                f"{demand:.1f} samples/s, the reader gives {rates[workers]:.0f} "
                f"({rates[workers] / demand:.0f}x the demand)"
            )


if __name__ == "__main__":
    main()
