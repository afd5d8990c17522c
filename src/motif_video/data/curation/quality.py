"""Stage 5, quality filters: one score per failure mode, each with its own thresholds, never fused.

- brightness: mean Rec. 709 luma in [0, 1] (the report's formula); both tails are cut.
- motion: optical flow (OpenCV DIS) between consecutive analysis frames, the trimmed mean of its
  magnitude (10% off each end) in frame widths per second; too static and too fast are removed.
- sharpness: variance of the Laplacian of the analysis frames (weight-free technical score).
- aesthetic: Aesthetic Predictor V2.5 on a few frames, when its local weights are given; otherwise
  the table says "not run" and no threshold is applied.
"""

from __future__ import annotations

import numpy as np

from motif_video.data.curation.config import QualitySection
from motif_video.data.curation.regions import luma


def brightness(frames: np.ndarray) -> float:
    return float(luma(frames).mean() / 255.0)


def motion(frames: np.ndarray, fps: float, pairs: int = 16) -> float:
    """Trimmed-mean flow magnitude, frame widths per second; 0 for fewer than two frames."""
    import cv2

    if len(frames) < 2:
        return 0.0
    cv2.setNumThreads(1)
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    picks = np.unique(np.linspace(0, len(frames) - 2, min(pairs, len(frames) - 1)).round().astype(int))
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    magnitudes = []
    for i in picks:
        field = flow.calc(grey[i], grey[i + 1], None)
        m = np.sqrt((field**2).sum(axis=-1)).reshape(-1)
        lo, hi = np.quantile(m, [0.1, 0.9])
        inside = m[(m >= lo) & (m <= hi)]
        magnitudes.append(float(inside.mean()) if len(inside) else float(m.mean()))
    return float(np.mean(magnitudes)) * fps / frames.shape[2]


def sharpness(frames: np.ndarray) -> float:
    import cv2

    return float(np.mean([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for f in frames]))


def aesthetic(frames: np.ndarray, cfg: QualitySection) -> float | None:
    """The mean aesthetic score of `cfg.aesthetic_frames` uniformly sampled frames; None when not configured."""
    if not cfg.aesthetic_encoder:
        return None
    from motif_video.data.curation.descriptors import aesthetic_predictor

    picks = np.linspace(0, len(frames) - 1, min(cfg.aesthetic_frames, len(frames))).round().astype(int)
    return aesthetic_predictor(cfg.aesthetic_encoder, cfg.aesthetic_head)(frames[picks])


def verdict(row: dict, cfg: QualitySection) -> str | None:
    """The first failed filter as a reason ("stage: value vs threshold"), or None."""
    if row["brightness"] < cfg.brightness_min:
        return f"brightness: {row['brightness']:.3f} below {cfg.brightness_min}"
    if row["brightness"] > cfg.brightness_max:
        return f"brightness: {row['brightness']:.3f} above {cfg.brightness_max}"
    if row["kind"] == "video":
        if row["motion"] < cfg.motion_min:
            return f"motion: {row['motion']:.4f} below {cfg.motion_min}"
        if row["motion"] > cfg.motion_max:
            return f"motion: {row['motion']:.4f} above {cfg.motion_max}"
    if row["sharpness"] < cfg.sharpness_min:
        return f"sharpness: {row['sharpness']:.1f} below {cfg.sharpness_min}"
    return None
