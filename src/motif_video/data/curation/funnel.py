"""The whole funnel: `curate(source, out)` runs every stage and writes OUT/clips.parquet,
OUT/clips/ and OUT/report.html. Per-source stages run in the engine's workers; duplicates,
admission and the output are decided over all clips in the driver.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from motif_video.data.curation import dedup, quality, regions, shots, table
from motif_video.data.curation.config import AdmissionSection, CurateConfig
from motif_video.data.curation.descriptors import embedder
from motif_video.data.curation.engine import run_local, run_ray
from motif_video.data.curation.output import encode_clip
from motif_video.data.curation.probe import Media, Rejected, Source, decode, list_sources


def measure(source: Source, cfg: CurateConfig, out_dir: Path) -> list[dict]:
    """Stages 1-5 of one source: its rows (one per candidate clip, or one for a rejected source)."""
    base = {
        "source": source.path,
        "source_id": source.id,
        "clip": source.id,
        "branch": source.branch + ("-synthetic" if source.synthetic else ""),
        "caption": source.caption,
        "kept": False,
        "measured_with": cfg.measurement_digest(),
    }
    try:
        media = decode(source, cfg)
    except Rejected as e:
        return [{**base, "reason": str(e)}]
    base.update(kind=media.kind, width=media.width, height=media.height, fps=media.fps, file_size=media.file_size)
    try:
        border = regions.content_rect(media.samples, cfg.borders)
        base.update(border_x=border.x, border_y=border.y, border_w=border.w, border_h=border.h)
        crop, base["overlay_text"], base["overlay_status"] = _overlays(media, border, cfg)
    except Rejected as e:
        return [{**base, "start": 0.0, "end": media.duration, "reason": str(e)}]
    base.update(crop_x=crop.x, crop_y=crop.y, crop_w=crop.w, crop_h=crop.h)
    describe = embedder(cfg.shots.embedder)
    if media.kind == "video":
        kept, short = shots.split(media.analysis, media.analysis_times, media.duration, cfg.shots, describe)
    else:
        kept, short = [shots.Shot(0, 1, 0.0, 0.0)], []
    rows = []
    for n, shot in enumerate(sorted(kept + short, key=lambda s: s.first)):
        row = {**base, "clip": f"{source.id}-{n:03d}", "start": shot.start, "end": shot.end}
        row["cut_similarity"] = shot.cut_similarity
        frames = _crop_analysis(media, crop, shot)
        row["thumbnail"] = _thumbnail(frames[len(frames) // 2], out_dir, row["clip"])
        if shot in short:
            row["reason"] = f"shots: {shot.end - shot.start:.2f} s below {cfg.shots.min_seconds} s"
            rows.append(row)
            continue
        row.update(
            brightness=quality.brightness(frames),
            motion=quality.motion(frames, media.analysis_fps) if media.kind == "video" else None,
            sharpness=quality.sharpness(frames),
        )
        score = quality.aesthetic(frames, cfg.quality)
        row["aesthetic"] = score
        row["aesthetic_status"] = "run" if score is not None else "not run: no quality.aesthetic_encoder / _head"
        row["descriptor"] = describe(frames[[min(cfg.dedup.frame, len(frames) - 1)]])[0].tolist()
        row["reason"] = quality.verdict(row, cfg.quality)
        row["kept"] = row["reason"] is None
        rows.append(row)
    return rows


def _overlays(media: Media, border: regions.Rect, cfg: CurateConfig):
    if not cfg.overlays.enabled:
        return border, [], "not run: overlays.enabled = false"
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        return border, [], "not run: rapidocr-onnxruntime is not installed"
    picks = np.linspace(0, len(media.samples) - 1, min(cfg.overlays.frames, len(media.samples))).round().astype(int)
    per_frame = regions.read_text([media.samples[i] for i in picks], cfg.overlays)
    overlays = regions.persistent_overlays(per_frame, cfg.overlays)
    crop = regions.crop_excluding(border, overlays, cfg.overlays, cfg.borders.min_content)
    return crop, [text for _, text in overlays], "run"


def _crop_analysis(media: Media, crop: regions.Rect, shot: shots.Shot) -> np.ndarray:
    """The shot's analysis frames, cropped to the content rectangle (scaled to the analysis size)."""
    _, ah, aw, _ = media.analysis.shape
    sx, sy = aw / media.width, ah / media.height
    x0, y0 = int(crop.x * sx), int(crop.y * sy)
    x1, y1 = max(x0 + 2, int(crop.x1 * sx)), max(y0 + 2, int(crop.y1 * sy))
    return np.ascontiguousarray(media.analysis[shot.first : max(shot.last, shot.first + 1), y0:y1, x0:x1])


