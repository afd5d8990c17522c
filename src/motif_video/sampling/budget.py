"""How much memory a generation request needs, estimated before any weight is loaded.

    weights      parameters of transformer/, vae/ and text_encoder/ (from the safetensors headers) x dtype bytes
    transformer  the video and text tokens of the guidance batch (2 x videos with guidance) through one block:
                 ~16 hidden-size activations per token (Q/K/V, attention output, the MLP's 4x expansion, residual);
                 on the CPU also one block's attention scores (heads x tokens^2: masked attention there takes
                 the math path), on CUDA none (flash / memory-efficient kernels)
    decode       the decoded video in float32, and the VAE's widest full-resolution feature map over a chunk of
                 frames, 4 copies of each live at the peak

A coarse, deliberately generous figure: its job is to refuse a request that cannot fit (a 16k x 16k
frame, 100,000 frames) before minutes of allocation end deep inside torch, not to predict the peak
to the megabyte. `--force` lifts the refusal.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3


@dataclass(frozen=True)
class Estimate:
    weights: int
    transformer: int
    decode: int

    @property
    def total(self) -> int:
        return self.weights + self.transformer + self.decode

    def describe(self) -> str:
        return (
            f"about {self.total / GIB:.1f} GiB (weights {self.weights / GIB:.1f}, transformer activations "
            f"{self.transformer / GIB:.1f}, decoding {self.decode / GIB:.1f})"
        )


def parameter_count(root: Path) -> int:
    from safetensors import safe_open

    count = 0
    for part in ("transformer", "vae", "text_encoder"):
        for file in (root / part).glob("*.safetensors"):
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    n = 1
                    for d in f.get_slice(key).get_shape():
                        n *= d
                    count += n
    return count


def estimate(
    root: Path,
    height: int,
    width: int,
    frames: int,
    batch: int,
    dtype_bytes: int,
    guided: bool,
    parameters: int | None = None,
    device_type: str = "cpu",
) -> Estimate:
    transformer = json.loads((root / "transformer" / "config.json").read_text())
    vae = json.loads((root / "vae" / "config.json").read_text())
    spatial, temporal = vae.get("scale_factor_spatial", 8), vae.get("scale_factor_temporal", 4)
    patch = transformer.get("patch_size", 2)
    hidden = transformer.get("num_attention_heads", 1) * transformer.get("attention_head_dim", 1)
    latent_frames = (frames - 1) // temporal + 1
    tokens = latent_frames * (height // spatial // patch) * (width // spatial // patch)
    text = transformer.get("text_max_length", 512) if "text_max_length" in transformer else 512
    passes = 2 if guided else 1
    activations = batch * passes * (tokens + text) * hidden * 16 * dtype_bytes
    if device_type != "cuda":
        activations += batch * passes * transformer.get("num_attention_heads", 1) * (tokens + text) ** 2 * 4
    widest = vae.get("base_dim", 96) * (vae.get("dim_mult") or [1])[0]
    decode = batch * frames * height * width * 3 * 4 * 4 + batch * 4 * height * width * widest * 4 * 4
    parameters = parameter_count(root) if parameters is None else parameters
    return Estimate(parameters * dtype_bytes, activations, decode)


def available(device: str) -> int:
    """Bytes free for a new allocation on `device` (CUDA: free device memory; CPU: MemAvailable)."""
    import torch

    if torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check(root: Path, height: int, width: int, frames: int, batch: int, dtype_bytes: int, guided: bool, device: str):
    """ValueError when the request will not fit, saying what would (the longest video at this size)."""
    parameters = parameter_count(root)

    import torch

    def need(n: int) -> Estimate:
        return estimate(root, height, width, n, batch, dtype_bytes, guided, parameters, torch.device(device).type)

    have = available(device)
    if need(frames).total <= have:
        return need(frames)
    lo, hi = -1, (frames - 1) // 4  # the longest 4k+1 video at this size and batch: need() grows with k
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(4 * mid + 1).total <= have else (lo, mid - 1)
    fits = 4 * lo + 1 if lo >= 0 else None
    advice = (
        f"at {width}x{height} and batch {batch}, at most {fits} frames would fit"
        if fits
        else "not even one frame at this size fits: lower --height / --width or --batch"
    )
    raise ValueError(
        f"this request needs {need(frames).describe()}, but {device} has {have / GIB:.1f} GiB available; {advice} "
        "(--force tries anyway)"
    )
