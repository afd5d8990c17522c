"""Precompute: clip shards -> shards of VAE latents and text embeddings, so training runs neither.

For every clip of a `prepare` shard: the normalised VAE posterior mean of the clip, the caption's
text-encoder states (real tokens only) and, when the text encoder has a vision tower, the image
tokens of the first frame; the clip itself is kept for REPA teachers. Output shard `NAME.tar`
holds `KEY.latents.npy`, `KEY.text.npy` (with three caption variants also `KEY.text_short.npy` and
`KEY.text_truncated.npy`), `KEY.image.npy`, `KEY.mp4` and `KEY.json`, and beside it `NAME.jsonl`, its
index (key, bucket, captions, text length per sample: what the training plan reads, data/stream.py);
`null_text.npy` is the empty prompt's states (caption dropout). Under torchrun each rank takes every world-th
input shard and writes its own outputs; a shard whose output exists is skipped (resume), and
outputs are written under a temporary name and renamed. With `with_text=False` (a text encoder
trained together with the transformer) only latents and clips are written.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from motif_video.data.shards import _add_bytes, iterate_shard
from motif_video.data.stream import index_row
from motif_video.media import read_video


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@torch.no_grad()
def precompute(
    clips_dir: str | Path,
    weights: str | Path,
    out_dir: str | Path,
    rank: int = 0,
    world: int = 1,
    device: str = "cpu",
    progress: bool = True,
    with_text: bool = True,
) -> list[Path]:
    """`weights`: a pipeline directory (its `vae/`, and with `with_text` its text encoder)."""
    from motif_video.model.text_encoder import load_text_encoder
    from motif_video.model.vae import load_autoencoder

    clips_dir, out_dir = Path(clips_dir), Path(out_dir)
    shards = sorted(clips_dir.glob("shard-*.tar"))
    if not shards:
        raise FileNotFoundError(f"{clips_dir} has no shard-*.tar (run `motif-video prepare` first)")
    out_dir.mkdir(parents=True, exist_ok=True)
    vae = load_autoencoder(Path(weights) / "vae", device=device)
    text_encoder = load_text_encoder(weights, device=device) if with_text else None
    has_vision = text_encoder is not None and text_encoder.image_processor is not None
    written = []
    for shard in tqdm(shards[rank::world], desc=f"precompute rank {rank}", disable=not progress):
        target = out_dir / shard.name
        if target.exists():
            continue
        tmp = target.with_suffix(".tar.tmp")
        try:
            rows = _encode_shard(shard, tmp, vae, text_encoder, has_vision)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            write_lines(target.with_suffix(".jsonl"), rows)
        except BaseException:
            tmp.unlink(missing_ok=True)  # nothing half-written stays behind
            raise
        os.replace(tmp, target)  # the commit point: the listing is written before it
        written.append(target)
    if rank == 0:
        from motif_video.media import atomic_write, write_json

        if text_encoder is not None and not (out_dir / "null_text.npy").exists():
            null, mask = text_encoder.encode([""])
            state = null[0, : int(mask.sum())].float().cpu().numpy()
            atomic_write(out_dir / "null_text.npy", lambda tmp: np.save(tmp, state))
        record = {  # what made these shards: training checks its model against it
            "weights": str(Path(weights).resolve()),
            "latent_channels": vae.z_dim,
            "text_encoder": None if text_encoder is None else type(text_encoder).__name__,
            "text_dim": None if text_encoder is None else int(text_encoder.encode(["a"])[0].shape[-1]),
        }
        write_json(record, out_dir / "encoders.json")
    return written


def write_lines(path: Path, rows: list[dict]) -> None:
    from motif_video.media import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text("".join(json.dumps(row) + "\n" for row in rows)))


def _encode_shard(shard: Path, tmp: Path, vae, text_encoder, has_vision: bool) -> list[dict]:
    """Write the latent shard `tmp`; returns its index rows."""
    rows = []
    with tarfile.open(tmp, "w") as tar:
        for meta, mp4 in iterate_shard(shard):
            frames, _ = read_video(mp4)
            video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # [1, 3, F, H, W]
            latents = vae.encode(video, sample=False)[0]
            key = meta["key"]
            _add_bytes(tar, f"{key}.latents.npy", _npy(latents.float().cpu().numpy()))
            text_tokens = 0
            if text_encoder is not None:  # the caption, and its short and truncated variants where it has them
                texts = {"text": meta["caption"]}
                if meta.get("captions"):
                    texts.update(text_short=meta["captions"][1], text_truncated=meta["captions"][2])
                for name, caption in texts.items():
                    try:
                        states, mask = text_encoder.encode([caption])
                    except ValueError as e:  # e.g. words a word-level encoder does not know
                        raise ValueError(
                            f"clip {key} of {shard} (from {meta.get('source')}): its caption {caption[:80]!r} "
                            f"cannot be encoded: {e}"
                        ) from None
                    text_tokens = max(text_tokens, int(mask.sum()))
                    _add_bytes(tar, f"{key}.{name}.npy", _npy(states[0, : int(mask.sum())].float().cpu().numpy()))
            if has_vision:
                image = text_encoder.encode_image((video[:, :, 0] + 1) / 2)
                _add_bytes(tar, f"{key}.image.npy", _npy(image[0].float().cpu().numpy()))
            _add_bytes(tar, f"{key}.mp4", mp4)
            _add_bytes(tar, f"{key}.json", json.dumps(meta).encode())
            rows.append(index_row(key, meta, text_tokens))
    return rows
