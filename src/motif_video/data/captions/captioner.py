"""`caption`: every kept clip of a curated folder gets one request and one parsed answer.

Frames: N uniformly sampled frames of the re-encoded clip (an image: the image). A malformed or
incomplete answer is asked again up to `attempts` times; then the clip is recorded as
"caption failed" with the last answer kept for inspection. Results go to OUT/captions/ in parts
written atomically every `save_every` clips, so an interrupted run loses at most one part and a
rerun sends no request for a clip that already has a result. The clip table is then rebuilt with
the caption columns and the tags' effects (`funnel.assemble`).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from motif_video.data.captions.schema import IMAGE_PROMPT, VIDEO_PROMPT, Malformed, parse
from motif_video.media import atomic_write


def sample_frames(path: str | Path, count: int, max_side: int = 640) -> list[np.ndarray]:
    """`count` frames spread uniformly over a clip (one for an image), resized to `max_side` at most."""
    import av
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((max_side, max_side))
            return [np.asarray(img)]
    with av.open(str(path)) as container:  # one pass; only the picked frames are converted when the count is known
        stream = container.streams.video[0]
        total = stream.frames or 0
        picks = set(np.linspace(0, total - 1, count).round().astype(int).tolist()) if total else None
        decoded = container.decode(stream)
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(decoded) if picks is None or i in picks]
    if picks is None and frames:  # no count in the header: pick among everything decoded
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)]
    out = []
    for frame in frames:
        img = Image.fromarray(frame)
        img.thumbnail((max_side, max_side))
        out.append(np.asarray(img))
    return out


def caption_one(backend, path: Path, kind: str, frames: int, attempts: int) -> dict:
    """One clip: its parsed answer, or a failure with the last answer."""
    prompt = IMAGE_PROMPT if kind == "image" else VIDEO_PROMPT
    images = sample_frames(path, frames)
    answer, problem = "", ""
    for _ in range(attempts):
        answer = backend(prompt, images)
        try:
            return {"caption_status": "ok", **parse(answer)}
        except Malformed as e:
            problem = str(e)
    return {"caption_status": f"caption failed: {problem} (after {attempts} answers)", "caption_raw": answer[:4000]}


def read_results(out_dir: str | Path) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for part in sorted((Path(out_dir) / "captions").glob("*.jsonl")):
        for line in part.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                results[record["clip"]] = record
    return results


def _save(out_dir: Path, records: list[dict]) -> None:
    folder = out_dir / "captions"
    folder.mkdir(exist_ok=True)
    name = f"part-{time.time_ns()}.jsonl"
    atomic_write(folder / name, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in records)))


def caption(
    out_dir: str | Path,
    backend,
    *,
    frames: int = 8,
    attempts: int = 3,
    concurrency: int = 1,
    save_every: int = 32,
    progress: bool = True,
) -> dict:
    """Caption the kept clips of a curated folder that have no result yet; returns counts."""
    from motif_video.data.curation import table

    out = Path(out_dir)
    if not (out / "clips.parquet").is_file():
        raise FileNotFoundError(f"{out} has no clips.parquet; run `motif-video curate` first")
    if frames < 1 or attempts < 1 or concurrency < 1:
        raise ValueError(f"frames, attempts and concurrency must be >= 1, got {frames}, {attempts}, {concurrency}")
    done = read_results(out)
    rows = [r for r in table.read(out / "clips.parquet") if r["path"] and r["clip"] not in done]
    bar = tqdm(total=len(rows), desc="captioning", unit="clip", disable=not progress)
    pending: list[dict] = []
    counts = {"requested": len(rows), "ok": 0, "failed": 0}

    def work(row: dict) -> dict:
        result = caption_one(backend, out / row["path"], row["kind"], frames, attempts)
        return {"clip": row["clip"], "captioner": backend.name, **result}

    pool = ThreadPoolExecutor(concurrency)
    try:
        if hasattr(backend, "batch") and concurrency > 1:  # local weights: one generate call per batch
            results = _local_batches(backend, out, rows, frames, attempts, concurrency)
        else:  # a server: `concurrency` requests in flight
            results = pool.map(work, rows)
        for record in results:
            counts["ok" if record["caption_status"] == "ok" else "failed"] += 1
            pending.append(record)
            bar.update()
            if len(pending) >= save_every:
                _save(out, pending)
                pending = []
    finally:
        pool.shutdown(cancel_futures=True)
        if pending:
            _save(out, pending)
        bar.close()
    return counts


def _local_batches(backend, out: Path, rows: list[dict], frames: int, attempts: int, size: int):
    """Batched generation for local weights; malformed answers are asked again in the next batches."""
    queue = [(row, 0) for row in rows]
    while queue:
        chunk, queue = queue[:size], queue[size:]
        requests = [
            (IMAGE_PROMPT if r["kind"] == "image" else VIDEO_PROMPT, sample_frames(out / r["path"], frames))
            for r, _ in chunk
        ]
        for (row, tries), answer in zip(chunk, backend.batch(requests), strict=True):
            try:
                yield {"clip": row["clip"], "captioner": backend.name, "caption_status": "ok", **parse(answer)}
            except Malformed as e:
                if tries + 1 < attempts:
                    queue.append((row, tries + 1))
                else:
                    status = f"caption failed: {e} (after {attempts} answers)"
                    yield {
                        "clip": row["clip"],
                        "captioner": backend.name,
                        "caption_status": status,
                        "caption_raw": answer[:4000],
                    }
