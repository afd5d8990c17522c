"""Training batches streamed from precomputed shards: one plan file per rank, shards read front to back.

    shard-*.jsonl (metadata) ─ plan ─▶ RUN/plan/epoch-EEEE/rank{r}.npz ─ reader (DataLoader worker) ─▶ batches

Nothing here holds the dataset. The **index** is the shards' metadata only (per sample: its shard, key,
bucket, caption and text length; `precompute` writes it as `NAME.jsonl` beside each `NAME.tar`, and
older sets are indexed once from their tars' json members). The **plan** of an epoch is made once, by
rank 0, before training reaches it: the shards are shuffled with the epoch's seed and dealt to the
ranks; each rank's shards are cut into windows of `window` shards; inside a window the steps follow
the stage's step pattern (I = an image batch, V = a video batch), each step on one bucket that every
rank can fill with its own samples (`image_batch` per rank on image steps, `video_batch` on video
steps), so all ranks step on the same shape, as in the report's offline bucket-balanced sampler.
Samples that do not fill a batch wait for the next epoch (another seed deals them otherwise). Each
rank's part is written as `rank{r}.npz`: the shards it reads, in order, and per step the kind, the
bucket and the sample ids. A rank's **reader** opens only the shards its file names, each once per
epoch, as a tar stream (no seeks), keeps the samples its window's steps use, and hands out the
window's batches: memory is one window plus the prefetched batches, whatever the size of the set.

A batch is a function of (plan, step): a resumed run rebuilds the reader at its step (epoch, window,
position) and sees what the interrupted one would have seen. Data with no 1-frame (image) bucket
gives its image steps video samples; the trainer takes their first latent frame.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

VARIANT_TEXTS = ("text", "text_short", "text_truncated")  # long, short, truncated caption states
KINDS = {"V": 0, "I": 1, "A": 2}  # A: any bucket (no stage pattern)


# -- the index: metadata only --------------------------------------------------------------------


@dataclass
class Index:
    """Per sample a few numbers, not its text: the plan of a 10M-clip set holds ~100 MB of arrays."""

    shards: list[Path]
    shard: np.ndarray  # [N] shard number of every sample
    bucket_names: list[str]  # the set's buckets ("FxHxW", pixels), sorted
    bucket: np.ndarray  # [N] index into bucket_names
    text_tokens: np.ndarray  # [N] longest text-state length over the sample's variants (0: no states)

    def __len__(self) -> int:
        return len(self.shard)

    @property
    def buckets(self) -> list[str]:
        """The bucket name of every sample."""
        return [self.bucket_names[b] for b in self.bucket]

    def counts(self) -> dict[str, int]:
        counts = np.bincount(self.bucket, minlength=len(self.bucket_names)).tolist()
        return dict(zip(self.bucket_names, counts, strict=True))

    def fingerprint(self) -> str:
        """Changes when a shard is added, removed or rewritten."""
        h = hashlib.sha1()
        for path in self.shards:
            stat = path.stat()
            h.update(f"{path.name}:{stat.st_size}:{len(self)}".encode())
        return h.hexdigest()[:16]


def index_row(key: str, meta: dict, text_tokens: int = 0) -> dict:
    """One sample's line of a latent shard's `NAME.jsonl` (precompute writes it)."""
    row = {"key": key, "bucket": meta["bucket"], "caption": meta["caption"], "text_tokens": text_tokens}
    if meta.get("captions"):
        row["captions"] = meta["captions"]
    return row


def read_index(path: str | Path) -> Index:
    path = Path(path)
    shards = sorted(path.glob("shard-*.tar"))
    if not shards:
        raise FileNotFoundError(f"{path} has no precomputed shards (run `motif-video precompute` first)")
    numbers, buckets, tokens = [], [], []
    for number, shard in enumerate(shards):
        for row in _shard_rows(shard):
            numbers.append(number)
            buckets.append(row["bucket"])
            tokens.append(row.get("text_tokens", 0))
    names = sorted(set(buckets))
    ids = {name: i for i, name in enumerate(names)}
    bucket = np.array([ids[b] for b in buckets], np.int32)
    return Index(shards, np.array(numbers, np.int32), names, bucket, np.array(tokens, np.int64))


def read_captions(path: str | Path) -> list[str]:
    """Every caption the set can show a model (all three variants where there are three), read from
    the index files: for the word-level encoder's vocabulary (small sets; not kept in the Index)."""
    out = []
    for shard in sorted(Path(path).glob("shard-*.tar")):
        for row in _shard_rows(shard):
            out += row.get("captions") or [row["caption"]]
    return out