def _thumbnail(frame: np.ndarray, out_dir: Path, clip: str) -> str:
    from PIL import Image

    from motif_video.media import atomic_write

    rel = f"thumbs/{clip}.jpg"
    (out_dir / "thumbs").mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(frame)
    image.thumbnail((160, 160))
    atomic_write(out_dir / rel, lambda tmp: image.save(tmp, format="JPEG", quality=85))
    return rel


def process_source(source: Source, cfg: CurateConfig, out_dir: str) -> str:
    """One source's table part (skipped when already written); the engines map this."""
    out = Path(out_dir)
    part = out / "parts" / f"{source.id}.parquet"
    if not fresh(part, cfg):
        try:
            rows = measure(source, cfg, out)
        except Exception as e:  # the job never stops on one file: an unexpected failure is a rejected row
            reason = f"error: {type(e).__name__}: {str(e)[:200]}"
            rows = [{"source": source.path, "source_id": source.id, "clip": source.id, "kept": False, "reason": reason}]
        table.write(rows, part)
    return str(part)


def fresh(part: Path, cfg: CurateConfig) -> bool:
    """A part measured with the current per-file settings (see CurateConfig.measurement_digest)."""
    if not part.is_file():
        return False
    import pyarrow.parquet as pq

    digests = set(pq.read_table(part, columns=["measured_with"]).column(0).to_pylist())
    return digests == {cfg.measurement_digest()}


QUALITY_STAGES = ("brightness", "motion", "sharpness")


def redecide_quality(rows: list[dict], cfg: CurateConfig) -> None:
    """The quality filters applied again from the stored measurements with the current thresholds, so a
    changed threshold takes effect without measuring again. Rows rejected by an earlier stage stay so."""
    for row in rows:
        stage = (row["reason"] or "").split(":")[0]
        if row["brightness"] is None or (row["reason"] and stage not in QUALITY_STAGES):
            continue
        row["reason"] = quality.verdict(row, cfg.quality)
        row["kept"] = row["reason"] is None


def deduplicate(rows: list[dict], similarity: float) -> None:
    """Mark near-duplicates among the kept clips: all but each group's representative are rejected."""
    kept = [r for r in rows if r["kept"] and r["descriptor"]]
    if len(kept) < 2:
        return
    x = np.asarray([r["descriptor"] for r in kept], dtype=np.float32)
    for group in dedup.groups(len(kept), dedup.neighbours(x, similarity)):
        members = [kept[i] for i in group]
        best = dedup.representative(
            np.asarray([m["width"] * m["height"] for m in members]),
            np.asarray([m["fps"] or 0.0 for m in members]),
            np.asarray([m["file_size"] for m in members]),
        )
        rep = members[best]
        for i, m in zip(group, members, strict=True):
            if m is rep:
                continue
            cosine = float(x[i] @ np.asarray(rep["descriptor"], dtype=np.float32))
            m.update(kept=False, duplicate_of=rep["clip"], duplicate_similarity=cosine)
            m["reason"] = f"duplicate: cosine {cosine:.3f} with {rep['clip']}"


def admit(rows: list[dict], cfg: AdmissionSection) -> None:
    """One boolean column per curriculum stage: the kept clips that meet the stage's stricter thresholds."""
    for row in rows:
        for i, stage in enumerate(cfg.stages):
            ok = bool(row["kept"])
            if ok:
                ok = min(row["crop_w"], row["crop_h"]) >= cfg.min_side[i]
                if row["kind"] == "video":
                    ok = ok and row["end"] - row["start"] >= cfg.min_seconds[i] and row["motion"] >= cfg.min_motion[i]
                if row["aesthetic"] is not None:
                    ok = ok and row["aesthetic"] >= cfg.min_aesthetic[i]
            row[f"stage_{stage}"] = ok


def curate(
    source: str | Path,
    out_dir: str | Path,
    cfg: CurateConfig | None = None,
    *,
    engine: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
) -> dict:
    """Run the funnel; returns the summary (also in OUT/summary.json)."""
    cfg = cfg or CurateConfig()
    out = Path(out_dir)
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    sources = list_sources(source)  # a bad SOURCE fails before OUT is made
    (out / "parts").mkdir(parents=True, exist_ok=True)
    todo = [s for s in sources if not fresh(out / "parts" / f"{s.id}.parquet", cfg)]
    if progress and len(todo) < len(sources):
        print(f"{len(sources) - len(todo)} of {len(sources)} files already measured with these settings", flush=True)
    work = functools.partial(process_source, cfg=cfg, out_dir=str(out))
    if todo and engine == "ray":
        run_ray(work, todo, ray_address, workers, progress)
    elif todo:
        run_local(work, todo, workers, "curating", progress)
    return assemble(out, cfg, {f"{s.id}.parquet" for s in sources}, engine, workers, ray_address, progress)


