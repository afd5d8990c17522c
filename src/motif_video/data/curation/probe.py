"""Stage 1, branch and sanitation: list the sources, tell images from videos, decode each once.

A source is decoded in one pass into two streams: a low-resolution analysis stream at a fixed
rate (shots, quality, duplicates) and a few full-resolution frames sampled uniformly (borders,
overlay text). Anything that cannot be used (undecodable, empty, too small, too short, not
media) raises `Rejected` with the reason; the funnel records it as one row and goes on.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from motif_video.data.curation.config import CurateConfig

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


class Rejected(Exception):
    """A source or clip that leaves the funnel; the message is the table's `reason` ("stage: why")."""


@dataclass(frozen=True)
class Source:
    path: str  # as resolved (one file, one key, however it was spelled)
    id: str  # stable over re-runs while the file is unchanged (path, size, mtime)
    branch: str  # "video" or "image" (from the extension; decoding confirms it)
    synthetic: bool = False  # from the list's `synthetic` column; the report's fourth branch
    caption: str | None = None
    problem: str | None = None  # a reason known before decoding (missing file, not media)


def source_id(path: Path) -> str:
    try:
        stat = path.stat()
        key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        key = str(path)
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def _branch(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_EXTENSIONS else "image" if suffix in IMAGE_EXTENSIONS else None


def _source(path: Path, caption: str | None = None, synthetic: bool = False) -> Source:
    path = path.expanduser().resolve()
    branch = _branch(path)
    problem = None
    if not path.is_file():
        problem = "sanitation: file does not exist"
    elif branch is None:
        problem = f"sanitation: not a video or image (extension {path.suffix or 'none'})"
    if caption is None and branch is not None:
        caption = text_caption(path)
    return Source(str(path), source_id(path), branch or "other", synthetic, caption, problem)


def text_caption(path: str | Path) -> str | None:
    """The caption in a .txt beside a media file, if there is one."""
    text = Path(path).with_suffix(".txt")
    return (text.read_text().strip() or None) if text.is_file() else None


def list_sources(source: str | Path) -> list[Source]:
    """A folder (every file under it; .txt files beside media are their captions) or a .csv / .jsonl
    list with a `path` column (optional `caption`, `synthetic`); relative paths are relative to the list."""
    root = Path(source)
    if not root.exists():
        raise FileNotFoundError(f"source {source} does not exist")
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        media = {p.with_suffix("") for p in files if _branch(p) is not None}
        files = [p for p in files if not (p.suffix == ".txt" and p.with_suffix("") in media)]
        return _unique(_source(p) for p in files)
    if root.suffix.lower() not in (".csv", ".jsonl"):
        raise ValueError(f"source {source} must be a folder or a .csv / .jsonl list")
    rows = read_list(root)
    out = []
    for row in rows:
        path = Path(str(row["path"]))
        path = path if path.is_absolute() else root.parent / path
        synthetic = str(row.get("synthetic", "")).strip().lower() in ("1", "true", "yes")
        out.append(_source(path, (row.get("caption") or None), synthetic))
    return _unique(out)


def read_list(path: Path) -> list[dict]:
    """The rows of a .csv (with a header line) or .jsonl list; each has at least a `path`."""
    if path.suffix.lower() == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n} is not JSON ({e.msg})") from None
            if not isinstance(row, dict) or "path" not in row:
                raise ValueError(f"{path}: line {n} has no 'path' field")
            rows.append(row)
        return rows
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ValueError(f"{path}: the first line must be a header naming a 'path' column, got {reader.fieldnames}")
        return [r for r in reader if (r.get("path") or "").strip()]


def _unique(sources) -> list[Source]:
    seen: dict[str, Source] = {}
    for s in sources:
        seen.setdefault(s.path, s)  # the same file listed twice (or spelled two ways) is one source
    return list(seen.values())


