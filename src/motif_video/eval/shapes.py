"""The shapes benchmark: objective scores of generated shapes-world videos.

Each prompt describes one object (color, shape, direction) on a plain background; the scorer
finds the pixels of the asked color in every frame and measures
- color:     share of frames in which the asked color covers a visible object;
- shape:     share of those frames whose blob has the asked shape, told apart by how much of its
             bounding box it fills (square ~1, circle ~pi/4, triangle ~1/2);
- motion:    1 if the blob's centroid moved in the asked direction (the largest displacement
             component, at least a tenth of the frame), else 0;
- stability: 1 - the coefficient of variation of the blob's area over the frames (a rigid object
             keeps its size), clipped to [0, 1].
Scores are averaged separately over prompts with trained and held-out (color, shape) pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from motif_video.data import world

FILL_RATIO = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}


@dataclass(frozen=True)
class Scores:
    color: float
    shape: float
    motion: float
    stability: float

    @property
    def mean(self) -> float:
        return (self.color + self.shape + self.motion + self.stability) / 4


def benchmark_scenes(count: int, held_out: bool, seed: int = 1234, jitter: float = 1.0) -> list[world.Scene]:
    """`count` single-object scenes on a plain background, trained or held-out combinations; the
    object starts a quarter of the frame behind the centre (the world's layout, with `jitter` as
    world.scene takes it), so it stays in view for ~2 s."""
    scenes = []
    for i in range(count):
        base = world.scene(seed, i, held_out=held_out, max_objects=1, jitter=jitter)
        scenes.append(world.Scene(base.objects, base.background, "plain"))
    return scenes


def score(video: np.ndarray, scene: world.Scene, tolerance: float = 60.0, min_area: float = 0.002) -> Scores:
    """Scores of one video [F, H, W, 3] uint8 for its one-object scene."""
    obj = scene.objects[0]
    frames, height, width = video.shape[:3]
    target = np.array(world.COLORS[obj.color], dtype=np.float32)
    masks = np.linalg.norm(video.astype(np.float32) - target, axis=-1) < tolerance  # [F, H, W]
    masks = np.stack([_object_pixels(m) for m in masks])  # scattered pixels of that color are no object
    areas = masks.reshape(frames, -1).sum(axis=1)
    present = areas >= min_area * height * width
    if not present.any():
        return Scores(0.0, 0.0, 0.0, 0.0)
    shapes = [_classify(m) for m, p in zip(masks, present, strict=True) if p]
    centroids = [np.argwhere(m).mean(axis=0) for m, p in zip(masks, present, strict=True) if p]
    dy, dx = centroids[-1] - centroids[0]
    expected = world.MOTIONS[obj.motion]
    moved = max(abs(dy) / height, abs(dx) / width) >= 0.1
    along = (dy, dx)[0 if expected[0] else 1]
    across = (dx, dy)[0 if expected[0] else 1]
    motion = float(moved and np.sign(along) == np.sign(expected[0] or expected[1]) and abs(along) > abs(across))
    visible = areas[present].astype(np.float64)
    stability = float(np.clip(1 - visible.std() / visible.mean(), 0, 1)) if len(visible) > 1 else 0.0
    return Scores(
        color=float(present.mean()),
        shape=float(np.mean([s == obj.shape for s in shapes])),
        motion=motion,
        stability=stability,
    )


def _object_pixels(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    """The pixels of `mask` near a solid core: cores survive an erosion by a (2r+1)^2 square,
    specks do not; the raw pixels around the cores keep the object's outline (tips included)."""
    height, width = mask.shape

    def sweep(m: np.ndarray, r: int, combine, start) -> np.ndarray:
        padded, out = np.pad(m, r), start(m)
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                out = combine(out, padded[dy : dy + height, dx : dx + width])
        return out

    core = sweep(mask, radius, np.logical_and, np.ones_like)
    return mask & sweep(core, 2 * radius, np.logical_or, np.zeros_like)


