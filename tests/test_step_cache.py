"""Step caching (sampling/cache.py) on the embedded model."""

from __future__ import annotations

import json

import pytest
import torch

from motif_video.cli import main
from motif_video.embedded import embedded_weights
from motif_video.sampling.cache import StepCache
from motif_video.sampling.pipeline import MotifVideoPipeline

PROMPT = "a red circle moves to the left on a gray background"


@pytest.fixture(scope="module")
def pipe():
    return MotifVideoPipeline.from_pretrained(embedded_weights())


def run(pipe, threshold):
    out = pipe(PROMPT, height=64, width=64, frames=17, steps=20, seed=3, progress=False, cache_threshold=threshold)
    return out.latents, pipe.last_cache


def test_off_by_default_and_threshold_zero_changes_nothing(pipe):
    plain, cache = run(pipe, None)
    assert cache is None
    zero, cache = run(pipe, 0.0)
    assert torch.equal(plain, zero) and cache.computed == 20 and cache.reused == 0


def test_larger_thresholds_skip_more_passes_and_stay_close(pipe):
    plain, _ = run(pipe, None)
    previous_reused, errors = -1, []
    for threshold in (0.05, 0.2, 1.0):
        cached, cache = run(pipe, threshold)
        assert cache.computed + cache.reused == 20 and cache.computed >= 2  # first and last steps run
        assert cache.reused >= previous_reused
        previous_reused = cache.reused
        errors.append((cached - plain).abs().mean().item())
    assert previous_reused > 5  # a loose threshold skips many passes
    assert errors[0] <= errors[-1] and errors[-1] > 0


def test_cache_rules():
    cache = StepCache(0.5)
    a = torch.ones(4)
    assert cache.lookup(a, 0, 5) is None  # nothing stored yet
    cache.store(torch.full((4,), 7.0))
    assert torch.equal(cache.lookup(a * 1.1, 1, 5), torch.full((4,), 7.0))  # change 0.1 < 0.5: reused
    assert cache.lookup(a * 2, 2, 5) is None  # 0.1 + 0.82 >= 0.5: recompute
    cache.store(torch.zeros(4))
    assert cache.lookup(a * 2, 4, 5) is None  # the last step always runs
    with pytest.raises(ValueError, match="cache threshold must be >= 0"):
        StepCache(-1)


def test_generate_flag_records_the_cache(tmp_path):
    out = tmp_path / "v.mp4"
    assert main(["generate", PROMPT, "--out", str(out), "--cache-threshold", "0.2", "--quiet"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())["cache"]
    steps = json.loads(out.with_suffix(".json").read_text())["steps"]
    assert record["threshold"] == 0.2 and record["computed"] + record["reused"] == steps and record["computed"] >= 2
    assert main(["generate", PROMPT, "--out", str(out), "--cache-threshold", "-1"]) == 2