def _shard_rows(shard: Path) -> list[dict]:
    listing = shard.with_suffix(".jsonl")
    if listing.is_file() and listing.stat().st_mtime >= shard.stat().st_mtime - 1:
        rows = [json.loads(line) for line in listing.read_text().splitlines() if line.strip()]
        if all("text_tokens" in row for row in rows):  # an index (a clip shard's metadata has none)
            return rows
    # a set from before the listings: read the tar's json members and text-state headers once
    rows: dict[str, dict] = {}
    lengths: dict[str, int] = {}
    has_latents = False
    with tarfile.open(shard, "r|") as tar:
        for member in tar:
            key, _, kind = member.name.partition(".")
            if kind == "json":
                rows[key] = json.loads(tar.extractfile(member).read())
            elif kind.removesuffix(".npy") in VARIANT_TEXTS:
                data = tar.extractfile(member).read()
                lengths[key] = max(lengths.get(key, 0), int(np.load(io.BytesIO(data)).shape[0]))
            has_latents = has_latents or kind == "latents.npy"
    if rows and not has_latents:
        raise ValueError(
            f"{shard.parent} holds clips (from `motif-video prepare`), not latents: run `motif-video precompute "
            f"{shard.parent} WEIGHTS OUT` and train on OUT"
        )
    return [index_row(key, meta, lengths.get(key, 0)) for key, meta in rows.items()]


# -- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanSettings:
    world: int
    video_batch: int  # per rank
    image_batch: int  # per rank
    pattern: str  # "IV..." of a curriculum stage, or "A" (every step any bucket)
    seed: int
    window: int  # shards per rank read together
    buckets: tuple[str, ...]  # the buckets admitted (a stage's sizes and frame counts); empty: all


