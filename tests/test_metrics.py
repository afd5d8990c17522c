"""Weight-free video metrics on synthetic videos whose answers are known."""

from __future__ import annotations

import numpy as np

from motif_video.data import world
from motif_video.eval.metrics import all_metrics, dynamic_degree, frame_consistency, temporal_flickering


def _moving(frames: int = 9, step: int = 3) -> np.ndarray:
    video = np.full((frames, 48, 64, 3), 30, np.uint8)
    for f in range(frames):
        video[f, 16:32, 8 + step * f : 24 + step * f] = 220
    return video


def test_static_video_flickers_not_and_does_not_move():
    static = np.repeat(world.render(world.scene(0, 2), 1, 48, 64), 9, axis=0)
    assert temporal_flickering(static) == 1.0
    assert dynamic_degree(static)["top_flow"] < 0.05 and dynamic_degree(static)["moving_share"] == 0
    assert frame_consistency(static) > 0.999


def test_flicker_and_motion_are_measured():
    rng = np.random.default_rng(0)
    flicker = np.repeat(rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8), 9, axis=0)
    flicker[1::2] = 255 - flicker[1::2]  # every other frame inverted
    assert temporal_flickering(flicker) < 0.6
    slow, fast = dynamic_degree(_moving(step=1))["top_flow"], dynamic_degree(_moving(step=3))["top_flow"]
    assert 0.5 < slow < fast  # the flow grows with the speed
    assert dynamic_degree(_moving(step=3))["moving_share"] == 1.0
    assert frame_consistency(_moving(step=3)) < frame_consistency(_moving(step=1)) < 1.0
    assert set(all_metrics(_moving())) == {
        "temporal_flickering",
        "dynamic_degree_top_flow",
        "dynamic_degree_moving_share",
        "frame_consistency_ssim",
    }
