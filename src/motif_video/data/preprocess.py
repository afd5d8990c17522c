"""`prepare`: captioned clips -> bucketed WebDataset shards, a metadata table and a report.

Sources are a folder of videos (captions in a `.txt` beside each video), a `motif-video curate`
output folder (its kept clips, captions from the clip table), a CSV or JSONL list of
`path,caption`, or `shapes:N`, N clips of the procedural shapes world. Each video is decoded with
PyAV, resampled to the target fps, cut into clips of the longest frame bucket that fits, each clip
resized to cover its aspect bucket and centre-cropped, and written as H.264 into the shards.
A file that cannot be used (unreadable, truncated, empty, too short, too small, no caption, not a
video) is skipped and listed in the report with the reason; the job never stops on one file. A
restarted job skips every source whose clips are already in a committed shard.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from motif_video.data import world
from motif_video.data.buckets import assign, bucket_counts, sizes_for_area
from motif_video.data.shards import ShardWriter, read_metadata
from motif_video.media import encode_mp4, read_video, write_json

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}


@dataclass(frozen=True)
class PrepareConfig:
    fps: float = 8.0
    frame_buckets: tuple[int, ...] = (17, 33)
    area: int = 64 * 96  # pixels per frame; aspect buckets share it
    shard_size: int = 64  # clips per shard (closed between sources)
    max_clips_per_video: int = 4
    max_objects: int = world.MAX_OBJECTS  # shapes:N sources: each clip has 1..max_objects objects
    free_layout: float = 0.0  # shapes:N sources: the share of clips whose objects start anywhere (world.scene)
    jitter: float = 1.0  # shapes:N sources: the scale of the start's jitter (0: where the caption's layout says)

    def __post_init__(self):
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be at least 1, got {self.max_objects}")
        if not 0.0 <= self.free_layout <= 1.0:
            raise ValueError(f"free_layout must be a share in [0, 1], got {self.free_layout}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be a scale in [0, 1], got {self.jitter}")


def caption_of(row: dict) -> str | tuple[str, str, str] | None:
    """A row's caption: the three variants (long, short, truncated) where it has them, else `caption`."""
    variants = tuple((row.get(k) or "").strip() for k in ("caption_long", "caption_short", "caption_truncated"))
    if all(variants):
        return variants
    return (row.get("caption") or "").strip() or None


def list_sources(source: str, stage: str | None = None) -> tuple[list[tuple[str, str | None]], list[dict[str, str]]]:
    """(path, caption) pairs and the files rejected before decoding."""
    if source.startswith("shapes:"):
        count = int(source.removeprefix("shapes:"))
        return [(f"shapes:{i}", None) for i in range(count)], []
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"source {source} does not exist")
    if path.is_file() and path.suffix in (".csv", ".jsonl"):
        from motif_video.data.curation.probe import read_list

        pairs, rejected = {}, []
        for row in read_list(path):  # a bad row is one skipped, reported row; the job goes on
            file = Path(str(row["path"])).expanduser()
            file = (file if file.is_absolute() else path.parent / file).resolve()
            if not file.is_file():
                rejected.append({"path": str(file), "reason": f"file does not exist (listed in {path})"})
            else:  # the same file listed twice (or spelled two ways) is one source
                pairs.setdefault(str(file), caption_of(row))
        return list(pairs.items()), rejected
    if not path.is_dir():
        raise ValueError(f"source {source} must be a folder, a .csv/.jsonl list or shapes:N")
    if (path / "clips.parquet").is_file():  # a `motif-video curate` output: its kept video clips
        from motif_video.data.curation import table

        rows = [r for r in table.read(path / "clips.parquet") if r["kept"] and r["kind"] == "video"]
        if stage is not None:  # only the clips admitted to a curriculum stage
            column = f"stage_{stage}"
            if rows and column not in rows[0]:
                stages = sorted(k.removeprefix("stage_") for k in rows[0] if k.startswith("stage_"))
                raise ValueError(f"unknown stage {stage!r}; the clip table has {stages}")
            rows = [r for r in rows if r[column]]
        pairs, rejected = [], []
        for r in rows:
            clip, caption = str((path / r["path"]).resolve()), caption_of(r)
            if caption is None:
                reason = (
                    f"no caption: run `motif-video caption {path}` (or put a .txt beside {r['source']}, then curate)"
                )
                rejected.append({"path": clip, "reason": reason})
            else:
                pairs.append((clip, caption))
        return pairs, rejected
    pairs, rejected = [], []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.suffix.lower() in VIDEO_EXTENSIONS:
            caption_file = file.with_suffix(".txt")
            caption = caption_file.read_text().strip() if caption_file.is_file() else None
            pairs.append((str(file.resolve()), caption))
        elif not (file.suffix == ".txt" and any(file.with_suffix(e).exists() for e in VIDEO_EXTENSIONS)):
            rejected.append({"path": str(file), "reason": f"not a video file (extension {file.suffix or 'none'})"})
    return pairs, rejected


