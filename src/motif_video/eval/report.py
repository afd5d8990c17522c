"""One HTML page per evaluation run: the videos (autoplaying, muted, looping), tables, figures."""

from __future__ import annotations

import html
from pathlib import Path

from motif_video.media import atomic_write

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
figure { margin: 0; } figcaption { font-size: 12px; } video { width: 100%; background: #000; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: right; } th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
"""


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def write_html(
    path: str | Path, title: str, videos: list[tuple[str, str]], sections: list[str], images: list[tuple[str, str]] = ()
) -> Path:
    """videos and images: (caption, path relative to the page)."""
    grid = "".join(
        f'<figure><video src="{html.escape(src)}" autoplay muted loop playsinline></video>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, src in videos
    )
    figures = "".join(
        f'<h2>{html.escape(caption)}</h2><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
        for caption, src in images
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}"
        f"<h2>Videos</h2><div class='grid'>{grid}</div>{figures}</body></html>"
    )
    return atomic_write(path, lambda tmp: tmp.write_text(page))