def plan_epoch(index: Index, settings: PlanSettings, epoch: int, first_step: int) -> list[dict[str, np.ndarray]]:
    """Per rank, the epoch's arrays: `shards` (read in this order), `window_ends` (cumulative shard
    counts of its windows), and per step `kind`, `bucket` (into the sorted bucket names), `window`
    and `samples` (sample ids, -1 padded). `first_step`: the global step the epoch starts at (the
    step pattern continues across epochs)."""
    s = settings
    rng = np.random.default_rng([s.seed, epoch])
    names = index.bucket_names
    bucket_of = index.bucket
    admitted = np.array([not s.buckets or name in s.buckets for name in names])
    is_image = np.array([name.split("x")[0] == "1" for name in names])
    has_images = bool((is_image & admitted).any())
    order = rng.permutation(len(index.shards))
    dealt = [order[r :: s.world] for r in range(s.world)]
    windows = max(1, -(-max(len(d) for d in dealt) // s.window))
    by_shard = [np.flatnonzero(index.shard == n) for n in range(len(index.shards))]

    kinds, buckets, window_of, samples = [], [], [], [[] for _ in range(s.world)]
    step = first_step
    for w in range(windows):
        # per rank, per bucket: its samples of this window, shuffled
        left = []
        for r in range(s.world):
            ids = [i for n in dealt[r][w * s.window : (w + 1) * s.window] for i in by_shard[n]]
            ids = np.array(ids, dtype=np.int64)
            ids = ids[rng.permutation(len(ids))]
            left.append({b: list(ids[bucket_of[ids] == b]) for b in range(len(names)) if admitted[b]})
        while True:
            kind = s.pattern[step % len(s.pattern)]
            size = s.image_batch if kind == "I" else s.video_batch
            fits = {  # the buckets this kind may use, that every rank can fill
                b: min(len(left[r].get(b, ())) for r in range(s.world))
                for b in range(len(names))
                if admitted[b]
                and (kind == "A" or (kind == "V" and not is_image[b]) or (kind == "I" and is_image[b] == has_images))
            }
            fits = {b: n for b, n in fits.items() if n >= size}
            if not fits:
                break
            choices = sorted(fits)
            weights = np.array([fits[b] for b in choices], dtype=np.float64)
            b = choices[rng.choice(len(choices), p=weights / weights.sum())]
            for r in range(s.world):
                samples[r].append(left[r][b][:size])
                del left[r][b][:size]
            kinds.append(KINDS[kind])
            buckets.append(b)
            window_of.append(w)
            step += 1
    width = max(s.video_batch, s.image_batch)
    out = []
    for r in range(s.world):
        ends = np.minimum(np.arange(1, windows + 1) * s.window, len(dealt[r]))
        padded = np.full((len(kinds), width), -1, dtype=np.int64)
        for i, ids in enumerate(samples[r]):
            padded[i, : len(ids)] = ids
        out.append(
            {
                "shards": dealt[r].astype(np.int32),
                "window_ends": ends.astype(np.int32),
                "kind": np.array(kinds, np.uint8),
                "bucket": np.array(buckets, np.int32),
                "window": np.array(window_of, np.int32),
                "samples": padded,
                "bucket_names": np.array(names),
            }
        )
    return out


def write_plans(plan_dir: Path, index: Index, settings: PlanSettings, steps: int) -> list[dict]:
    """Plan epochs (rank 0) until they cover `steps` steps; earlier epochs made with the same
    settings and data are kept. Returns the epochs [{"start", "steps"}]. Files are written under a
    temporary name and renamed; `plan.json` last."""
    from motif_video.media import atomic_write, write_json

    record_file = plan_dir / "plan.json"
    wanted = {"settings": asdict(settings), "data": index.fingerprint(), "samples": len(index)}
    epochs: list[dict] = []
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        if {k: record.get(k) for k in wanted} == json.loads(json.dumps(wanted)):
            epochs = record["epochs"]
    start = epochs[-1]["start"] + epochs[-1]["steps"] if epochs else 0
    while start < steps:
        epoch = len(epochs)
        parts = plan_epoch(index, settings, epoch, start)
        length = len(parts[0]["kind"])
        if length == 0:
            counts = index.counts()
            raise ValueError(
                f"no step of epoch {epoch} can be filled: {settings.world} rank(s) x {settings.video_batch} video / "
                f"{settings.image_batch} image samples per step on one bucket, from {len(index.shards)} shard(s) "
                f"with buckets {counts}"
                + (f" (admitted: {list(settings.buckets)})" if settings.buckets else "")
                + (
                    "; lower data.batch_size"
                    if settings.video_batch * settings.world > len(index)
                    else "; lower data.batch_size or raise data.window"
                )
            )
        folder = plan_dir / f"epoch-{epoch:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for r, arrays in enumerate(parts):
            atomic_write(folder / f"rank{r}.npz", lambda tmp, a=arrays: _savez(tmp, a))
        epochs.append({"start": start, "steps": length})
        start += length
    write_json({**wanted, "shards": [p.name for p in index.shards], "epochs": epochs}, record_file)
    return epochs


def _savez(tmp: Path, arrays: dict) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)


def locate(epochs: list[dict], step: int) -> tuple[int, int]:
    """(epoch, position in it) of a global step."""
    for e, epoch in enumerate(epochs):
        if epoch["start"] <= step < epoch["start"] + epoch["steps"]:
            return e, step - epoch["start"]
    raise ValueError(
        f"step {step} is beyond the planned epochs (they end at {epochs[-1]['start'] + epochs[-1]['steps']})"
    )


# -- the reader -----------------------------------------------------------------------------------


class RankStream(torch.utils.data.IterableDataset):
    """(step, batch) of one rank from global step `start` on, window by window. With several
    DataLoader workers, worker k reads windows k, k + workers, ...; `StreamedShards` puts the steps
    back in order."""

    def __init__(self, root: Path, plan_dir: Path, rank: int, start: int, text_len: int, with_video: bool) -> None:
        self.root, self.plan_dir, self.rank, self.start = root, plan_dir, rank, start
        self.text_len, self.with_video = text_len, with_video
        self.opened: list[str] = []  # shard names, in the order this reader opened them (workers=0)

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        record = json.loads((self.plan_dir / "plan.json").read_text())
        epochs, shard_names = record["epochs"], record["shards"]
        epoch, position = locate(epochs, self.start)
        first_ids = _shard_offsets(self.plan_dir)  # the id of each shard's first sample, read once
        counter = 0  # windows handed out so far, over epochs: the worker split
        for e in range(epoch, len(epochs)):
            with np.load(self.plan_dir / f"epoch-{e:04d}" / f"rank{self.rank}.npz") as f:
                plan = {k: f[k] for k in f.files}
            first = position if e == epoch else 0
            steps_of_window = {}
            for i in range(first, len(plan["kind"])):
                steps_of_window.setdefault(int(plan["window"][i]), []).append(i)
            for w in sorted(steps_of_window):
                counter += 1
                if (counter - 1) % workers != worker:
                    continue
                lo = 0 if w == 0 else int(plan["window_ends"][w - 1])
                window = [(shard_names[n], first_ids[n]) for n in plan["shards"][lo : plan["window_ends"][w]]]
                wanted = {int(i) for s in steps_of_window[w] for i in plan["samples"][s] if i >= 0}
                samples = self._read(window, wanted)
                for s in steps_of_window[w]:
                    ids = [int(i) for i in plan["samples"][s] if i >= 0]
                    yield epochs[e]["start"] + s, self._collate([samples.pop(i) for i in ids])

    def _read(self, window: list[tuple[str, int]], wanted: set[int]) -> dict[int, dict]:
        """The wanted samples of the window's shards (name, id of its first sample), each shard read
        once, front to back."""
        out = {}
        for name, base in window:
            self.opened.append(name)
            with tarfile.open(self.root / name, "r|") as tar:
                row, last = -1, None
                for member in tar:
                    key, _, kind = member.name.partition(".")
                    if key != last:
                        row, last = row + 1, key
                    if base + row not in wanted:
                        continue
                    entry = out.setdefault(base + row, {})
                    data = tar.extractfile(member).read()
                    if kind.endswith(".npy"):
                        entry[kind.removesuffix(".npy")] = np.load(io.BytesIO(data))
                    elif kind == "json":
                        meta = json.loads(data)
                        entry["caption"], entry["captions"] = meta["caption"], meta.get("captions")
                        entry["free_layout"] = meta.get("layout") == "free"
                    elif kind == "mp4" and self.with_video:
                        entry["mp4"] = data
        missing = wanted - set(out)
        if missing:
            names = [name for name, _ in window]
            raise ValueError(f"the shards {names} in {self.root} no longer hold {len(missing)} planned samples")
        return out

    def _collate(self, items: list[dict]) -> dict:
        out = {
            "latents": torch.stack([torch.from_numpy(s["latents"]) for s in items]),
            "captions": [s["caption"] for s in items],
            "caption_variants": [s.get("captions") for s in items],
            # clips whose caption does not say where the object is (shapes world, free_layout)
            "free_layout": torch.tensor([bool(s.get("free_layout")) for s in items]),
        }
        if all("text" in s for s in items):
            texts = [pad_text(torch.from_numpy(s["text"]), self.text_len) for s in items]
            out["text"] = torch.stack([t for t, _ in texts])
            out["text_mask"] = torch.stack([m for _, m in texts])
            if all("text_truncated" in s for s in items):  # the three variants' states, [3, B, S, D] and [3, B, S]
                padded = [[pad_text(torch.from_numpy(s[k]), self.text_len) for s in items] for k in VARIANT_TEXTS]
                out["text_variants"] = torch.stack([torch.stack([t for t, _ in v]) for v in padded])
                out["text_variant_masks"] = torch.stack([torch.stack([m for _, m in v]) for v in padded])
        if all("image" in s for s in items):
            out["image_tokens"] = torch.stack([torch.from_numpy(s["image"]) for s in items])
        if self.with_video:
            from motif_video.media import read_video

            frames = [torch.from_numpy(read_video(s["mp4"])[0]) for s in items]
            out["video"] = torch.stack(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # [B, 3, F, H, W]
        return out


def _shard_offsets(plan_dir: Path) -> list[int]:
    """The id of each shard's first sample (ids count samples in shard order)."""
    counts = json.loads((plan_dir / "counts.json").read_text())
    return [int(c) for c in np.concatenate([[0], np.cumsum(counts)[:-1]])]


def pad_text(text: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """States [S, D] -> [length, D] zero-padded (longer ones cut), and the mask of the real tokens."""
    text = text[:length]
    mask = torch.zeros(length, dtype=torch.bool)
    mask[: len(text)] = True
    return torch.nn.functional.pad(text.float(), (0, 0, 0, length - len(text))), mask


class StreamedShards:
    """One rank's training batches from precomputed shards (see the module text).

    `plan(...)` (every rank calls it; rank 0 writes) makes the epochs' plan files; `batch(step)`
    returns this rank's batch of global step `step`, from a DataLoader of `workers` processes that
    read ahead `prefetch` batches each. Asking for another step than the next one (a resumed run,
    a test) restarts the reader there."""

    def __init__(
        self,
        path: str | Path,
        seed: int = 0,
        with_video: bool = False,
        workers: int = 1,
        prefetch: int = 2,
        window: int = 4,
        text_tokens: int = 0,
    ) -> None:
        self.root = Path(path)
        self.index = read_index(self.root)
        self.seed, self.with_video, self.window = seed, with_video, window
        self.workers, self.prefetch = workers, prefetch
        self.has_text = bool(self.index.text_tokens.min() > 0)
        self.text_len = 0
        if self.has_text:
            null = np.load(self.root / "null_text.npy")
            self.text_len = text_tokens or int(max(self.index.text_tokens.max(), len(null)))
            self.null_text, self.null_mask = pad_text(torch.from_numpy(null), self.text_len)
        self.plan_dir: Path | None = None
        self.rank = 0
        self._iterator = None
        self._next = -1
        self._pending: dict[int, dict] = {}

    @property
    def captions(self) -> list[str]:
        """Every caption of the set (read on demand: only the word-level encoder's vocabulary needs it)."""
        return read_captions(self.root)

    def first(self) -> dict:
        """The first sample of the first shard (its latent shape, its text width)."""
        with tarfile.open(self.index.shards[0], "r|") as tar:
            entry: dict = {}
            for member in tar:
                key, _, kind = member.name.partition(".")
                if kind in ("latents.npy", "text.npy"):
                    entry[kind.removesuffix(".npy")] = np.load(io.BytesIO(tar.extractfile(member).read()))
                if "latents" in entry and ("text" in entry or not self.has_text):
                    return entry
        raise ValueError(f"{self.index.shards[0]} holds no latents")

    def plan(
        self,
        plan_dir: str | Path,
        steps: int,
        rank: int,
        world: int,
        batch_size: int,
        image_batch_size: int = 0,
        pattern: str = "A",
        buckets: tuple[str, ...] = (),
        is_main: bool = True,
    ) -> list[dict]:
        """Write (rank 0) or wait for the plans covering `steps` steps; global batch sizes."""
        from motif_video import distributed

        image_batch_size = image_batch_size or batch_size
        for name, size in (("data.batch_size", batch_size), ("stage.image_batch_size", image_batch_size)):
            if size % world:
                raise ValueError(f"{name} {size} does not divide over {world} ranks")
        settings = PlanSettings(
            world, batch_size // world, image_batch_size // world, pattern, self.seed, self.window, tuple(buckets)
        )
        self.plan_dir, self.rank = Path(plan_dir), rank
        if buckets and not set(buckets) & set(self.index.bucket_names):
            raise ValueError(
                f"none of the shards' buckets {self.index.bucket_names} in {self.root} is one of the stage's "
                f"{list(buckets)}"
            )
        if is_main:
            self.plan_dir.mkdir(parents=True, exist_ok=True)
            counts = np.bincount(self.index.shard, minlength=len(self.index.shards)).tolist()
            from motif_video.media import write_json

            write_json(counts, self.plan_dir / "counts.json")
            epochs = write_plans(self.plan_dir, self.index, settings, steps)
        distributed.barrier()
        if not is_main:
            epochs = json.loads((self.plan_dir / "plan.json").read_text())["epochs"]
        self._iterator, self._next = None, -1
        return epochs

    def position(self, step: int) -> dict:
        """Where the reader is at `step`: epoch, step within it, window (recorded in checkpoints)."""
        epochs = json.loads((self.plan_dir / "plan.json").read_text())["epochs"]
        epoch, position = locate(epochs, step)
        with np.load(self.plan_dir / f"epoch-{epoch:04d}" / f"rank{self.rank}.npz") as f:
            window = int(f["window"][position])
        return {"epoch": epoch, "step_in_epoch": position, "window": window}

    def batch(self, step: int, *_unused) -> dict:
        if self.plan_dir is None:
            raise RuntimeError("StreamedShards.plan(...) must run before batch()")
        if step != self._next:
            self._start(step)
        while step not in self._pending:
            got, batch = next(self._iterator)
            self._pending[got] = batch
        self._next = step + 1
        return self._pending.pop(step)

    def _start(self, step: int) -> None:
        self.close()
        self.stream = RankStream(self.root, self.plan_dir, self.rank, step, self.text_len, self.with_video)
        if self.workers > 0:
            loader = torch.utils.data.DataLoader(
                self.stream, batch_size=None, num_workers=self.workers, prefetch_factor=self.prefetch
            )
            self._iterator = iter(loader)
        else:
            self._iterator = iter(self.stream)
        self._pending = {}

    def close(self) -> None:
        if self._iterator is not None and hasattr(self._iterator, "_shutdown_workers"):
            self._iterator._shutdown_workers()
        self._iterator = None


def stage_buckets(index: Index, frame_buckets, image_size, video_size, tolerance: float = 0.35) -> tuple[str, ...]:
    """The index's buckets a curriculum stage trains on: frame counts in `frame_buckets` (1: images),
    pixel area within `tolerance` of the stage's image or video size."""
    out = []
    for name in index.bucket_names:
        frames, height, width = (int(v) for v in name.split("x"))
        size = image_size if frames == 1 else video_size
        area = size[0] * size[1]
        if frames in frame_buckets and abs(height * width / area - 1) <= tolerance:
            out.append(name)
    return tuple(out)