def prepare(
    source: str,
    out_dir: str | Path,
    cfg: PrepareConfig = PrepareConfig(),
    seed: int = 0,
    progress: bool = True,
    stage: str | None = None,
) -> dict:
    out_dir = Path(out_dir)
    writer = ShardWriter(out_dir, cfg.shard_size)
    sources, rejected = list_sources(source, stage)
    if stage is not None and not (Path(source) / "clips.parquet").is_file():
        raise ValueError(f"--stage selects from a `motif-video curate` folder; {source} is not one")
    done = writer.done_sources()
    report_file = out_dir / "report.json"
    # files skipped by an earlier run are tried again: the user may have fixed them since
    skipped = {row["path"]: row for row in rejected}
    settings = out_dir / "prepare.json"  # shards of one OUT share one recipe: a rerun may not mix two
    spelled = str(source) if str(source).startswith("shapes:") else str(Path(source).resolve())
    recipe = {"source": spelled, "stage": stage, **dataclasses.asdict(cfg), "seed": seed}
    recipe["frame_buckets"] = list(cfg.frame_buckets)
    if settings.is_file() and json.loads(settings.read_text()) != recipe:
        before = json.loads(settings.read_text())
        changed = {k: (before.get(k), v) for k, v in recipe.items() if before.get(k) != v}
        raise ValueError(f"{out_dir} holds shards made with other settings {changed} (before, now): use another OUT")
    write_json(recipe, settings)
    sizes = sizes_for_area(cfg.area)
    for path, caption in tqdm(sources, desc="preparing", disable=not progress):
        if path in done or path in skipped:
            continue
        try:
            for meta, clip in _clips(path, caption, cfg, sizes, seed):
                writer.add(meta, encode_mp4(clip, cfg.fps))
        except SkipSource as e:
            skipped[path] = {"path": path, "reason": str(e)}
            continue
        writer.end_source()
    writer.flush()
    rows = read_metadata(out_dir)
    report = {
        "clips": len(rows),
        "sources": len({r["source"] for r in rows}),
        "skipped": sorted(skipped.values(), key=lambda r: r["path"]),
        "buckets": bucket_counts([r["bucket"] for r in rows]),
    }
    write_json(report, report_file)
    (out_dir / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return report


class SkipSource(Exception):
    """A source that cannot be used; the message is the reason in the report."""


def _clips(
    path: str, caption: str | tuple[str, str, str] | None, cfg: PrepareConfig, sizes, seed: int
) -> Iterator[tuple[dict, np.ndarray]]:
    if path.startswith("shapes:"):
        index = int(path.removeprefix("shapes:"))
        scene = world.scene(seed, index, max_objects=cfg.max_objects, free_layout=cfg.free_layout, jitter=cfg.jitter)
        bucket = assign(max(cfg.frame_buckets), 1, 1, cfg.frame_buckets, [sizes[len(sizes) // 2]])
        frames = world.render(scene, bucket.frames, bucket.height, bucket.width, fps=cfg.fps)
        meta = _meta(path, 0, scene.caption, bucket, cfg)
        meta["captions"] = list(scene.captions(np.random.default_rng([seed, index, 7])))  # long, short, truncated
        if world.is_free(seed, index, cfg.free_layout):  # started anywhere (free_layout)
            meta["layout"] = "free"  # the caption does not say where the object is: no text-to-video target
        yield meta, frames
        return
    variants = caption if isinstance(caption, tuple) else None
    caption = variants[0] if variants else caption
    if caption is None or not caption.strip():
        raise SkipSource("no caption (expected a .txt file beside the video)")
    if Path(path).stat().st_size == 0:
        raise SkipSource("empty file")
    try:
        frames, fps = read_video(path)
    except Exception as e:  # PyAV raises many kinds for broken files
        raise SkipSource(f"unreadable video ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if len(frames) == 0 or not fps > 0:
        raise SkipSource("no decodable frames")
    # resample to the target frame rate
    duration = len(frames) / fps
    picks = np.floor(np.arange(0, duration, 1 / cfg.fps) * fps).astype(int)
    frames = frames[picks[picks < len(frames)]]
    height, width = frames.shape[1:3]
    bucket = assign(len(frames), height, width, cfg.frame_buckets, sizes)
    if bucket is None:
        raise SkipSource(
            f"too short: {len(frames)} frames at {cfg.fps:g} fps, the shortest bucket has {min(cfg.frame_buckets)}"
        )
    if height * 2 < bucket.height or width * 2 < bucket.width:
        raise SkipSource(f"too small: {width}x{height} for a {bucket.width}x{bucket.height} bucket")
    for i in range(min(cfg.max_clips_per_video, len(frames) // bucket.frames)):
        clip = frames[i * bucket.frames : (i + 1) * bucket.frames]
        meta = _meta(path, i * bucket.frames, caption.strip(), bucket, cfg)
        if variants:  # long, short, truncated: training samples among them (stage.caption_variants)
            meta["captions"] = list(variants)
        yield meta, cover_crop(clip, bucket)


def _meta(path: str, start: int, caption: str, bucket, cfg: PrepareConfig) -> dict:
    import hashlib

    key = hashlib.sha1(f"{path}:{start}".encode()).hexdigest()[:16]
    return {
        "key": key,
        "source": path,
        "start": start,
        "caption": caption,
        "bucket": bucket.name,
        "frames": bucket.frames,
        "height": bucket.height,
        "width": bucket.width,
        "fps": cfg.fps,
    }


def cover_crop(clip: np.ndarray, bucket) -> np.ndarray:
    from PIL import Image

    h, w = clip.shape[1:3]
    scale = max(bucket.height / h, bucket.width / w)
    size = (max(bucket.width, round(w * scale)), max(bucket.height, round(h * scale)))
    top, left = (size[1] - bucket.height) // 2, (size[0] - bucket.width) // 2
    out = [
        np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC))[
            top : top + bucket.height, left : left + bucket.width
        ]
        for f in clip
    ]
    return np.stack(out)
