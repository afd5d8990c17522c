"""`motif-video serve`: the Gradio page (and API) for one loaded pipeline.

    browser / gradio_client ─▶ queue (one generation at a time for the model) ─▶ Studio.generate
        ─ same validation as the CLI ─ MotifVideoPipeline ─▶ MP4 + reproducibility JSON in out_dir

Invalid input becomes a `gr.Error` with the CLI's message (no traceback in the page); a running
generation stops at its next denoising step when its page (session) presses Cancel.
"""

from __future__ import annotations

import itertools
import random
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from motif_video.embedded import manifest
from motif_video.media import write_json, write_mp4
from motif_video.sampling.pipeline import (
    DEFAULT_NEGATIVE_PROMPT,
    MotifVideoPipeline,
    check_weights_dir,
    generation_record,
    load_image,
    request_factors,
    validate_request,
)

MAX_SEED = 2**31 - 1


class Cancelled(Exception):
    """Raised inside the denoising loop when the page asked to stop."""


@dataclass(frozen=True)
class Presets:
    """The choices the page offers: sizes and lengths the loaded model can make."""

    sizes: dict[str, tuple[int, int]]  # label -> (height, width)
    lengths: dict[str, int]  # label -> frames
    fps: int
    steps: int
    negative_prompt: str


def presets_for(weights: Path) -> Presets:
    """The released model's sizes, or for a model with a manifest (the embedded one) its trained size
    and its landscape / portrait and longer variants."""
    defaults = manifest(weights).get("defaults", {})
    multiple, _ = request_factors(weights)
    if "height" not in defaults:
        sizes = {"832x480 (480p landscape)": (480, 832), "480x832 (480p portrait)": (832, 480)}
        sizes["624x624 (square)"] = (624, 624)
        sizes["1280x720 (720p landscape)"] = (720, 1280)
        lengths = {"49 frames (2 s at 24 fps)": 49, "121 frames (5 s at 24 fps)": 121, "1 frame (image)": 1}
        return Presets(sizes, lengths, 24, 50, DEFAULT_NEGATIVE_PROMPT)
    height, width, frames, fps = defaults["height"], defaults["width"], defaults["frames"], defaults.get("fps", 24)
    wide = -(-round(width * 1.5) // multiple) * multiple
    sizes = {
        f"{width}x{height} (trained)": (height, width),
        f"{wide}x{height} (landscape)": (height, wide),
        f"{width}x{wide} (portrait)": (wide, width),
    }
    longer = 2 * (frames - 1) + 1
    lengths = {
        f"{frames} frames ({frames / fps:.1f} s, trained)": frames,
        f"{longer} frames ({longer / fps:.1f} s)": longer,
    }
    return Presets(sizes, lengths, fps, defaults.get("steps", 50), defaults.get("negative_prompt", ""))


class Studio:
    """The loaded pipeline and what the page's events do with it."""

    def __init__(
        self,
        weights: Path,
        device: str,
        dtype: torch.dtype,
        out_dir: Path,
        lora: str | Path | None = None,
        lora_scale: float = 1.0,
    ) -> None:
        check_weights_dir(weights)
        self.weights, self.device, self.dtype, self.out_dir = weights, device, dtype, out_dir
        self.presets = presets_for(weights)
        self.pipe = MotifVideoPipeline.from_pretrained(
            weights, dtype=dtype, device=device, lora=lora, lora_scale=lora_scale
        )
        self.image_to_video = getattr(self.pipe.text_encoder, "image_processor", None) is not None
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._count = itertools.count()
        out_dir.mkdir(parents=True, exist_ok=True)

    def description(self) -> str:
        """The page's line about the loaded weights (a distilled student says so: its steps, one pass)."""
        text = f"Weights: `{self.weights.name}`"
        student = self.pipe.manifest.get("distilled")
        if student:
            teacher = Path(student["teacher"]).name
            text += (
                f" · a {student['steps']}-step student of `{teacher}` (one pass per step, its guidance folded in: "
                "guidance scale 1 keeps it that way)"
            )
        return text + " · one generation at a time; others wait in line."

    def cancel(self, session: str) -> None:
        with self._lock:
            self._cancelled.add(session)

    def _check_cancelled(self, session: str, step: int, steps: int) -> None:
        with self._lock:
            if session in self._cancelled:
                self._cancelled.discard(session)
                raise Cancelled(f"cancelled after step {step}/{steps}")

    def generate(
        self,
        prompt: str,
        negative_prompt: str,
        image: str | None,
        seed: int,
        steps: int,
        guidance_scale: float,
        size: str,
        length: str,
        session: str = "",
        progress=None,
    ) -> tuple[Path, dict]:
        """One video; ValueError for input the model cannot serve, Cancelled when stopped."""
        if size not in self.presets.sizes:
            raise ValueError(f"unknown size {size!r}; choose one of {list(self.presets.sizes)}")
        if length not in self.presets.lengths:
            raise ValueError(f"unknown length {length!r}; choose one of {list(self.presets.lengths)}")
        height, width = self.presets.sizes[size]
        frames = self.presets.lengths[length]
        seed, steps, guidance = self._settings(seed, steps, guidance_scale)
        validate_request([prompt or ""], height, width, frames, steps, *request_factors(self.weights))
        if image and not self.image_to_video:
            raise ValueError("this model has no image encoder: image-to-video needs the released weights")
        first = load_image(image, height, width) if image else None
        on_step = self._start(session, progress, "denoising")
        started = time.time()
        result = self.pipe(
            prompt,
            image=first,
            negative_prompt=negative_prompt,
            height=height,
            width=width,
            frames=frames,
            steps=steps,
            guidance=guidance,
            seed=seed,
            progress=False,
            on_step=on_step,
        )
        settings = dict(prompt=prompt, negative_prompt=negative_prompt, image=image, seed=seed, steps=steps)
        return self._write(result.uint8()[0], settings, guidance, started, {})

    def extend(
        self,
        video: str | None,
        prompt: str,
        negative_prompt: str,
        seed: int,
        steps: int,
        guidance_scale: float,
        session: str = "",
        progress=None,
    ) -> tuple[Path, dict]:
        """The page's "Extend": one more segment after a video this page made (sampling/extend.py)."""
        from motif_video.media import read_video
        from motif_video.sampling.extend import extend

        if not video:
            raise ValueError("generate a video first: Extend continues the video shown")
        # Gradio hands over its own copy of the shown video: continue the page's file of that name (names
        # carry 128 random bits, so only a video this page made, and shown to this client, is found)
        source = self.out_dir / Path(video).name
        if not Path(video).name.startswith("motif-video-") or not source.is_file():
            raise ValueError("Extend continues a video this page made; generate one first")
        seed, steps, guidance = self._settings(seed, steps, guidance_scale)
        frames, _ = read_video(source)
        validate_request([prompt or ""], frames.shape[1], frames.shape[2], 1, steps, *request_factors(self.weights))
        segment = min(self.presets.lengths.values())
        on_step = self._start(session, progress, "extending")
        started = time.time()
        result = extend(
            self.pipe,
            frames,
            [prompt],
            frames=segment,
            seed=seed,
            progress=False,
            steps=steps,
            guidance=guidance,
            negative_prompt=negative_prompt,
            on_step=on_step,
        )
        settings = dict(prompt=prompt, negative_prompt=negative_prompt, image=None, seed=seed, steps=steps)
        extra = {"extends": source.name, "segments": {"overlap": result.overlap, "seams": result.seams}}
        return self._write(result.frames, settings, guidance, started, extra)

    def _settings(self, seed, steps, guidance_scale) -> tuple[int, int, object]:
        """The page's seed, steps and guidance scale checked; the guidance config at that scale."""
        seed, steps = _whole(seed, "seed"), _whole(steps, "steps")
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
        if guidance_scale is None or not 0 <= float(guidance_scale) <= 30:
            raise ValueError(f"guidance scale must be between 0 and 30, got {guidance_scale}")
        return seed, steps, self.pipe.guidance.with_kind(self.pipe.guidance.kind, float(guidance_scale))

    def _start(self, session: str, progress, desc: str):
        """The step callback of one request: progress on the page, and a stop when its Cancel was pressed."""
        with self._lock:  # a Cancel pressed before this request started does not stop it
            self._cancelled.discard(session)

        def on_step(i: int, n: int) -> None:
            self._check_cancelled(session, i + 1, n)
            if progress is not None:
                progress((i + 1, n), desc=desc, unit="steps")

        return on_step

    def _write(self, frames, settings: dict, guidance, started: float, extra: dict) -> tuple[Path, dict]:
        number = next(self._count)
        # an unguessable name: the page serves files by path, so a name another client could guess would
        # let it fetch this client's video and sidecar
        path = self.out_dir / f"motif-video-{time.strftime('%Y%m%d')}-{secrets.token_hex(16)}.mp4"
        write_mp4(frames, path, fps=self.presets.fps)
        record = generation_record(
            self.pipe,
            self.weights,
            **settings,
            guidance=guidance,
            scheduler=None,
            shift=None,
            height=frames.shape[1],
            width=frames.shape[2],
            frames=len(frames),
            fps=self.presets.fps,
            dtype=str(self.dtype).removeprefix("torch."),
            device=self.device,
            seconds=time.time() - started,
            command=["motif-video serve"],
        )
        record["request"] = number  # the order in which the queue served this request
        record.update(extra)
        write_json(record, path.with_suffix(".json"))
        print(f"request {number}: {path.name} in {record['seconds']:.1f} s", flush=True)
        return path, record


def _whole(value, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def build_app(studio: Studio):
    """The page: inputs on the left, the video, its download and its JSON on the right."""
    import gradio as gr

    p = studio.presets
    with gr.Blocks(title="motif-video") as app:
        gr.Markdown(f"# motif-video\n{studio.description()}")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt")
                negative = gr.Textbox(label="Negative prompt", value=p.negative_prompt, lines=1, elem_id="negative")
                image = gr.Image(
                    label="First frame (image-to-video)"
                    if studio.image_to_video
                    else "First frame (image-to-video; this model has no image encoder)",
                    type="filepath",
                    interactive=studio.image_to_video,
                )
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED, elem_id="seed")
                    dice = gr.Button("Random seed", elem_id="random-seed")
                with gr.Row():
                    steps = gr.Slider(1, 100, value=p.steps, step=1, label="Steps", elem_id="steps")
                    scale = gr.Slider(0, 30, value=studio.pipe.guidance.scale, step=0.5, label="Guidance scale")
                size = gr.Dropdown(list(p.sizes), value=next(iter(p.sizes)), label="Resolution (width x height)")
                length = gr.Dropdown(list(p.lengths), value=next(iter(p.lengths)), label="Length")
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    more = gr.Button("Extend", elem_id="extend")
                    stop = gr.Button("Cancel", elem_id="cancel")
            with gr.Column():
                video = gr.Video(label="Video", elem_id="video", autoplay=True)
                download = gr.File(label="Download MP4", elem_id="download")
                record = gr.JSON(label="Reproducibility (saved beside the MP4)", elem_id="record")

        tracker = gr.Progress()  # Gradio finds the tracker through the default value

        def generate(prompt, negative, image, seed, steps, scale, size, length, request: gr.Request, progress=tracker):
            try:
                path, info = studio.generate(
                    prompt, negative, image, seed, steps, scale, size, length, _session(request), progress
                )
            except Cancelled as e:
                print(f"request of page {_session(request)[:8]}: {e}", flush=True)
                raise gr.Error("Cancelled.") from None
            except (ValueError, OSError) as e:  # the CLI's messages, shown in the page
                raise gr.Error(str(e)) from None
            return str(path), str(path), info

        def extend(current, prompt, negative, seed, steps, scale, request: gr.Request, progress=tracker):
            try:
                path, info = studio.extend(current, prompt, negative, seed, steps, scale, _session(request), progress)
            except Cancelled as e:
                print(f"request of page {_session(request)[:8]}: {e}", flush=True)
                raise gr.Error("Cancelled.") from None
            except (ValueError, OSError) as e:
                raise gr.Error(str(e)) from None
            return str(path), str(path), info

        def cancel(request: gr.Request) -> None:
            studio.cancel(_session(request))

        event = run.click(
            generate,
            [prompt, negative, image, seed, steps, scale, size, length],
            [video, download, record],
            api_name="generate",
            concurrency_limit=1,
            concurrency_id="model",
        )
        longer = more.click(
            extend,
            [download, prompt, negative, seed, steps, scale],
            [video, download, record],
            api_name="extend",
            concurrency_limit=1,
            concurrency_id="model",
        )
        stop.click(cancel, None, None, cancels=[event, longer], queue=False, api_name=False)
        dice.click(lambda: random.randint(0, MAX_SEED), None, seed, queue=False, api_name=False)
    return app


def _session(request) -> str:
    return getattr(request, "session_hash", None) or ""


def default_out_dir() -> Path:
    return Path(tempfile.gettempdir()) / "motif-video-serve"


class BackgroundServer:
    """`motif-video serve` in a child process, for scripts, benchmarks and tests:

    with BackgroundServer(port=7861) as server:
        Client(server.url).predict(...)
    """

    def __init__(self, *options: str, port: int, host: str = "127.0.0.1", timeout: float = 180.0, env=None) -> None:
        self.options, self.port, self.host, self.timeout, self.env = options, port, host, timeout, env
        self.url = f"http://{host}:{port}/"
        self.process = None

    def __enter__(self) -> BackgroundServer:
        import subprocess
        import sys
        import urllib.request

        command = [sys.executable, "-m", "motif_video", "serve", "--host", self.host, "--port", str(self.port)]
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [*command, *self.options], stdout=self.log, stderr=subprocess.STDOUT, env=self.env
        )
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"motif-video serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                urllib.request.urlopen(self.url, timeout=2).close()
                return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise TimeoutError(f"motif-video serve did not answer at {self.url} within {self.timeout:.0f} s")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise OSError("no VmRSS line in /proc status")

    def __exit__(self, *_) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except Exception:
                self.process.kill()
