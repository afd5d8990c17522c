"""Training batches from precomputed shards (data/precompute.py).

The samples are held in memory (the scale of the embedded model; a streaming reader for large
sets is future work). Every epoch follows a bucket-balanced plan (data/buckets.py) seeded by the
epoch, so every rank gets one bucket per step and a batch is a pure function of (seed, step,
rank): resuming needs only the step. Texts are padded to the longest caption of the set, with
masks; `null_text` is the empty prompt for caption dropout. Shards without text states (the
word-level encoder is trained with the transformer) give the captions instead.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from motif_video.data.buckets import balanced_plan

VARIANT_TEXTS = ("text", "text_short", "text_truncated")  # long, short, truncated caption states


class LatentShards:
    def __init__(self, path: str | Path, seed: int = 0, with_video: bool = False) -> None:
        path = Path(path)
        shards = sorted(path.glob("shard-*.tar"))
        if not shards:
            raise FileNotFoundError(f"{path} has no precomputed shards (run `motif-video precompute` first)")
        self.seed, self.with_video = seed, with_video
        self.samples = [s for shard in shards for s in _read(shard)]
        if self.samples and "latents" not in self.samples[0]:
            raise ValueError(
                f"{path} holds clips (from `motif-video prepare`), not latents: run `motif-video precompute {path} "
                "WEIGHTS OUT` and train on OUT"
            )
        self.has_text = all("text" in s for s in self.samples)
        if self.has_text:
            null = np.load(path / "null_text.npy")
            lengths = [len(s[k]) for s in self.samples for k in VARIANT_TEXTS if k in s]
            self.text_len = max(max(lengths), len(null))
            self.null_text, self.null_mask = _pad(torch.from_numpy(null), self.text_len)
        # every caption the set can show the model (all three variants where there are three)
        self.captions = [c for s in self.samples for c in (s.get("captions") or [s["caption"]])]
        self.buckets = [s["bucket"] for s in self.samples]
        self._plans: dict[tuple[int, int, int], list[list[list[int]]]] = {}

    def _plan(self, epoch: int, batch_size: int, world: int) -> list[list[list[int]]]:
        key = (epoch, batch_size, world)
        if key not in self._plans:  # one plan per epoch; keep only the newest few
            plan = balanced_plan(self.buckets, world, batch_size // world, seed=self.seed * 1009 + epoch)
            if not plan[0]:
                raise ValueError(f"no bucket has {batch_size} samples: lower data.batch_size")
            self._plans = {k: v for k, v in self._plans.items() if k[0] >= epoch - 1}
            self._plans[key] = plan
        return self._plans[key]

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> dict:
        if batch_size % world:
            raise ValueError(f"global batch {batch_size} does not divide over {world} ranks")
        steps_per_epoch = len(self._plan(0, batch_size, world)[0])
        epoch, position = divmod(step, steps_per_epoch)
        indices = self._plan(epoch, batch_size, world)[rank][position]
        items = [self.samples[i] for i in indices]
        out = {
            "latents": torch.stack([torch.from_numpy(s["latents"]) for s in items]),
            "captions": [s["caption"] for s in items],
            "caption_variants": [s.get("captions") for s in items],  # [long, short, truncated] or None
        }
        if self.has_text:
            texts = [_pad(torch.from_numpy(s["text"]), self.text_len) for s in items]
            out["text"] = torch.stack([t for t, _ in texts])
            out["text_mask"] = torch.stack([m for _, m in texts])
            if all("text_truncated" in s for s in items):  # the three variants' states, [3, B, S, D] and [3, B, S]
                padded = [[_pad(torch.from_numpy(s[k]), self.text_len) for s in items] for k in VARIANT_TEXTS]
                out["text_variants"] = torch.stack([torch.stack([t for t, _ in v]) for v in padded])
                out["text_variant_masks"] = torch.stack([torch.stack([m for _, m in v]) for v in padded])
        if all("image" in s for s in items):
            out["image_tokens"] = torch.stack([torch.from_numpy(s["image"]) for s in items])
        if self.with_video:
            from motif_video.media import read_video

            frames = [torch.from_numpy(read_video(s["mp4"])[0]) for s in items]
            out["video"] = torch.stack(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # [B, 3, F, H, W]
        return out


def _pad(text: Tensor, length: int) -> tuple[Tensor, Tensor]:
    mask = torch.zeros(length, dtype=torch.bool)
    mask[: len(text)] = True
    return torch.nn.functional.pad(text.float(), (0, 0, 0, length - len(text))), mask


def _read(shard: Path) -> list[dict]:
    import json

    entries: dict[str, dict] = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            key, _, kind = member.name.partition(".")
            data = tar.extractfile(member).read()
            entry = entries.setdefault(key, {})
            if kind.endswith("npy"):
                entry[kind.removesuffix(".npy")] = np.load(io.BytesIO(data))
            elif kind == "json":
                meta = json.loads(data)
                entry["bucket"], entry["caption"] = meta["bucket"], meta["caption"]
                if meta.get("captions"):
                    entry["captions"] = meta["captions"]
            elif kind == "mp4":
                entry["mp4"] = data
    return list(entries.values())