def _classify(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = len(ys) / box
    return min(FILL_RATIO, key=lambda s: abs(FILL_RATIO[s] - fill))


CAPTION_FORMS = ("long", "short", "truncated")  # the world's caption variants (world.Scene.captions)
COLUMNS = ("color", "shape", "motion", "stability", "mean")


def benchmark_prompts(
    count: int, forms: tuple[str, ...] = ("long",), seed: int = 1234, jitter: float = 1.0
) -> list[tuple[str, str, int, world.Scene, str]]:
    """(split, form, index, scene, prompt) of every benchmark video: per split and caption form the
    `count` scenes of `benchmark_scenes`; the index is unique over all of them (the video's seed offset;
    with the long form alone it is split * count + i). A short or truncated prompt is phrased as
    `Scene.captions` phrases it, the phrasing drawn from (seed, index)."""
    unknown = [f for f in forms if f not in CAPTION_FORMS]
    if unknown or not forms:
        raise ValueError(f"caption forms must be among {', '.join(CAPTION_FORMS)}, got {', '.join(forms) or 'none'}")
    rows = []
    for s, (split, held_out) in enumerate((("trained", False), ("held_out", True))):
        for f, form in enumerate(forms):
            for i, scene in enumerate(benchmark_scenes(count, held_out, seed, jitter)):
                index = (f * 2 + s) * count + i
                prompt = scene.captions(np.random.default_rng([seed, index]))[CAPTION_FORMS.index(form)]
                rows.append((split, form, index, scene, prompt))
    return rows


def evaluate(
    generate: Callable[[str, int], np.ndarray],
    count: int = 8,
    seed: int = 1234,
    progress: bool = False,
    forms: tuple[str, ...] = ("long",),
) -> dict:
    """Generate (`generate(caption, index) -> video`, index unique over the whole run) and score
    trained and held-out prompts, in each caption form of `forms`; with more than one form, each
    split also has its means per form ("by_form")."""
    prompts = benchmark_prompts(count, forms, seed)
    rows: dict[str, list[dict]] = {"trained": [], "held_out": []}
    for split, form, index, scene, prompt in tqdm(prompts, desc="shapes benchmark", unit="video", disable=not progress):
        s = score(generate(prompt, index), scene)
        rows[split].append({"caption": prompt, "form": form, **asdict(s), "mean": s.mean})

    def means(selected: list[dict]) -> dict:
        return {k: float(np.mean([r[k] for r in selected])) for k in COLUMNS}

    report: dict = {}
    for split, split_rows in rows.items():
        report[split] = {"prompts": split_rows, "mean": means(split_rows)}
        if len(forms) > 1:
            report[split]["by_form"] = {f: means([r for r in split_rows if r["form"] == f]) for f in forms}
    return report


def pipeline_generator(pipe, *, height: int, width: int, frames: int, steps: int, seed: int = 0):
    """`generate(caption, index)` for `evaluate`: one video of `pipe` per prompt, seed + index."""

    def generate(caption: str, index: int) -> np.ndarray:
        result = pipe(
            caption, height=height, width=width, frames=frames, steps=steps, seed=seed + index, progress=False
        )
        return result.uint8()[0]

    return generate


def markdown(report: dict) -> str:
    lines = ["| split | color | shape | motion | stability | mean |", "|---|---|---|---|---|---|"]
    for split in ("trained", "held_out"):
        parts = [(split, report[split]["mean"])]
        parts += [(f"{split}, {form} captions", m) for form, m in report[split].get("by_form", {}).items()]
        for name, m in parts:
            lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def run_benchmark(
    generate: Callable[[str, int], np.ndarray],
    out: str | Path,
    *,
    count: int,
    source: str,
    pipe=None,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    progress: bool = False,
    forms: tuple[str, ...] = ("long",),
    settings: dict | None = None,
) -> dict:
    """One benchmark run written to `out`: the videos, report.json / report.md, the weight-free
    metrics of every video and report.html; with `pipe`, also the attention figure of its first video.
    `settings` (how the videos were made: steps, seed, guidance) are kept in report.json as they are."""
    from motif_video.eval.metrics import all_metrics
    from motif_video.eval.report import table as html_table
    from motif_video.eval.report import write_html
    from motif_video.media import write_json, write_mp4

    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    kept: list[tuple[str, str, dict]] = []

    def generate_and_keep(caption: str, index: int) -> np.ndarray:
        video = generate(caption, index)
        name = f"videos/{index:03d}-{'-'.join(caption.split()[1:4])}.mp4"
        write_mp4(video, out / name, fps=8)
        kept.append((caption, name, all_metrics(video)))
        return video

    report = evaluate(generate_and_keep, count=count, progress=progress, forms=forms)
    report["source"] = source
    report["caption_forms"] = list(forms)
    report["settings"] = {"frames": frames, "height": height, "width": width, **(settings or {})}
    report["metrics"] = {name: metrics for _, name, metrics in kept}
    write_json(report, out / "report.json")
    (out / "report.md").write_text(markdown(report))
    shapes_rows = [[split, *(report[split]["mean"][k] for k in COLUMNS)] for split in ("trained", "held_out")]
    metric_names = list(kept[0][2])
    figures = []
    if pipe is not None:  # how the model attends, on its first video (noised half-way)
        from motif_video.eval.attention import study, video_latents

        caption, name, _ = kept[0]
        latents = video_latents(pipe.vae, out / name, frames, height, width)
        study(pipe, caption, latents, out, video=name)
        figures.append((f"Attention per block: {caption} (t = 0.5)", "attention.png"))
    write_html(
        out / "report.html",
        f"Shapes benchmark: {source}",
        [(caption, name) for caption, name, _ in kept],
        [
            html_table("Shapes benchmark", ["split", "color", "shape", "motion", "stability", "mean"], shapes_rows),
            html_table(
                "Weight-free metrics",
                ["video", *metric_names],
                [[name, *(m[k] for k in metric_names)] for _, name, m in kept],
            ),
        ],
        figures,
    )
    return report
