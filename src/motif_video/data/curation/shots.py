"""Stage 4, shot splitting: a conservative cut detector, then re-merging of false splits.

PySceneDetect's ContentDetector runs on the analysis stream with a threshold that over-splits
(flashes, fast pans); each cut whose two boundary frames still look alike (descriptor cosine at or
above `merge_similarity`) is undone. Pieces shorter than 2 s are dropped (the report's rule) and
shots longer than `max_seconds` are split into equal pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from motif_video.data.curation.config import ShotsSection


@dataclass(frozen=True)
class Shot:
    first: int  # analysis frame indices [first, last)
    last: int
    start: float  # seconds in the source
    end: float
    cut_similarity: float | None = None  # descriptor cosine across the cut that opened this shot (None: source start)


def detect_cuts(analysis: np.ndarray, fps: float, threshold: float) -> list[int]:
    """Analysis frame indices where a new shot starts (PySceneDetect ContentDetector)."""
    from scenedetect.common import FrameTimecode
    from scenedetect.detectors import ContentDetector

    detector = ContentDetector(threshold=threshold, min_scene_len=max(1, round(fps / 2)))
    cuts: list[int] = []
    for i, frame in enumerate(analysis):
        found = detector.process_frame(FrameTimecode(i, fps), np.ascontiguousarray(frame[..., ::-1]))  # BGR
        cuts += [c.frame_num for c in found]
    return sorted({c for c in cuts if 0 < c < len(analysis)})


def split(
    analysis: np.ndarray, times: np.ndarray, duration: float, cfg: ShotsSection, describe
) -> tuple[list[Shot], list[Shot]]:
    """(kept shots, shots dropped for being shorter than cfg.min_seconds)."""
    cuts = detect_cuts(analysis, cfg.analysis_fps, cfg.threshold)
    bounds = [0]
    similarity: dict[int, float] = {}
    for c in cuts:  # re-merge: a cut between look-alike frames was a false split
        a, b = describe(analysis[[c - 1, c]])
        sim = float(a @ b)
        if sim >= cfg.merge_similarity:
            continue
        similarity[c] = sim
        bounds.append(c)
    bounds.append(len(analysis))

    def seconds(i: int) -> float:
        return float(times[i]) if i < len(times) else duration

    kept, short = [], []
    for first, last in zip(bounds[:-1], bounds[1:], strict=True):
        start, end = seconds(first), seconds(last)
        shot = Shot(first, last, start, end, similarity.get(first))
        if end - start < cfg.min_seconds:
            short.append(shot)
            continue
        pieces = int(np.ceil((end - start) / cfg.max_seconds - 1e-9))
        edges = np.linspace(first, last, pieces + 1).round().astype(int)
        for i0, i1 in zip(edges[:-1], edges[1:], strict=True):
            kept.append(Shot(int(i0), int(i1), seconds(i0), seconds(i1), similarity.get(int(i0))))
    return kept, short
