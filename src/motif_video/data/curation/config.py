"""The curation config: one frozen section per stage, loaded from TOML plus dotted overrides.

Defaults follow the report (Sec. 5) where it gives a number (2 s minimum clip, overlays in >= 50% of
frames, top and bottom 20% bands, duplicate cosine >= 0.9, representative score 0.5 / 0.3 / 0.2,
stage resolutions 144p / 360p / 480p / 720p); the rest were set on real footage (docs/data.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SanitationSection:
    min_side: int = 96  # pixels of the shorter side
    min_seconds: float = 2.0  # videos shorter than one minimum clip are rejected
    max_seconds: float = 600.0  # longer files are analysed up to here (the analysis stream is held: ~1.2 GB at 10 min)


@dataclass(frozen=True)
class BordersSection:
    frames: int = 8  # full-resolution frames sampled uniformly
    luma_threshold: float = (
        24.0  # a row / column whose mean luma (0-255) is at most this is border (cropdetect's limit)
    )
    min_content: float = 0.4  # the content rectangle must keep this share of each side


@dataclass(frozen=True)
class OverlaySection:
    enabled: bool = True
    frames: int = 5  # frames read by OCR, sampled uniformly
    max_side: int = 640  # frames are resized to this longest side before OCR
    min_confidence: float = 0.6
    iou: float = 0.4  # boxes in different frames with at least this IoU are one overlay
    persistence: float = 0.5  # an overlay in at least this share of the frames is persistent
    band: float = 0.2  # overlays in the top / bottom band are cropped away; elsewhere the source is rejected


@dataclass(frozen=True)
class ShotsSection:
    analysis_fps: float = 12.0  # the low-resolution analysis stream (shots, quality, duplicates)
    analysis_side: int = 320  # longest side of the analysis stream
    threshold: float = 27.0  # PySceneDetect ContentDetector threshold (conservative: over-splits)
    merge_similarity: float = 0.93  # re-merge a cut whose boundary frames are at least this similar
    min_seconds: float = 2.0  # shorter pieces are dropped (the report's rule)
    max_seconds: float = 10.0  # longer shots are split into equal pieces no longer than this
    embedder: str = ""  # a SigLIP folder for the boundary / duplicate descriptor; "" = weight-free colour layout


@dataclass(frozen=True)
class QualitySection:
    brightness_min: float = 0.1  # mean Rec. 709 luma in [0, 1]
    brightness_max: float = 0.9
    motion_min: float = 0.004  # trimmed mean optical flow, frame widths per second
    motion_max: float = 0.6
    sharpness_min: float = 15.0  # variance of the Laplacian of the analysis frames
    aesthetic_encoder: str = ""  # SigLIP vision folder of Aesthetic Predictor V2.5
    aesthetic_head: str = ""  # its scoring head (.pth or .safetensors); both empty: the stage is not run
    aesthetic_frames: int = 4


@dataclass(frozen=True)
class DedupSection:
    similarity: float = 0.9  # cosine at or above which two clips are duplicates (the report's SSCD cut)
    frame: int = 10  # the analysis frame the descriptor is taken from (the report: frame #10)


@dataclass(frozen=True)
class AdmissionSection:
    stages: tuple[str, ...] = ("144p", "360p", "480p", "720p")
    min_side: tuple[int, ...] = (144, 360, 480, 720)  # shorter side of the crop, source pixels
    min_seconds: tuple[float, ...] = (2.0, 2.0, 2.7, 5.0)  # 65 and 121 frames at 24 fps from 480p on
    min_motion: tuple[float, ...] = (0.004, 0.006, 0.008, 0.01)  # stricter at higher stages
    min_aesthetic: tuple[float, ...] = (4.0, 4.5, 5.0, 5.5)  # used where the aesthetic stage ran


@dataclass(frozen=True)
class OutputSection:
    max_short_side: int = 720  # kept clips are resized down to this shorter side
    max_fps: float = 30.0  # and their frame rate capped
    crf: int = 18


@dataclass(frozen=True)
class CurateConfig:
    sanitation: SanitationSection = field(default_factory=SanitationSection)
    borders: BordersSection = field(default_factory=BordersSection)
    overlays: OverlaySection = field(default_factory=OverlaySection)
    shots: ShotsSection = field(default_factory=ShotsSection)
    quality: QualitySection = field(default_factory=QualitySection)
    dedup: DedupSection = field(default_factory=DedupSection)
    admission: AdmissionSection = field(default_factory=AdmissionSection)
    output: OutputSection = field(default_factory=OutputSection)

    def __post_init__(self) -> None:
        a = self.admission
        lengths = {len(a.stages), len(a.min_side), len(a.min_seconds), len(a.min_motion), len(a.min_aesthetic)}
        if len(lengths) != 1:
            raise ValueError(f"admission lists must have one entry per stage {list(a.stages)}; got lengths {lengths}")
        q = self.quality
        if not q.brightness_min < q.brightness_max or not q.motion_min < q.motion_max:
            raise ValueError(
                f"quality ranges must be min < max: brightness {q.brightness_min}..{q.brightness_max}, "
                f"motion {q.motion_min}..{q.motion_max}"
            )
        if bool(q.aesthetic_encoder) != bool(q.aesthetic_head):
            raise ValueError("quality.aesthetic_encoder and quality.aesthetic_head are given together or not at all")
        if not 0 < self.dedup.similarity <= 1 or not 0 < self.overlays.persistence <= 1:
            raise ValueError(
                f"dedup.similarity and overlays.persistence must be in (0, 1], got {self.dedup.similarity} "
                f"and {self.overlays.persistence}"
            )
        if self.shots.min_seconds > self.shots.max_seconds:
            raise ValueError(f"shots.min_seconds {self.shots.min_seconds} exceeds shots.max_seconds")

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] = ()) -> CurateConfig:
        from motif_video.training.config import load_config

        return load_config(cls, path, overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def measurement_digest(self) -> str:
        """What the per-file stages measured with: a changed border, overlay, shot or sanitation setting (or
        the aesthetic weights, the descriptor frame) means measuring again; the quality thresholds,
        duplicates and admission are decided from the measurements and need no new pass."""
        import hashlib
        import json

        parts = {k: asdict(getattr(self, k)) for k in ("sanitation", "borders", "overlays", "shots")}
        q = self.quality
        parts["measures"] = [q.aesthetic_encoder, q.aesthetic_head, q.aesthetic_frames, self.dedup.frame]
        return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
