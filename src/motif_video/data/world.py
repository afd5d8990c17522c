"""The shapes world: procedural captioned clips for training and evaluating small models.

Colored shapes (circle, square, triangle) move in a named direction across the middle of the
frame, one or two per clip, over a plain or striped background; the caption says what happens in
plain English. Everything is a function of (seed, index), so a clip can be re-rendered anywhere.
Some (color, shape) combinations are held out of training on purpose, so that evaluation can tell
composition from memorisation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 200),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
OBJECT_SIZE = 0.35  # an object's extent, as a fraction of the frame's shorter side
SPEED = 0.22  # how far an object moves per second, as a fraction of the frame's shorter side
MAX_OBJECTS = 2  # objects per scene: 1..MAX_OBJECTS unless a caller asks for fewer
MOTIONS: dict[str, tuple[float, float]] = {  # (dy, dx) unit directions
    "left": (0.0, -1.0),
    "right": (0.0, 1.0),
    "up": (-1.0, 0.0),
    "down": (1.0, 0.0),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"gray": (110, 110, 110), "black": (15, 15, 15)}
PATTERNS = ("plain", "striped")
FREE_STARTS = (0.2, 0.8)  # free-layout scenes: each start coordinate uniform in this range of the frame
# Combinations never rendered for training; evaluation asks for them.
HELD_OUT: frozenset[tuple[str, str]] = frozenset({("red", "triangle"), ("blue", "circle"), ("yellow", "square")})


@dataclass(frozen=True)
class ShapeObject:
    color: str
    shape: str
    motion: str
    y: float  # start centre, as a fraction of the height
    x: float  # start centre, as a fraction of the width


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    background: str
    pattern: str

    @property
    def caption(self) -> str:
        parts = [f"a {o.color} {o.shape} moves {_direction(o.motion)}" for o in self.objects]
        ground = (
            f"a {self.pattern} {self.background} background"
            if self.pattern != "plain"
            else (f"a {self.background} background")
        )
        return f"{' and '.join(parts)} on {ground}"

    def captions(self, rng: np.random.Generator) -> tuple[str, str, str]:
        """The scene's long, short and truncated captions (the report's three variants, at toy scale):
        long is `caption`; short is the object clause alone, phrased as people type it (with or without
        the article, "moves" / "goes" / "is moving" / "moving", "to the left" or "left"); truncated is the
        terse fragment ("blue square moving right"). The phrasing is drawn by `rng`."""

        def clause(o: ShapeObject, article: bool, verb: str, full_direction: bool) -> str:
            direction = _direction(o.motion) if full_direction else o.motion
            return f"{'a ' if article else ''}{o.color} {o.shape} {verb} {direction}"

        article = bool(rng.integers(2))
        verb = str(rng.choice(["moves", "goes", "is moving"] if article else ["moves", "moving", "goes"]))
        full = bool(rng.integers(2))
        short = " and ".join(clause(o, article, verb, full) for o in self.objects)
        truncated = " and ".join(clause(o, False, "moving", False) for o in self.objects)
        return self.caption, short, truncated

    @property
    def held_out(self) -> bool:
        return any((o.color, o.shape) in HELD_OUT for o in self.objects)


def _direction(motion: str) -> str:
    return {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}[motion]


def vocabulary() -> list[str]:
    """Every word a shapes-world caption can contain, sorted."""
    words = {"a", "moves", "goes", "is", "moving", "to", "the", "and", "on", "background"}
    words |= {"up", "down", "left", "right"}
    words |= set(COLORS) | set(SHAPES) | set(BACKGROUNDS) | set(PATTERNS)
    return sorted(words)


def scene(
    seed: int,
    index: int,
    held_out: bool = False,
    max_objects: int = MAX_OBJECTS,
    free_layout: float = 0.0,
    jitter: float = 1.0,
) -> Scene:
    """Scene `index` of the world `seed`; `held_out=True` draws only held-out combinations. With
    `free_layout` > 0, that share of the scenes start their objects anywhere (`FREE_STARTS` on both
    axes) instead of where the caption's layout puts them: clips in which only the video itself says
    where an object is, for training a model to continue a video (extension). `jitter` scales the
    start's jitter (0: every object starts exactly where its caption's layout puts it; the draws are
    made all the same, so the rest of the scene does not change)."""
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be a scale in [0, 1], got {jitter}")
    rng = np.random.default_rng([seed, index, int(held_out)])
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        while True:
            color, shape = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
            if ((color, shape) in HELD_OUT) == held_out:
                break
        objects.append((color, shape, str(rng.choice(list(MOTIONS)))))
    if held_out:  # one held-out object is enough to make a scene held out; keep it single
        objects = objects[:1]
    placed = tuple(_place(*o, lane, len(objects), rng, jitter) for lane, o in enumerate(objects))
    result = Scene(placed, str(rng.choice(list(BACKGROUNDS))), str(rng.choice(PATTERNS)))
    free = _free_draws(seed, index, held_out, free_layout)
    if free is not None:
        low, high = FREE_STARTS
        starts = [(float(free.uniform(low, high)), float(free.uniform(low, high))) for _ in placed]
        moved = tuple(replace(o, y=y, x=x) for o, (y, x) in zip(placed, starts, strict=True))
        result = replace(result, objects=moved)
    return result


def is_free(seed: int, index: int, free_layout: float, held_out: bool = False) -> bool:
    """Whether scene `index` starts its objects anywhere (world.scene with this `free_layout`)."""
    return _free_draws(seed, index, held_out, free_layout) is not None


def _free_draws(seed: int, index: int, held_out: bool, free_layout: float) -> np.random.Generator | None:
    """The generator of a free scene's starts, or None for a scene laid out by its caption. A stream of
    its own, so a world without free scenes is unchanged."""
    if free_layout <= 0:
        return None
    free = np.random.default_rng([seed, index, int(held_out), 11])
    return free if free.uniform() < free_layout else None


def _place(
    color: str, shape: str, motion: str, lane: int, count: int, rng: np.random.Generator, jitter: float = 1.0
) -> ShapeObject:
    """Where an object starts: a quarter of the frame behind the centre along its motion (so it
    crosses the middle), across it the middle for one object and lanes at 0.3 / 0.7 for two; a
    little jitter on both. The caption does not say where an object is, so a layout that follows
    from the caption keeps what a small model must guess small: with starts drawn anywhere, the
    embedded model's samples scattered an object's colour over every place it could have been."""
    dy, dx = MOTIONS[motion]
    across = 0.5 if count == 1 else (0.3, 0.7)[lane]
    along_y = 0.5 - 0.25 * dy + jitter * float(rng.uniform(-0.05, 0.05))
    along_x = 0.5 - 0.25 * dx + jitter * float(rng.uniform(-0.05, 0.05))
    aside = jitter * float(rng.uniform(-0.08, 0.08))
    y = along_y if dy else across + aside
    x = along_x if dx else across + aside
    return ShapeObject(color, shape, motion, y, x)


def render(scene: Scene, frames: int, height: int, width: int, fps: float = 8.0) -> np.ndarray:
    """[frames, height, width, 3] uint8 video of the scene."""
    size = OBJECT_SIZE * min(height, width)  # object extent in pixels
    speed = SPEED * min(height, width)  # pixels per second
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    canvas = np.broadcast_to(base, (height, width, 3)).copy()
    if scene.pattern == "striped":
        canvas[(xs // max(2, width // 8)) % 2 == 1] *= 0.75
    video = np.repeat(canvas[None], frames, axis=0)
    for obj in scene.objects:
        dy, dx = MOTIONS[obj.motion]
        for f in range(frames):
            t = f / fps
            cy = obj.y * height + dy * speed * t
            cx = obj.x * width + dx * speed * t
            video[f][_mask(obj.shape, ys - cy, xs - cx, size / 2)] = COLORS[obj.color]
    return video.round().clip(0, 255).astype(np.uint8)


def _mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r) & (np.abs(dx) <= r)
    # triangle pointing up: inside the three half-planes
    return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
