"""Low-memory weights side by side: parameter memory and output drift against bf16.

Two subjects, each with bf16 as the reference and int8 weight-only (torchao), GGUF Q8_0 and GGUF
Q4_0 beside it, and float8 (torchao, dynamic activations and weights) on a GPU of compute
capability 8.9+ (elsewhere the reason it is left out is printed):
- 2B-shaped layers: the 2B preset cut to 2 dual + 2 single + 1 decoder blocks (its full width),
  random weights; one forward on a small video; PSNR of the velocity against bf16.
- the embedded model: a generated video (same prompt, seed, steps); PSNR of the frames against bf16.
Memory is the weights as stored (packed int8 / GGUF blocks plus their scales; the timestep embedder
and adaLN modulation in float32 and the rest in bf16, as `load_transformer` keeps them).

    python benchmarks/low_memory.py [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from measure import device_name

from motif_video.cli.common import silence_libraries
from motif_video.config import get_preset
from motif_video.embedded import embedded_weights
from motif_video.model.checkpoint_io import load_transformer
from motif_video.model.quantized import (
    fp8_unavailable,
    load_gguf_transformer,
    parameter_bytes,
    quantize_fp8,
    quantize_int8,
    write_gguf,
)
from motif_video.model.transformer import MotifVideoTransformer
from motif_video.sampling.pipeline import MotifVideoPipeline


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def variants(model: MotifVideoTransformer, folder: Path, device: str):
    """(name, transformer) for bf16, int8, fp8 (where the device has it), GGUF Q8_0, GGUF Q4_0 of a
    float32 `model`, on `device`."""

    def copy() -> MotifVideoTransformer:
        other = MotifVideoTransformer(model.cfg)
        other.load_state_dict(model.state_dict())
        return other.to_half(torch.bfloat16).to(device)

    int8, fp8 = copy(), copy()
    yield "bf16", model.to_half(torch.bfloat16).to(device)  # as load_transformer does: conditioning in float32
    yield "int8 (torchao)", quantize_int8(int8)
    reason = fp8_unavailable(device)
    if reason is None:
        yield "fp8 (torchao)", quantize_fp8(fp8)
    else:
        print(f"(fp8 left out: {reason})")
    for qtype in ("Q8_0", "Q4_0"):
        path = write_gguf(model.float(), folder / f"{qtype}.gguf", qtype)
        yield f"GGUF {qtype}", load_gguf_transformer(path, dtype=torch.bfloat16, device=device)


def main() -> None:
    silence_libraries()  # torchao's, torch's and diffusers' notices, as the CLI silences them
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="one 2B-shaped block of each kind and 4 sampling steps")
    args = parser.parse_args()
    device = args.device
    torch.manual_seed(0)
    print(device_name(device))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        blocks = 1 if args.quick else 2
        cfg = get_preset("motif-video-2b").replace(
            num_dual_blocks=blocks, num_single_blocks=blocks, num_decoder_blocks=1
        )
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
        for name, model in variants(layers, folder, device):
            with torch.no_grad():
                inputs = (x.bfloat16().to(device), t.to(device), text.bfloat16().to(device))
                out = model(*inputs).velocity.float().cpu().numpy()
            reference = out if reference is None else reference
            size = parameter_bytes(model)
            base = base or size
            peak = float(np.abs(reference).max())
            print(f"| {name} | {size / 2**20:.1f} MiB | {size / base:.3f} | {psnr(out, reference, peak):.1f} |")

        steps = 4 if args.quick else 20
        print(f"\nthe embedded model, a generated video (17 x 64 x 64, {steps} steps, seed 0):")
        print("| weights | memory | ratio to bf16 | PSNR of the frames vs bf16 (dB) |\n|---|---|---|---|")
        pipe = MotifVideoPipeline.from_pretrained(embedded_weights(), device=device)
        float_model = load_transformer(embedded_weights() / "transformer", dtype=torch.float32)
        reference = base = None
        for name, model in variants(float_model, folder, device):
            pipe.transformer = model
            frames = pipe(
                "a red circle moves to the left on a gray background",
                height=64,
                width=64,
                frames=17,
                steps=steps,
                seed=0,
                progress=False,
            ).uint8()
            reference = frames if reference is None else reference
            size = parameter_bytes(model)
            base = base or size
            print(f"| {name} | {size / 2**20:.2f} MiB | {size / base:.3f} | {psnr(frames, reference, 255):.1f} |")


if __name__ == "__main__":
    main()
