"""Stages 2 and 3: the content rectangle of a source, without black borders and burned-in text.

Borders follow ffmpeg's cropdetect (which PyAV's FFmpeg lacks): a row or column is border when its
mean luma is at most a limit (24 of 255); each sampled frame gives a rectangle and the median over
frames is the answer, which ignores dark scenes and compression bleed at the edges.

Overlays: OCR (PP-OCRv4 through rapidocr-onnxruntime, whose ONNX models ship in its wheel) on N
uniformly sampled frames; boxes are clustered across frames by IoU and a cluster present in at least
half of the frames is a persistent overlay (subtitles, logos, tickers). The report's rule: overlays
in the top or bottom 20% are cut away by moving that edge of the crop past them; a persistent
overlay in the middle of the frame cannot be cropped, so the source is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from motif_video.data.curation.config import BordersSection, OverlaySection
from motif_video.data.curation.probe import Rejected


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    @property
    def x1(self) -> int:
        return self.x + self.w

    @property
    def y1(self) -> int:
        return self.y + self.h


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 709 luma of gamma-encoded RGB, in the input's range."""
    rgb = rgb.astype(np.float32)
    return 0.2126 * rgb[..., 0] + 0.7152 * rgb[..., 1] + 0.0722 * rgb[..., 2]


def content_rect(frames: list[np.ndarray], cfg: BordersSection) -> Rect:
    """The content rectangle in source pixels (even edges, as H.264 needs), median over `frames`."""
    height, width = frames[0].shape[:2]
    edges = []
    for frame in frames:
        y = luma(frame)
        rows = np.flatnonzero(y.mean(axis=1) > cfg.luma_threshold)
        cols = np.flatnonzero(y.mean(axis=0) > cfg.luma_threshold)
        if len(rows) and len(cols):
            edges.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
    if not edges:
        raise Rejected(f"borders: no content brighter than luma {cfg.luma_threshold:g} in any sampled frame")
    x0, y0, x1, y1 = np.median(np.asarray(edges), axis=0)
    x0, y0 = int(np.ceil(x0 / 2) * 2), int(np.ceil(y0 / 2) * 2)
    x1, y1 = int(np.floor(x1 / 2) * 2), int(np.floor(y1 / 2) * 2)
    if x1 - x0 < cfg.min_content * width or y1 - y0 < cfg.min_content * height:
        raise Rejected(
            f"borders: content {x1 - x0}x{y1 - y0} is under {cfg.min_content:g} of the frame {width}x{height}"
        )
    return Rect(x0, y0, x1 - x0, y1 - y0)


@cache
def _ocr():
    from rapidocr_onnxruntime import RapidOCR

    # "max": resize the long side down to our limit only (the default "min" upsamples small frames: slow)
    return RapidOCR(det_limit_type="max", det_limit_side_len=4096)


def read_text(frames: list[np.ndarray], cfg: OverlaySection) -> list[list[tuple[Rect, str, float]]]:
    """Per frame: (box in source pixels, text, confidence) of every line OCR reads with enough confidence."""
    from PIL import Image

    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        scale = min(1.0, cfg.max_side / max(h, w))
        small = np.asarray(Image.fromarray(frame).resize((round(w * scale), round(h * scale)))) if scale < 1 else frame
        result, _ = _ocr()(small[..., ::-1].copy())  # RapidOCR takes OpenCV's BGR
        lines = []
        for box, text, confidence in result or []:
            if float(confidence) < cfg.min_confidence:
                continue
            pts = np.asarray(box, dtype=np.float32) / scale
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0)
            lines.append(
                (Rect(int(x0), int(y0), int(np.ceil(x1 - x0)), int(np.ceil(y1 - y0))), text, float(confidence))
            )
        out.append(lines)
    return out


def iou(a: Rect, b: Rect) -> float:
    ix = max(0, min(a.x1, b.x1) - max(a.x, b.x))
    iy = max(0, min(a.y1, b.y1) - max(a.y, b.y))
    inter = ix * iy
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def persistent_overlays(per_frame: list[list[tuple[Rect, str, float]]], cfg: OverlaySection) -> list[tuple[Rect, str]]:
    """Clusters of boxes (IoU >= cfg.iou with the cluster's first box) seen in >= cfg.persistence of the
    frames: (the union of the cluster's boxes, its most frequent text)."""
    clusters: list[dict] = []
    for f, lines in enumerate(per_frame):
        for box, text, _ in lines:
            for c in clusters:
                if iou(c["first"], box) >= cfg.iou:
                    c["frames"].add(f)
                    c["boxes"].append(box)
                    c["texts"].append(text)
                    break
            else:
                clusters.append({"first": box, "frames": {f}, "boxes": [box], "texts": [text]})
    out = []
    for c in clusters:
        if len(c["frames"]) >= cfg.persistence * len(per_frame):
            x0, y0 = min(b.x for b in c["boxes"]), min(b.y for b in c["boxes"])
            x1, y1 = max(b.x1 for b in c["boxes"]), max(b.y1 for b in c["boxes"])
            text = max(set(c["texts"]), key=c["texts"].count)
            out.append((Rect(x0, y0, x1 - x0, y1 - y0), text))
    return out


def crop_excluding(content: Rect, overlays: list[tuple[Rect, str]], cfg: OverlaySection, min_content: float) -> Rect:
    """The content rectangle with the overlays in its top / bottom band cut away (even edges)."""
    top, bottom = content.y, content.y1
    for box, text in overlays:
        centre = (box.y + box.y1) / 2
        margin = max(2, box.h // 4)  # OCR boxes hug the glyphs; subtitles sit on a plate a little larger
        if centre < content.y + cfg.band * content.h:
            top = max(top, box.y1 + margin)
        elif centre > content.y1 - cfg.band * content.h:
            bottom = min(bottom, box.y - margin)
        else:
            raise Rejected(f"overlays: persistent text {text!r} in the middle of the frame (y {box.y}-{box.y1})")
    top, bottom = int(np.ceil(top / 2) * 2), int(np.floor(bottom / 2) * 2)
    if bottom - top < min_content * content.h:
        raise Rejected(f"overlays: {bottom - top} rows left of {content.h} after cutting the overlays away")
    return Rect(content.x, top, content.w, bottom - top)
