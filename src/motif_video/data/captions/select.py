"""`select`: a domain-balanced subset of a captioned, curated folder (the report's SFT and 720p balancing).

The subject (and optionally style) tags written by the captioner are the domains. A target mix names
each domain's share; the subset is the largest one that has exactly those shares (each domain takes
floor(N * share) clips, N limited by the scarcest domain), best aesthetic score first, then clip id.
Domains not in the target are left out. The subset is written as a list that `prepare` reads.
"""

from __future__ import annotations

import csv
import io
import math
import tomllib
from pathlib import Path

from motif_video.media import atomic_write


def load_mix(path: str | Path) -> dict[str, dict[str, float]]:
    """{"subject": {domain: share}, "style": {...}} from a TOML file of [subject] / [style] tables."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"target mix {path} is not valid TOML: {e}") from None
    unknown = sorted(set(raw) - {"subject", "style"})
    if unknown or not raw:
        raise ValueError(f"target mix {path} must have [subject] and/or [style] tables, got {sorted(raw)}")
    mix = {}
    for key, shares in raw.items():
        if not isinstance(shares, dict) or not shares:
            raise ValueError(f"target mix {path}: [{key}] must map domains to shares")
        bad = {k: v for k, v in shares.items() if not isinstance(v, (int, float)) or v < 0}
        total = sum(v for v in shares.values() if isinstance(v, (int, float)))
        if bad or total <= 0:
            raise ValueError(
                f"target mix {path}: [{key}] shares must be numbers >= 0 with a positive sum, got {shares}"
            )
        mix[key] = {k.lower(): v / total for k, v in shares.items() if v > 0}
    return mix


def eligible(rows: list[dict], stage: str) -> list[dict]:
    """Captioned kept clips of a stage: 'sft' (action Dynamic, quality not low, 480p admitted) or a stage name."""
    ok = [r for r in rows if r["kept"] and r.get("caption_status") == "ok"]
    if stage == "sft":
        return [r for r in ok if r.get("sft") and r.get("stage_480p")]
    column = f"stage_{stage}"
    if not rows or column not in rows[0]:
        raise ValueError(f"unknown stage {stage!r}; choose sft or one of 144p, 360p, 480p, 720p")
    return [r for r in ok if r[column]]


def shares(rows: list[dict], key: str) -> dict[str, float]:
    counts: dict[str, int] = {}
    for r in rows:
        name = (r.get(key) or "unknown").lower()
        counts[name] = counts.get(name, 0) + 1
    return {k: v / len(rows) for k, v in sorted(counts.items())} if rows else {}


def balance(rows: list[dict], key: str, target: dict[str, float]) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get(key) or "unknown").lower(), []).append(r)
    missing = sorted(d for d in target if d not in groups)
    if missing:
        raise ValueError(f"no eligible clip has {key} {missing}; the target mix cannot be met")
    total = min(len(groups[d]) / share for d, share in target.items())
    out = []
    for domain, share in target.items():
        ranked = sorted(groups[domain], key=lambda r: (-(r.get("aesthetic") or 0.0), r["clip"]))
        out += ranked[: math.floor(total * share + 1e-9)]
    return sorted(out, key=lambda r: r["clip"])


def select(out_dir: str | Path, stage: str, mix: dict[str, dict[str, float]] | None) -> dict:
    """Writes OUT/select-<stage>.csv; returns the mixes before and after and the counts."""
    from motif_video.data.curation import table

    out = Path(out_dir)
    if not (out / "clips.parquet").is_file():
        raise FileNotFoundError(f"{out} has no clips.parquet; run `motif-video curate` and `caption` first")
    rows = table.read(out / "clips.parquet")
    pool = eligible(rows, stage)
    if not pool and not any(r.get("caption_status") == "ok" for r in rows):
        raise ValueError(f"no clip of {out} has a caption yet: run `motif-video caption {out} ...` first")
    if not pool:
        raise ValueError(f"no captioned clip of {out} is eligible for stage {stage!r}")
    chosen = pool
    for key, target in (mix or {}).items():
        chosen = balance(chosen, key, target)
    keys = list(mix or {"subject": None})
    path = out / f"select-{stage}.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = ["path", "caption", "caption_long", "caption_short", "caption_truncated", "subject", "style"]
    writer.writerow(columns)
    for r in chosen:
        writer.writerow([str((out / r["path"]).resolve()), r["caption_long"], *(r[c] for c in columns[2:])])
    atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))
    return {
        "eligible": len(pool),
        "selected": len(chosen),
        "before": {k: shares(pool, k) for k in keys},
        "after": {k: shares(chosen, k) for k in keys},
        "path": str(path),
    }
