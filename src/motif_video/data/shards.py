"""WebDataset shards: tar files of `KEY.mp4` + `KEY.json`, written so that nothing is lost.

A shard is committed in two renames: its metadata `shard-NNNNNN.jsonl` first, then its tar. A tar
is the proof of a complete shard; a metadata file without its tar (a crash between the renames)
and temporary files are removed on restart. The sources of every committed shard are known from
its metadata, so a restarted job skips them and neither duplicates nor drops a sample. A shard is
closed only between sources, so a source never spans two shards.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ShardWriter:
    def __init__(self, out_dir: str | Path, max_count: int = 64) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_count = max_count
        self._clean()
        self.index = len(self.committed())
        self.samples: list[tuple[dict[str, Any], bytes]] = []

    def _clean(self) -> None:
        for path in self.out_dir.glob("*.tmp"):
            path.unlink()
        for meta in self.out_dir.glob("shard-*.jsonl"):
            if not meta.with_suffix(".tar").exists():
                meta.unlink()

    def committed(self) -> list[Path]:
        return sorted(self.out_dir.glob("shard-*.tar"))

    def done_sources(self) -> set[str]:
        return {row["source"] for row in read_metadata(self.out_dir)}

    def add(self, meta: dict[str, Any], video: bytes) -> None:
        self.samples.append((meta, video))

    def end_source(self) -> None:
        """Call after the last clip of a source: closes the shard if it is full."""
        if len(self.samples) >= self.max_count:
            self.flush()

    def flush(self) -> None:
        if not self.samples:
            return
        name = f"shard-{self.index:06d}"
        tar_tmp = self.out_dir / f"{name}.tar.tmp"
        meta_tmp = self.out_dir / f"{name}.jsonl.tmp"
        with tarfile.open(tar_tmp, "w") as tar:
            for meta, video in self.samples:
                meta = {**meta, "shard": f"{name}.tar"}
                _add_bytes(tar, f"{meta['key']}.mp4", video)
                _add_bytes(tar, f"{meta['key']}.json", json.dumps(meta).encode())
        meta_tmp.write_text("".join(json.dumps({**m, "shard": f"{name}.tar"}) + "\n" for m, _ in self.samples))
        for path in (meta_tmp, tar_tmp):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        os.replace(meta_tmp, self.out_dir / f"{name}.jsonl")
        os.replace(tar_tmp, self.out_dir / f"{name}.tar")  # the commit point
        self.index += 1
        self.samples = []


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def read_metadata(out_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of every committed shard, in shard order."""
    rows = []
    for tar in sorted(Path(out_dir).glob("shard-*.tar")):
        meta = tar.with_suffix(".jsonl")
        rows += [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
    return rows


def iterate_shard(path: str | Path) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(metadata, mp4 bytes) of each sample of a shard, in order, reading it sequentially."""
    pending: dict[str, dict[str, Any] | bytes] = {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            key, _, ext = member.name.rpartition(".")
            data = tar.extractfile(member).read()
            pending.setdefault(key, {})[ext] = data
            entry = pending[key]
            if "mp4" in entry and "json" in entry:
                yield json.loads(entry["json"]), entry["mp4"]
                del pending[key]
