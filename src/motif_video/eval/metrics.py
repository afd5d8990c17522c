"""Weight-free video metrics, each named after the VBench dimension it approximates.

All take a video as [F, H, W, 3] uint8 and need no model weights, so they run anywhere.

- temporal_flickering: VBench's own definition (no weights): the mean over consecutive frame
  pairs of (255 - mean |frame_t - frame_t+1|) / 255. 1 for a static video; VBench applies it to
  static-camera prompts, where any change is flicker.
- dynamic_degree: VBench uses RAFT optical flow and thresholds the largest flow magnitudes; here
  OpenCV's Farneback flow stands in, reported as the mean of the top 5% flow magnitudes per frame
  pair in pixels (plus the share of pairs above a threshold, VBench's binary view).
- frame_consistency: mean SSIM between consecutive frames (grey, 7x7 windows); VBench's subject
  and background consistency compare DINO / CLIP features instead, so this is only the
  pixel-level counterpart.
"""

from __future__ import annotations

import numpy as np


def temporal_flickering(video: np.ndarray) -> float:
    if len(video) < 2:
        return 1.0
    diffs = np.abs(video[1:].astype(np.float32) - video[:-1].astype(np.float32)).mean(axis=(1, 2, 3))
    return float(((255.0 - diffs) / 255.0).mean())


def dynamic_degree(video: np.ndarray, threshold: float = 1.0) -> dict[str, float]:
    import cv2

    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in video]
    tops = []
    for a, b in zip(grey[:-1], grey[1:], strict=True):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        magnitude = np.linalg.norm(flow, axis=-1).ravel()
        count = max(1, len(magnitude) // 20)
        tops.append(float(np.sort(magnitude)[-count:].mean()))
    if not tops:
        return {"top_flow": 0.0, "moving_share": 0.0}
    return {"top_flow": float(np.mean(tops)), "moving_share": float(np.mean([t > threshold for t in tops]))}


def frame_consistency(video: np.ndarray) -> float:
    if len(video) < 2:
        return 1.0
    grey = video.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return float(np.mean([_ssim(a, b) for a, b in zip(grey[:-1], grey[1:], strict=True)]))


def _ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Structural similarity with uniform windows (Wang et al. 2004), on 0..255 images."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def mean(x: np.ndarray) -> np.ndarray:  # box filter, valid region
        s = np.cumsum(np.cumsum(np.pad(x, ((1, 0), (1, 0))), axis=0), axis=1)
        w = window
        return (s[w:, w:] - s[:-w, w:] - s[w:, :-w] + s[:-w, :-w]) / (w * w)

    ma, mb = mean(a), mean(b)
    va, vb, cov = mean(a * a) - ma**2, mean(b * b) - mb**2, mean(a * b) - ma * mb
    ssim = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(ssim.mean())


def all_metrics(video: np.ndarray) -> dict[str, float]:
    dynamic = dynamic_degree(video)
    return {
        "temporal_flickering": temporal_flickering(video),
        "dynamic_degree_top_flow": dynamic["top_flow"],
        "dynamic_degree_moving_share": dynamic["moving_share"],
        "frame_consistency_ssim": frame_consistency(video),
    }
