"""One training step under different switches, measured side by side in one run.

Pairs: TREAD (keep 50% of the video tokens over the middle encoder blocks) vs none; activation
checkpointing vs none; REPA (tiny V-JEPA 2 teacher, online) vs none; gradient accumulation (the
batch in 2 micro-batches: the same update) vs none. Prints the median step time
and the peak memory of a step (CPU: profiler allocation events; CUDA: the allocator's peak), and
the ratio of each pair. For the plain step (no switch) it also prints video tokens per second and,
on a GPU that training/compute.py knows, the model FLOPs utilisation (MFU): the step's matrix
FLOPs (compute.training_flops, TREAD-aware) over the time, against the card's dense bf16 peak.

    python benchmarks/training_step.py                   # CPU, mid-size model
    python benchmarks/training_step.py --preset motif-video-2b --device cuda --precision bf16 \\
        --latent 13 60 104                               # 480p x 49 frames (GPU)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from measure import device_name, peak_memory, sync

from motif_video.distributed import World
from motif_video.training.compute import PEAK_FLOPS, Routing, training_flops
from motif_video.training.config import TrainConfig
from motif_video.training.train import build, train_step

SMALL = [
    "model.overrides.num_heads=4",
    "model.overrides.head_dim=64",
    "model.overrides.rope_axes_dim=[16,24,24]",
    "model.overrides.num_dual_blocks=3",
    "model.overrides.num_single_blocks=5",
    "model.overrides.num_decoder_blocks=2",
]


def measure(overrides: list[str], args, world: World) -> tuple[float, int, float, int]:
    """Median step time (s), peak memory of a step (bytes), the step's matrix FLOPs and its video tokens."""
    cfg = TrainConfig.load(None, overrides)
    state = build(cfg, world)
    model = state.model.transformer.cfg
    f, h, w = args.latent
    end = cfg.tread.last_block(model.num_dual_blocks + model.num_single_blocks)
    routing = Routing(cfg.tread.start, end, cfg.tread.keep_ratio)
    tokens = model.num_video_tokens(f, h, w)
    routed = routing if cfg.tread.enabled else None
    flops = args.batch * training_flops(model, tokens, cfg.data.text_len, routing=routed)
    step = 1  # a video step (every 4th step is an image batch)
    train_step(state, step)  # warm-up
    times = []
    for _ in range(args.repeats):
        sync(args.device)
        start = time.perf_counter()
        train_step(state, step)
        sync(args.device)
        times.append(time.perf_counter() - start)
    memory = peak_memory(lambda: train_step(state, step), args.device)
    return statistics.median(times), memory, flops, args.batch * tokens


def throughput(seconds: float, flops: float, tokens: int, device: str) -> str:
    """Video tokens per second of a step, and its MFU where the GPU's peak is known."""
    text = f"{tokens / seconds:,.0f} video tokens/s"
    if device.startswith("cuda"):
        name = device_name(device).lower()
        peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
        text += f", {flops / seconds / 1e12:.1f} TFLOP/s" + (f", MFU {flops / seconds / peak:.3f}" if peak else "")
    return text


def tiny_vjepa(path: Path) -> Path:
    from transformers import VJEPA2Config, VJEPA2Model

    VJEPA2Model(
        VJEPA2Config(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            mlp_ratio=2,
            crop_size=64,
            frames_per_clip=4,
            pred_hidden_size=32,
            pred_num_hidden_layers=1,
            pred_num_attention_heads=2,
        )
    ).save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="a transformer preset instead of the mid-size default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--latent", type=int, nargs=3, default=[5, 16, 16], metavar=("F", "H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    world = World(rank=0, size=1, local_rank=0, device=torch.device(args.device))
    f, h, w = args.latent
    model = [f"model.preset='{args.preset}'"] if args.preset else ["model.preset='debug'", *SMALL]
    with tempfile.TemporaryDirectory() as tmp:
        base = [
            *model,
            f"data.batch_size={args.batch}",
            f"data.latent_frames={f}",
            f"data.latent_height={h}",
            f"data.latent_width={w}",
            "data.text_len=64",
            f"train.precision='{args.precision}'",
            f"train.out_dir='{tmp}/run'",
            "tread.enabled=false",
            "flow.i2v_fraction=0.0",
        ]
        teacher = tiny_vjepa(Path(tmp) / "vjepa")
        pairs = {
            "TREAD 50% (blocks 1..-2) vs none": (
                ["tread.enabled=true", "tread.keep_ratio=0.5", "tread.start=1", "tread.end=-2"],
                [],
            ),
            "activation checkpointing vs none": (["train.activation_checkpointing=true"], []),
            "gradient accumulation 2 vs none": (["train.grad_accum=2"], []),
            "REPA (V-JEPA 2 teacher) vs none": (
                ["repa.enabled=true", f"repa.teacher_path='{teacher}'", "repa.block=2", "repa.projector_dim=256"],
                [],
            ),
        }
        print(
            f"device: {device_name(args.device)}; "
            f"torch {torch.__version__}; precision {args.precision}; latent {tuple(args.latent)}, batch {args.batch}"
        )
        plain = None
        for name, (with_, without) in pairs.items():
            t1, m1, f1, n1 = measure(base + with_, args, world)
            t0, m0, f0, n0 = measure(base + without, args, world)
            plain = plain or (t0, f0, n0)
            print(
                f"{name:36s} time {t1 * 1e3:8.1f} / {t0 * 1e3:8.1f} ms = {t1 / t0:.3f}   "
                f"peak {m1 / 2**20:7.1f} / {m0 / 2**20:7.1f} MiB = {m1 / max(m0, 1):.3f}   "
                f"with: {throughput(t1, f1, n1, args.device)}"
            )
        print(f"plain step (no switch): {plain[0] * 1e3:.1f} ms, {throughput(*plain, args.device)}")


if __name__ == "__main__":
    main()
