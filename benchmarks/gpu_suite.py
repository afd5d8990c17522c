"""Every GPU figure of docs/benchmarks.md from one command, on one GPU, as one markdown table.

Runs the benchmarks of this folder one after another (each in its own process, each printing
its ratios measured side by side) and collects their result lines:
- sampling step time and peak memory, ours vs diffusers' pipeline (bf16, 2B-shaped random weights),
  at 832x480x49 and 1280x720x121, eager and with `--compile` (both compiled per block);
- the transformer forward alone, ours vs diffusers, at 832x480x49;
- int8 and fp8 (torchao) memory and drift against bf16 (fp8: compute capability 8.9+);
- context parallel: a row saying it was not measured (it needs 2+ GPUs; the suite has no
  multi-GPU run yet: tests/test_context_parallel.py checks its equality on CPU processes);
- the 2B training step at 480p x 49 frames: plain / TREAD / activation checkpointing, with time,
  memory and MFU.

    python benchmarks/gpu_suite.py --out gpu-figures.md          # on the GPU machine, < 8 minutes
    python benchmarks/gpu_suite.py --smoke --out smoke.md        # tiny sizes on the CPU (tests run this)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAINING = " = |tokens/s|MFU"  # the result lines of training_step.py
MEMORY = "MiB |left out"  # of low_memory.py: its table rows, and why fp8 is left out where it is


def checks(smoke: bool, gpus: int) -> list[tuple[str, list[str], str]]:
    """(name, arguments of a benchmark script, what of its output is the result) per check."""
    if smoke:  # the same scripts at tiny sizes on the CPU, so that nothing in the suite rots
        device = ["--device", "cpu", "--dtype", "float32"]
        small = ["--size", "small", "--height", "32", "--width", "48", "--frames", "5", "--steps", "3", "--rounds", "1"]
        return [
            ("sampling, small", ["sampling.py", *device, *small], "ratio"),
            ("sampling, small, split passes", ["sampling.py", *device, *small, "--guidance-passes", "split"], "ratio"),
            ("forward, small", ["transformer_forward.py", *device, "--size", "small", "--repeats", "2"], "ratio"),
            ("training step, small", ["training_step.py", "--latent", "2", "4", "4", "--repeats", "1"], TRAINING),
            ("int8 / fp8 memory and drift", ["low_memory.py", "--device", "cpu", "--quick"], MEMORY),
        ]
    gpu = ["--device", "cuda", "--dtype", "bfloat16", "--size", "2b"]
    sizes = {"832x480x49": ["--width", "832", "--height", "480", "--frames", "49"]}
    sizes["1280x720x121"] = ["--width", "1280", "--height", "720", "--frames", "121"]
    out = []
    for name, size in sizes.items():
        for compiled in (False, True):
            extra = ["--compile", "--rounds", "2"] if compiled else ["--rounds", "1"]
            label = f"sampling step, {name}" + (", compiled" if compiled else "")
            out.append((label, ["sampling.py", *gpu, *size, "--steps", "4", *extra], "ratio"))
    out.append(("forward, 832x480x49", ["transformer_forward.py", *gpu[:4], "--size", "2b", "--repeats", "3"], "ratio"))
    out.append(("int8 / fp8 memory and drift", ["low_memory.py", "--device", "cuda", "--quick"], MEMORY))
    train = ["training_step.py", "--preset", "motif-video-2b", "--device", "cuda", "--precision", "bf16"]
    out.append(("2B training step, 480p x 49", [*train, "--latent", "13", "60", "104", "--batch", "1"], TRAINING))
    return out


def run(args: list[str], timeout: float) -> tuple[int, str, float]:
    command = [sys.executable, str(HERE / args[0]), *args[1:]]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=HERE)
        output = done.stdout + ("\n" + done.stderr.strip().splitlines()[-1] if done.returncode and done.stderr else "")
        return done.returncode, output, time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s", time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (checks that every part runs)")
    parser.add_argument("--out", default="gpu-suite.md", help="the markdown table (also printed)")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per check")
    args = parser.parse_args()
    import torch

    gpus = torch.cuda.device_count()
    if not args.smoke and gpus == 0:
        sys.exit("no GPU here: run with --smoke for the CPU check of the suite")
    card = "CPU" if args.smoke else torch.cuda.get_device_name(0)
    rows, failed = [], 0
    for name, script, keep in checks(args.smoke, gpus):
        code, output, seconds = run(script, args.timeout)
        lines = [line.strip() for line in output.splitlines() if any(k in line for k in keep.split("|"))]
        if code != 0:
            failed += 1
            lines = [f"FAILED (exit {code}): {output.strip().splitlines()[-1] if output.strip() else ''}"]
        result = "<br>".join(line.replace("|", "/") for line in lines) or "(no result line)"
        rows.append(f"| {name} | `{' '.join(script)}` | {result} | {seconds:.0f} |")
        print(f"{name}: {seconds:.0f} s, exit {code}", flush=True)
    if not args.smoke:
        rows.append(f"| context parallel | - | not measured: {gpus} GPU(s) here; the suite has no multi-GPU run | 0 |")
    table = "\n".join(
        [
            f"GPU suite on {card}, torch {torch.__version__}" + (" (smoke: tiny sizes)" if args.smoke else ""),
            "",
            "| check | benchmark | result | seconds |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    Path(args.out).write_text(table + "\n")
    print(table)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
