"""The clip table: one row per candidate clip and one per rejected source, as Parquet.

Workers write one part per source (`OUT/parts/<source id>.parquet`, atomically), so a restarted
job skips sources already measured; the driver joins the parts, adds the over-all-clips decisions
(duplicates, admission, output paths) and writes `OUT/clips.parquet`, also atomically.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from motif_video.media import atomic_write

SCHEMA = pa.schema(
    [
        ("source", pa.string()),  # the input file, resolved
        ("source_id", pa.string()),
        ("clip", pa.string()),  # id: <source id>-<shot number>; a rejected source's row has the source id
        ("branch", pa.string()),  # video / image, and synthetic when the list says so: "video-synthetic"
        ("kind", pa.string()),  # video / image (null when undecodable)
        ("start", pa.float64()),  # seconds in the source
        ("end", pa.float64()),
        ("kept", pa.bool_()),
        ("reason", pa.string()),  # null when kept, else "stage: measured value vs threshold"
        ("width", pa.int32()),  # of the source
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("file_size", pa.int64()),
        ("crop_x", pa.int32()),  # content rectangle in source pixels, after borders and overlays
        ("crop_y", pa.int32()),
        ("crop_w", pa.int32()),
        ("crop_h", pa.int32()),
        ("border_x", pa.int32()),  # the rectangle after borders alone
        ("border_y", pa.int32()),
        ("border_w", pa.int32()),
        ("border_h", pa.int32()),
        ("overlay_text", pa.list_(pa.string())),  # text of the persistent overlays
        ("overlay_status", pa.string()),  # "run" or why not
        ("cut_similarity", pa.float64()),  # descriptor cosine across the cut before this shot
        ("brightness", pa.float64()),
        ("motion", pa.float64()),
        ("sharpness", pa.float64()),
        ("aesthetic", pa.float64()),  # null when not run
        ("aesthetic_status", pa.string()),  # "run" or "not run: ..."
        ("descriptor", pa.list_(pa.float32())),
        ("duplicate_of", pa.string()),  # the representative's clip id, null when unique or the representative
        ("duplicate_similarity", pa.float64()),
        ("stage_144p", pa.bool_()),
        ("stage_360p", pa.bool_()),
        ("stage_480p", pa.bool_()),
        ("stage_720p", pa.bool_()),
        ("caption", pa.string()),  # from a .txt beside the source or the list's caption column
        ("sft", pa.bool_()),  # eligible for the SFT sets: kept, captioned, action = Dynamic, quality not low
        # the vision-language captioner (motif-video caption): three variants and the tags
        ("caption_status", pa.string()),  # "ok", "caption failed: ...", null when not captioned
        ("captioner", pa.string()),
        ("caption_long", pa.string()),
        ("caption_short", pa.string()),
        ("caption_truncated", pa.string()),
        ("style", pa.string()),
        ("subject", pa.string()),
        ("action", pa.string()),
        ("camera_move", pa.string()),
        ("quality", pa.string()),
        ("watermark", pa.bool_()),
        ("nsfw", pa.bool_()),
        ("padded", pa.bool_()),
        ("multi_scene", pa.bool_()),
        ("timelapse", pa.bool_()),
        ("caption_raw", pa.string()),  # the last answer of a failed caption, for inspection
        ("thumbnail", pa.string()),  # relative to OUT
        ("path", pa.string()),  # the re-encoded clip, relative to OUT
        ("measured_with", pa.string()),  # digest of the config sections the per-file stages ran with
    ]
)


def empty_row() -> dict:
    return {name: None for name in SCHEMA.names}


def write(rows: list[dict], path: str | Path) -> Path:
    """Rows -> Parquet at `path`, atomically (missing columns are null)."""
    table = pa.Table.from_pylist([{**empty_row(), **r} for r in rows], schema=SCHEMA)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read(path: str | Path) -> list[dict]:
    return pq.read_table(path, schema=SCHEMA).to_pylist()


def read_parts(folder: str | Path) -> list[dict]:
    rows: list[dict] = []
    for part in sorted(Path(folder).glob("*.parquet")):
        rows += read(part)
    return rows
