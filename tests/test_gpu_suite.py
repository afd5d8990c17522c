"""benchmarks/gpu_suite.py, the one command for every GPU figure, runs end to end at tiny sizes on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


def test_gpu_suite_smoke_runs_every_check_and_writes_the_table(tmp_path):
    out = tmp_path / "suite.md"
    done = subprocess.run(
        [sys.executable, str(SUITE), "--smoke", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    names = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert names == [
        "sampling, small",
        "sampling, small, split passes",
        "forward, small",
        "training step, small",
        "int8 / fp8 memory and drift",
    ]
    assert all("FAILED" not in row and "(no result line)" not in row for row in rows), table
    assert "ratio" in rows[0] and "ratio" in rows[2]  # ours vs diffusers, side by side
    assert "fp8 left out: --quantize fp8 needs an NVIDIA GPU" in rows[4]  # the reason, on a CPU
    no_gpu = subprocess.run([sys.executable, str(SUITE)], capture_output=True, text=True, timeout=120)
    assert no_gpu.returncode != 0 and "no GPU here: run with --smoke" in no_gpu.stderr
