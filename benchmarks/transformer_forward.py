"""Our transformer's forward vs diffusers' MotifVideoTransformer3DModel: same weights, same inputs.

Prints the time ratio (ours / diffusers, median of alternating runs in one process) and the
peak-memory ratio of one forward (activations above the resident weights): on CUDA from
`torch.cuda.max_memory_allocated`, on the CPU from the profiler's allocation events.

    python benchmarks/transformer_forward.py                      # CPU, mid-size model
    python benchmarks/transformer_forward.py --size 2b --device cuda --dtype bfloat16 \\
        --latent 13 60 104                                         # 2B, 480p x 49 frames
    python benchmarks/transformer_forward.py --valid-text 512      # an unpadded prompt
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers.utils import logging as diffusers_logging
from measure import device_name, peak_memory, sync

from motif_video.config import TransformerConfig, get_preset
from motif_video.model.checkpoint_io import from_official
from motif_video.model.transformer import MotifVideoTransformer

SIZES = {
    # a mid-size model that runs in seconds on a laptop CPU: every stage and the cross-attention
    "small": get_preset("debug").replace(
        num_heads=4,
        head_dim=64,
        rope_axes_dim=(16, 24, 24),
        text_dim=256,
        image_dim=None,
        num_dual_blocks=3,
        num_single_blocks=3,
        num_decoder_blocks=2,
        cross_attention_dual=False,
    ),
    "2b": get_preset("motif-video-2b").replace(image_dim=None),
}


def build(cfg: TransformerConfig, device: str, dtype: torch.dtype, seed: int = 0):
    """The diffusers model with random weights and ours holding the very same weights."""
    from diffusers import MotifVideoTransformer3DModel

    cfg = cfg.replace(cross_attention_kv="separate")  # the form diffusers implements
    torch.manual_seed(seed)
    reference = MotifVideoTransformer3DModel(**{k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")})
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0.0, 0.02)
    reference = reference.to(device, dtype).eval()
    with torch.device("meta"):
        ours = MotifVideoTransformer(cfg)
    ours.load_state_dict(from_official(cfg, reference.state_dict()), assign=True)
    return reference, ours.eval()


def make_inputs(
    cfg: TransformerConfig,
    latent: tuple[int, int, int],
    text_len: int,
    valid_text: int,
    device: str,
    dtype: torch.dtype,
):
    g = torch.Generator().manual_seed(1)
    f, h, w = latent
    mask = torch.ones(1, text_len)
    mask[:, valid_text:] = 0  # a prompt padded to text_len, as the pipeline sends it
    return dict(
        hidden_states=torch.randn(1, cfg.in_channels, f, h, w, generator=g).to(device, dtype),
        timestep=torch.tensor([500.0], device=device),
        encoder_hidden_states=torch.randn(1, text_len, cfg.text_dim, generator=g).to(device, dtype),
        encoder_attention_mask=mask.to(device),
    )


def forward(model, inputs) -> torch.Tensor:
    out = model(**inputs)
    return out.velocity if hasattr(out, "velocity") else out.sample


def timed(model, inputs, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        forward(model, inputs)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--latent",
        type=int,
        nargs=3,
        default=[5, 16, 16],
        metavar=("F", "H", "W"),
        help="latent frames, height, width (default: %(default)s)",
    )
    parser.add_argument("--text-len", type=int, default=512, help="padded prompt length (pipeline: 512)")
    parser.add_argument("--valid-text", type=int, default=96, help="real tokens in the prompt (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    diffusers_logging.set_verbosity_error()
    torch.set_grad_enabled(False)
    dtype = getattr(torch, args.dtype)
    cfg = SIZES[args.size]
    reference, ours = build(cfg, args.device, dtype)
    if not 0 < args.valid_text <= args.text_len:
        parser.error(f"--valid-text must be in 1..--text-len ({args.text_len}), got {args.valid_text}")
    inputs = make_inputs(cfg, tuple(args.latent), args.text_len, args.valid_text, args.device, dtype)
    diff = (forward(ours, inputs).float() - forward(reference, inputs).float()).abs().max().item()
    times = {"ours": [], "diffusers": []}
    for _ in range(args.repeats):  # alternate, so drifts in machine load hit both alike
        times["ours"].append(timed(ours, inputs, args.device))
        times["diffusers"].append(timed(reference, inputs, args.device))
    peaks = {}
    for name, model in (("ours", ours), ("diffusers", reference)):
        forward(model, inputs)  # warm-up: kernels, allocator pools
        peaks[name] = peak_memory(lambda m=model: forward(m, inputs), args.device)

    tokens = cfg.num_video_tokens(*args.latent)
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"device: {device_name(args.device)}; torch {torch.__version__}; dtype {args.dtype}")
    with torch.device("meta"):
        params = MotifVideoTransformer(cfg).num_parameters()
    print(
        f"model: {args.size} ({params / 1e6:.1f} M params); "
        f"latent {tuple(args.latent)} -> {tokens} video tokens + {args.text_len} text tokens "
        f"({args.valid_text} real)"
    )
    print(f"max |ours - diffusers| = {diff:.2e}")
    print(
        f"forward time   ours {median['ours'] * 1e3:9.1f} ms   diffusers {median['diffusers'] * 1e3:9.1f} ms   "
        f"ratio {median['ours'] / median['diffusers']:.3f}"
    )
    print(
        f"peak memory    ours {peaks['ours'] / 2**20:9.1f} MiB  diffusers {peaks['diffusers'] / 2**20:9.1f} MiB  "
        f"ratio {peaks['ours'] / max(peaks['diffusers'], 1):.3f}"
    )


if __name__ == "__main__":
    main()