def assemble(
    out: Path,
    cfg: CurateConfig,
    parts: set[str] | None = None,
    engine: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    progress: bool = False,
) -> dict:
    """The clip table from the per-source parts (all, or the named ones): duplicates, admission,
    the captions and their tags, the re-encoded kept clips; writes clips.parquet, summary.json and
    report.html and returns the summary."""
    from motif_video.data.captions.captioner import read_results
    from motif_video.data.curation.probe import text_caption

    files = sorted((out / "parts").glob("*.parquet"))
    rows = [r for part in files if parts is None or part.name in parts for r in table.read(part)]
    for row in rows:  # a .txt caption added or changed since the measuring is read now
        if row["kind"] is not None and Path(row["source"]).with_suffix(".txt").is_file():
            row["caption"] = text_caption(row["source"])
    redecide_quality(rows, cfg)
    deduplicate(rows, cfg.dedup.similarity)
    admit(rows, cfg.admission)
    apply_captions(rows, read_results(out), cfg.admission)
    encode = functools.partial(_encode, out_dir=str(out), cfg=cfg)
    kept = [r for r in rows if r["kept"]]
    todo = [r for r in kept if not (out / f"clips/{r['clip']}{'.png' if r['kind'] == 'image' else '.mp4'}").is_file()]
    if engine == "ray" and todo:
        run_ray(encode, todo, ray_address, workers, progress)
    elif todo:
        run_local(encode, todo, workers, "encoding", progress)
    paths = [encode(r) for r in kept]  # written: each returns its path at once
    for row, path in zip(kept, paths, strict=True):
        row["path"] = path
    rows.sort(key=lambda r: (r["source"], r["clip"]))
    table.write(rows, out / "clips.parquet")
    summary = summarize(rows)
    from motif_video.data.curation.report import write_report
    from motif_video.media import write_json

    write_json({"config": cfg.to_dict(), **summary}, out / "summary.json")
    write_report(rows, cfg, out / "report.html")
    return summary


def apply_captions(rows: list[dict], results: dict[str, dict], admission: AdmissionSection) -> None:
    """Caption columns from the captioner's results, and the tags' effects (the report: filtering and
    conditioning synchronised by construction): watermark / nsfw / padded / multi_scene / timelapse
    reject the clip; quality = low is not admitted from the 480p stage on; a failed caption rejects
    the clip (nothing to train on); action = Dynamic makes a kept clip eligible for the SFT sets."""
    from motif_video.data.captions.schema import REJECTING_TAGS

    late = admission.stages[admission.stages.index("480p") :] if "480p" in admission.stages else ()
    for row in rows:
        result = results.get(row["clip"])
        if result is None:
            continue
        row.update({k: v for k, v in result.items() if k in table.SCHEMA.names and k != "clip"})
        if not row["kept"]:
            continue
        if result["caption_status"] != "ok":
            row.update(kept=False, reason=f"caption: {result['caption_status']}")
        elif any(result[tag] for tag in REJECTING_TAGS):
            row.update(kept=False, reason="caption: tagged " + ", ".join(t for t in REJECTING_TAGS if result[t]))
        elif result["quality"] == "low":
            for stage in late:
                row[f"stage_{stage}"] = False
        if not row["kept"]:
            for stage in admission.stages:
                row[f"stage_{stage}"] = False
        row["sft"] = bool(row["kept"] and result.get("action") == "Dynamic" and result.get("quality") != "low")


def _encode(row: dict, out_dir: str, cfg: CurateConfig) -> str:
    return encode_clip(row, out_dir, cfg.output)


def summarize(rows: list[dict]) -> dict:
    """Counts per stage of the funnel (where the rejected rows left it) and per branch."""
    reasons: dict[str, int] = {}
    for r in rows:
        if not r["kept"]:
            stage = (r["reason"] or "unknown").split(":")[0]
            reasons[stage] = reasons.get(stage, 0) + 1
    branches: dict[str, dict[str, int]] = {}
    for r in rows:
        b = branches.setdefault(r["branch"] or "other", {"rows": 0, "kept": 0})
        b["rows"] += 1
        b["kept"] += bool(r["kept"])
    stages = {k: sum(bool(r.get(k)) for r in rows) for k in rows[0] if k.startswith("stage_")} if rows else {}
    return {
        "sources": len({r["source"] for r in rows}),
        "rows": len(rows),
        "kept": sum(bool(r["kept"]) for r in rows),
        "rejected_by": dict(sorted(reasons.items())),
        "branches": branches,
        "admitted": stages,
        "sft": sum(bool(r.get("sft")) for r in rows),
        "captioned": sum(r.get("caption_status") == "ok" for r in rows),
    }
