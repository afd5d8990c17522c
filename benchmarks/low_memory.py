"""Low-memory weights side by side: parameter memory and output drift against bf16.

Two subjects, each with bf16 as the reference and int8 weight-only (torchao), GGUF Q8_0 and GGUF
Q4_0 beside it:
- 2B-shaped layers: the 2B preset cut to 2 dual + 2 single + 1 decoder blocks (its full width),
  random weights; one forward on a small video; PSNR of the velocity against bf16.
- the embedded model: a generated video (same prompt, seed, steps); PSNR of the frames against bf16.
Memory is the weights as stored (packed int8 / GGUF blocks plus their scales; the timestep embedder
and adaLN modulation in float32 and the rest in bf16, as `load_transformer` keeps them).

    python benchmarks/low_memory.py
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from measure import device_name

from motif_video.config import get_preset
from motif_video.embedded import embedded_weights
from motif_video.model.checkpoint_io import load_transformer
from motif_video.model.quantized import load_gguf_transformer, parameter_bytes, quantize_int8, write_gguf
from motif_video.model.transformer import MotifVideoTransformer
from motif_video.sampling.pipeline import MotifVideoPipeline


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def variants(model: MotifVideoTransformer, folder: Path):
    """(name, transformer) for bf16, int8, GGUF Q8_0, GGUF Q4_0 of a float32 `model`."""
    int8 = MotifVideoTransformer(model.cfg)
    int8.load_state_dict(model.state_dict())
    yield "bf16", model.to_half(torch.bfloat16)  # as load_transformer does: the conditioning path in float32
    yield "int8 (torchao)", quantize_int8(int8.to_half(torch.bfloat16))
    for qtype in ("Q8_0", "Q4_0"):
        path = write_gguf(model.float(), folder / f"{qtype}.gguf", qtype)
        yield f"GGUF {qtype}", load_gguf_transformer(path, dtype=torch.bfloat16)


def main() -> None:
    torch.manual_seed(0)
    print(device_name("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = get_preset("motif-video-2b").replace(num_dual_blocks=2, num_single_blocks=2, num_decoder_blocks=1)
        layers = MotifVideoTransformer(cfg)
        with torch.no_grad():
            for p in layers.parameters():
                p.normal_(0.0, 0.02)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(1, cfg.in_channels, 3, 16, 16, generator=g)
        text = torch.randn(1, 16, cfg.text_dim, generator=g)
        t = torch.tensor([500.0])
        print("\n2B-shaped layers (2 dual + 2 single + 1 decoder blocks at full width), one forward:")
        print("| weights | memory | ratio to bf16 | PSNR vs bf16 (dB) |\n|---|---|---|---|")
        reference = base = None
        for name, model in variants(layers, folder):
            with torch.no_grad():
                out = model(x.bfloat16(), t, text.bfloat16()).velocity.float().numpy()
            reference = out if reference is None else reference
            size = parameter_bytes(model)
            base = base or size
            peak = float(np.abs(reference).max())
            print(f"| {name} | {size / 2**20:.1f} MiB | {size / base:.3f} | {psnr(out, reference, peak):.1f} |")

        print("\nthe embedded model, a generated video (17 x 64 x 64, 20 steps, seed 0):")
        print("| weights | memory | ratio to bf16 | PSNR of the frames vs bf16 (dB) |\n|---|---|---|---|")
        pipe = MotifVideoPipeline.from_pretrained(embedded_weights())
        float_model = load_transformer(embedded_weights() / "transformer", dtype=torch.float32)
        reference = base = None
        for name, model in variants(float_model, folder):
            pipe.transformer = model
            frames = pipe(
                "a red circle moves to the left on a gray background",
                height=64,
                width=64,
                frames=17,
                steps=20,
                seed=0,
                progress=False,
            ).uint8()
            reference = frames if reference is None else reference
            size = parameter_bytes(model)
            base = base or size
            print(f"| {name} | {size / 2**20:.2f} MiB | {size / base:.3f} | {psnr(frames, reference, 255):.1f} |")


if __name__ == "__main__":
    main()
