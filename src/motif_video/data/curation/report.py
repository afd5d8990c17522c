"""OUT/report.html: the funnel as a figure, each score's histogram with its thresholds, and
thumbnails of kept and rejected clips per reason, so thresholds can be tuned by looking."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from motif_video.data.curation.config import CurateConfig
from motif_video.media import atomic_write

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; } figure { margin: 0; width: 160px; }
figcaption { font-size: 11px; word-break: break-all; } img.thumb { max-width: 160px; }
table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _funnel_figure(rows: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [
        "sanitation",
        "borders",
        "overlays",
        "shots",
        "brightness",
        "motion",
        "sharpness",
        "duplicate",
        "caption",
        "error",
    ]
    left = len(rows)
    labels, remaining, dropped = ["candidates"], [left], [0]
    for stage in order:
        n = sum(1 for r in rows if not r["kept"] and (r["reason"] or "").split(":")[0] == stage)
        if n:
            left -= n
            labels.append(stage)
            remaining.append(left)
            dropped.append(n)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 0.8))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, remaining, color="#4c8")
    ax.barh(y, dropped, left=remaining, color="#d66")
    ax.set_yticks(y, [f"{lab} (-{d})" if d else lab for lab, d in zip(labels, dropped, strict=True)])
    ax.set_xlabel("rows left after the stage (green) and removed by it (red)")
    return _png(fig)


def _histogram(rows: list[dict], column: str, lines: list[float], title: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [r[column] for r in rows if r[column] is not None]
    if not values:
        return None
    # the axis spans the values (and the thresholds near them): a far threshold is named, not drawn
    lo, hi = min(values), max(values)
    span = (hi - lo) or abs(hi) or 1.0
    left, right = lo - 0.15 * span, hi + 0.15 * span
    near = [x for x in lines if left - span <= x <= right + span]
    far = [x for x in lines if x not in near]
    left, right = min([left, *near]), max([right, *near])
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    ax.hist(values, bins=min(30, max(5, len(values))), range=(left, right), color="#68a")
    for x in near:
        ax.axvline(x, color="#d33", linestyle="--")
    ax.set_xlim(left, right)
    note = f"\n(off the axis: {', '.join(f'{x:g}' for x in far)})" if far else ""
    ax.set_title(title + note, fontsize=9)
    return _png(fig)


def _figure(row: dict) -> str:
    image = f"<img class='thumb' src='{html.escape(row['thumbnail'])}'>" if row["thumbnail"] else ""
    name = Path(row["source"]).name
    if row["start"] is not None and row["kind"] == "video":
        name += f" {row['start']:.1f}-{row['end']:.1f} s"
    caption = html.escape(name) + (f"<br>{html.escape(row['reason'])}" if row["reason"] else "")
    return f"<figure>{image}<figcaption>{caption}<br><small>{html.escape(row['clip'])}</small></figcaption></figure>"


def write_report(rows: list[dict], cfg: CurateConfig, path: str | Path) -> Path:
    q, a = cfg.quality, cfg.admission
    hists = [
        _histogram(rows, "brightness", [q.brightness_min, q.brightness_max], "brightness (Rec. 709 luma)"),
        _histogram(rows, "motion", [q.motion_min, q.motion_max, *a.min_motion], "motion (frame widths / s)"),
        _histogram(rows, "sharpness", [q.sharpness_min], "sharpness (Laplacian variance)"),
        _histogram(rows, "aesthetic", list(a.min_aesthetic), "aesthetic (V2.5)"),
        _histogram(rows, "duplicate_similarity", [cfg.dedup.similarity], "duplicate cosine"),
    ]
    if all(r["aesthetic"] is None for r in rows):
        hists.append(None)
    kept = sum(bool(r["kept"]) for r in rows)
    stage_rows = "".join(
        f"<tr><td>{s}</td><td>{sum(bool(r.get(f'stage_{s}')) for r in rows)}</td></tr>" for s in a.stages
    )
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = "kept" if r["kept"] else (r["reason"] or "unknown").split(":")[0]
        groups.setdefault(key, []).append(r)
    galleries = []
    for key in sorted(groups, key=lambda k: (k != "kept", k)):
        figures = "".join(_figure(r) for r in groups[key][:60])
        galleries.append(f"<h3>{html.escape(key)} ({len(groups[key])})</h3><div class='grid'>{figures}</div>")
    aesthetic_note = (
        "<p>The aesthetic stage was <b>not run</b> (no quality.aesthetic_encoder / aesthetic_head): its column is "
        "empty and no aesthetic threshold was applied.</p>"
        if all(r["aesthetic"] is None for r in rows)
        else ""
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Curation report</title>"
        f"<style>{_STYLE}</style></head><body><h1>Curation report</h1>"
        f"<p>{len({r['source'] for r in rows})} sources, {len(rows)} rows, {kept} clips kept.</p>"
        f"<h2>Funnel</h2><img src='{_funnel_figure(rows)}'>"
        f"<h2>Stage admission</h2><table><tr><th>stage</th><th>clips</th></tr>{stage_rows}</table>"
        f"<h2>Scores and thresholds</h2>{aesthetic_note}<div class='grid' style='gap:16px'>"
        + "".join(f"<img src='{h}'>" for h in hists if h)
        + "</div><h2>Clips by outcome</h2>"
        + "".join(galleries)
        + "</body></html>"
    )
    return atomic_write(path, lambda tmp: tmp.write_text(page))
