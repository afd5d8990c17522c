"""Stage 8, output: each kept clip re-encoded once (crop + resize + frame-rate cap) as H.264.

The clip is streamed from the source, frame by frame, into a temporary file that is renamed when
complete; a clip already written is not written again.
"""

from __future__ import annotations

import fractions
import os
import tempfile
from pathlib import Path

import numpy as np

from motif_video.data.curation.config import OutputSection


def output_size(crop_w: int, crop_h: int, max_short_side: int) -> tuple[int, int]:
    scale = min(1.0, max_short_side / min(crop_w, crop_h))
    return max(2, int(crop_w * scale) // 2 * 2), max(2, int(crop_h * scale) // 2 * 2)


def encode_clip(row: dict, out_dir: str | Path, cfg: OutputSection) -> str:
    """Write `row`'s clip under out_dir/clips/ and return its path relative to out_dir."""
    out_dir = Path(out_dir)
    suffix = ".png" if row["kind"] == "image" else ".mp4"
    rel = f"clips/{row['clip']}{suffix}"
    target = out_dir / rel
    if target.is_file():
        return rel
    target.parent.mkdir(parents=True, exist_ok=True)
    x, y, w, h = row["crop_x"], row["crop_y"], row["crop_w"], row["crop_h"]
    size = output_size(w, h, cfg.max_short_side)
    fd, tmp = tempfile.mkstemp(prefix=f".{row['clip']}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        if row["kind"] == "image":
            from PIL import Image

            with Image.open(row["source"]) as img:
                img.convert("RGB").crop((x, y, x + w, y + h)).resize(size, Image.LANCZOS).save(tmp, format="PNG")
        else:
            _encode_video(row, Path(tmp), (x, y, w, h), size, cfg)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return rel


def _encode_video(row: dict, tmp: Path, crop, size: tuple[int, int], cfg: OutputSection) -> None:
    import av

    x, y, w, h = crop
    fps = min(row["fps"], cfg.max_fps)
    rate = fractions.Fraction(fps).limit_denominator(1001)
    start, end = row["start"], row["end"]
    written = 0
    with av.open(str(row["source"])) as source, av.open(str(tmp), "w", format="mp4") as sink:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        out = sink.add_stream("libx264", rate=rate)
        out.width, out.height = size
        out.pix_fmt = "yuv420p"
        out.options = {"crf": str(cfg.crf)}
        next_tick = start
        try:
            frames = source.decode(stream)
            for frame in frames:
                t = float(frame.time or 0.0)
                if t + 1e-6 < next_tick:
                    continue
                if t >= end - 1e-6:
                    break
                next_tick += 1 / fps * max(1, int((t + 1e-6 - next_tick) * fps) + 1)
                rgb = frame.to_ndarray(format="rgb24")[y : y + h, x : x + w]
                picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
                    width=size[0], height=size[1], format="yuv420p"
                )
                picture.pts = written
                for packet in out.encode(picture):
                    sink.mux(packet)
                written += 1
        except av.error.FFmpegError:  # a truncated source ends the clip where decoding stops
            pass
        for packet in out.encode():
            sink.mux(packet)
    if written == 0:
        raise ValueError(f"no frame of {row['source']} between {start:.2f} s and {end:.2f} s decodes")
