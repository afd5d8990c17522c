"""Load on `motif-video serve`: N requests queued at once from C gradio_client clients.

Starts the server (embedded model unless --weights), times one request alone, then submits N
requests round-robin over C clients (each client in its own thread, submissions 0.2 s apart so
their queue order is known) and waits for all. Prints: errors, whether the queue served them in
submission order (each reply's JSON carries the server's `request` counter), the total time vs N
times the lone request (the queue's overhead ratio), and the server's resident memory before and
after (bounded: the pipeline is loaded once, requests leave nothing behind but files).

    python benchmarks/serve_load.py                       # 20 requests, 4 clients, embedded model
    python benchmarks/serve_load.py --steps 4 --json      # what tests/test_serve.py runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from gradio_client import Client

from motif_video.embedded import embedded_weights, manifest
from motif_video.serve import BackgroundServer, presets_for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="pipeline directory (default: the embedded model)")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--port", type=int, default=7870)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    weights = Path(args.weights) if args.weights else embedded_weights()
    presets = presets_for(weights)
    steps = args.steps or presets.steps
    size, length = next(iter(presets.sizes)), next(iter(presets.lengths))
    prompt = "a red circle moves to the left on a gray background" if args.weights is None else "a cat walks"

    def request(client: Client, seed: int) -> dict:
        return client.predict(
            prompt, presets.negative_prompt, None, seed, steps, 4.0, size, length, api_name="/generate"
        )[2]

    with (
        tempfile.TemporaryDirectory() as out,
        BackgroundServer(
            "--weights", str(weights), "--out-dir", out, "--max-queue", str(args.requests + 4), port=args.port
        ) as server,
    ):
        clients = [Client(server.url, verbose=False) for _ in range(args.clients)]
        request(clients[0], 0)  # warm-up: first-call costs (allocations, lazy imports) are not load
        rss_before = server.rss_bytes()
        started = time.perf_counter()
        request(clients[0], 1)
        alone = time.perf_counter() - started

        jobs, errors = [], []
        started = time.perf_counter()
        for i in range(args.requests):
            jobs.append(
                clients[i % args.clients].submit(
                    prompt, presets.negative_prompt, None, 100 + i, steps, 4.0, size, length, api_name="/generate"
                )
            )
            time.sleep(0.2)
        records: list[dict | None] = [None] * len(jobs)

        def wait(i: int) -> None:
            try:
                records[i] = jobs[i].result(timeout=3600)[2]
            except Exception as e:  # an error is a finding here, not a crash
                errors.append(f"request {i}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = time.perf_counter() - started
        rss_after = server.rss_bytes()

    served = [r["request"] for r in records if r is not None]
    result = {
        "device": f"CPU ({os.cpu_count()} cores)",
        "model": manifest(weights).get("name", str(weights)),
        "steps": steps,
        "requests": args.requests,
        "clients": args.clients,
        "completed": len(served),
        "errors": errors,
        "in_order": served == sorted(served) and len(served) == args.requests,
        "seeds_match": all(r["seed"] == 100 + i for i, r in enumerate(records) if r is not None),
        "seconds_alone": alone,
        "seconds_total": total,
        "overhead_ratio": total / (args.requests * alone),
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['completed']}/{args.requests} requests from {args.clients} clients completed, "
            f"{len(errors)} errors, served in submission order: {result['in_order']}"
        )
        print(
            f"one request alone {alone:.2f} s; {args.requests} queued {total:.1f} s = "
            f"{result['overhead_ratio']:.2f} x {args.requests} lone requests"
        )
        print(f"server memory {result['rss_before_mb']:.0f} MiB before, {result['rss_after_mb']:.0f} MiB after")
        for e in errors:
            print(e)
    return 0 if not errors and result["in_order"] else 1


if __name__ == "__main__":
    sys.exit(main())