@dataclass
class Media:
    kind: str  # "video" or "image"
    width: int
    height: int
    fps: float  # 0 for images
    duration: float  # seconds (0 for images)
    file_size: int
    analysis: np.ndarray  # [N, h, w, 3] uint8 RGB, the analysis stream
    analysis_times: np.ndarray  # [N] seconds
    analysis_fps: float
    samples: list[np.ndarray]  # full-resolution RGB frames, uniformly sampled
    sample_times: list[float]


def analysis_size(width: int, height: int, side: int) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def decode(source: Source, cfg: CurateConfig) -> Media:
    """Decode a source once (see the module docstring); `Rejected` for anything unusable."""
    if source.problem:
        raise Rejected(source.problem)
    path = Path(source.path)
    size = path.stat().st_size
    if size == 0:
        raise Rejected("sanitation: empty file (0 bytes)")
    media = _decode_image(path, cfg, size) if source.branch == "image" else _decode_video(path, cfg, size)
    s = cfg.sanitation
    if min(media.width, media.height) < s.min_side:
        raise Rejected(f"sanitation: too small: {media.width}x{media.height}, shorter side below {s.min_side}")
    if media.kind == "video" and media.duration < s.min_seconds:
        raise Rejected(f"sanitation: too short: {media.duration:.2f} s below {s.min_seconds} s")
    return media


def _decode_image(path: Path, cfg: CurateConfig, size: int) -> Media:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise Rejected(f"sanitation: undecodable image ({type(e).__name__})") from None
    h, w = rgb.shape[:2]
    aw, ah = analysis_size(w, h, cfg.shots.analysis_side)
    small = np.asarray(Image.fromarray(rgb).resize((aw, ah), Image.BILINEAR))
    return Media("image", w, h, 0.0, 0.0, size, small[None], np.zeros(1), 0.0, [rgb], [0.0])


def _decode_video(path: Path, cfg: CurateConfig, size: int) -> Media:
    import av

    try:
        container = av.open(str(path))
    except Exception as e:  # PyAV raises many kinds for broken input
        detail = str(e).splitlines()[0].split(": '")[0][:100] if str(e) else type(e).__name__
        raise Rejected(f"sanitation: undecodable ({detail})") from None
    with container:
        if not container.streams.video:
            raise Rejected("sanitation: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1e6
        limit = min(duration or cfg.sanitation.max_seconds, cfg.sanitation.max_seconds)
        n = max(1, cfg.borders.frames, cfg.overlays.frames)
        sample_at = [limit * (i + 0.5) / n for i in range(n)]
        aw, ah = analysis_size(width, height, cfg.shots.analysis_side)
        step = 1.0 / cfg.shots.analysis_fps
        analysis, times, samples, sample_times = [], [], [], []
        next_tick, last = 0.0, 0.0
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else last + 1 / fps
                if t > cfg.sanitation.max_seconds:
                    break
                last = t
                if t + 1e-6 >= next_tick:
                    analysis.append(frame.to_ndarray(format="rgb24", width=aw, height=ah))
                    times.append(t)
                    next_tick += step * max(1, int((t + 1e-6 - next_tick) / step) + 1)
                if len(samples) < n and t + 1e-6 >= sample_at[len(samples)]:
                    samples.append(frame.to_ndarray(format="rgb24"))
                    sample_times.append(t)
        except Exception as e:  # a truncated file: keep what decoded, say so if nothing did
            if not analysis:
                raise Rejected(f"sanitation: undecodable ({type(e).__name__})") from None
    if not analysis:
        raise Rejected("sanitation: no frame decodes")
    if not samples:
        samples, sample_times = [analysis[0]], [times[0]]
    decoded = last + 1 / fps  # a truncated file: its duration is what decodes, not what the header says
    return Media(
        "video",
        width,
        height,
        fps,
        min(decoded, duration or decoded),
        size,
        np.stack(analysis),
        np.asarray(times),
        cfg.shots.analysis_fps,
        samples,
        sample_times,
    )
