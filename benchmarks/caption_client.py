"""Captioning client throughput against a local OpenAI-compatible stub (tests/vlm_stub.py).

The stub answers every request after a fixed delay (standing in for the model's generation time);
the client sends N requests of 8 frames each (640 x 360 JPEG data URLs) at concurrency 1 and K.
Printed: requests per second at each concurrency and their ratio, and the client's own cost per
request (encoding frames, JSON, HTTP, parsing) measured with a zero-delay stub.

    python benchmarks/caption_client.py --requests 64 --delay 0.2 --concurrency 8
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from vlm_stub import StubServer, answer  # noqa: E402

from motif_video.data.captions.backends import ServerBackend  # noqa: E402
from motif_video.data.captions.schema import VIDEO_PROMPT, parse  # noqa: E402


def rate(requests: int, delay: float, concurrency: int, frames: list[np.ndarray]) -> float:
    with StubServer(default=("slow", delay, answer())) as stub:
        backend = ServerBackend(stub.url, "stub")
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda _: parse(backend(VIDEO_PROMPT, frames)), range(requests)))
        return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.2, help="the stub's seconds per answer")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(8)]
    overhead = 1 / rate(args.requests, 0.0, 1, frames)
    one = rate(args.requests, args.delay, 1, frames)
    many = rate(args.requests, args.delay, args.concurrency, frames)
    print(f"client cost per request (8 frames, zero-delay stub): {overhead * 1000:.1f} ms")
    print(
        f"stub delay {args.delay} s: concurrency 1 {one:.2f} req/s, concurrency {args.concurrency} {many:.2f} req/s, "
        f"ratio {many / one:.2f}x (ideal {args.concurrency}x)"
    )


if __name__ == "__main__":
    main()
