"""Where the per-source work runs: a local process pool (default) or Ray Data (many machines).

Both call the same function on the same items and return results in the items' order; the work
itself writes its table part, so either engine can be stopped and restarted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

from tqdm.auto import tqdm


def run_local(fn: Callable[[Any], Any], items: Sequence, workers: int, desc: str, progress: bool) -> list:
    """`fn` over `items` in `workers` processes (in this process when workers == 1), with a progress bar."""
    results: list = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=not progress)
    if workers <= 1 or len(items) <= 1:
        for i, item in enumerate(items):
            results[i] = fn(item)
            bar.update()
    else:
        # spawn: workers start clean (no inherited thread pools of torch / OpenCV / onnxruntime)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    bar.close()
    return results


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def run_ray(fn: Callable[[Any], Any], items: Sequence, address: str | None, workers: int, progress: bool) -> list:
    """`fn` over `items` as a Ray Data map (one task per item), on the cluster at `address` or a local
    instance with `workers` CPUs."""
    import ray

    started = False
    if not ray.is_initialized():
        options: dict = {"include_dashboard": False, "log_to_driver": False}
        if address:
            options["address"] = address
        else:
            options["num_cpus"] = max(1, workers)
        ray.init(**options)
        started = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        data = ray.data.from_items([{"index": i, "item": item} for i, item in enumerate(items)])
        data = data.repartition(max(1, len(items)))
        out = data.map(lambda row: {"index": row["index"], "result": fn(row["item"])}).take_all()
    finally:
        if started:
            ray.shutdown()
    results: list = [None] * len(items)
    for row in out:
        results[row["index"]] = row["result"]
    return results
