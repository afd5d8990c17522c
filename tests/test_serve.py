"""`motif-video serve`: presets, validation and cancelling in the Studio; the page in a real browser
(Debian's Chromium, headless, driven by Playwright); the queue under load."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from motif_video.embedded import embedded_weights
from motif_video.media import read_video
from motif_video.random_weights import build_random_pipeline
from motif_video.serve import BackgroundServer, Cancelled, Studio, presets_for

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle moves to the left on a gray background"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium() -> str:
    """The system Chromium; CI installs it (.ci/run) and sets MOTIF_VIDEO_REQUIRE_BROWSER, so there a
    missing browser fails instead of skipping."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if os.environ.get("MOTIF_VIDEO_REQUIRE_BROWSER"):
        pytest.fail("no Chromium on PATH, but MOTIF_VIDEO_REQUIRE_BROWSER is set (CI installs the chromium package)")
    pytest.skip("no Chromium on PATH (Debian: apt-get install chromium chromium-driver)")


def test_presets_follow_the_model(tmp_path):
    build_random_pipeline(tmp_path / "released")
    embedded = presets_for(embedded_weights())
    assert embedded.sizes["64x64 (trained)"] == (64, 64) and embedded.sizes["96x64 (landscape)"] == (64, 96)
    assert set(embedded.lengths.values()) == {17, 33} and embedded.fps == 8
    released = presets_for(tmp_path / "released")  # no manifest: the released model's sizes
    assert released.sizes["832x480 (480p landscape)"] == (480, 832) and 121 in released.lengths.values()
    assert released.fps == 24 and released.steps == 50


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> Studio:
    return Studio(embedded_weights(), "cpu", torch.float32, tmp_path_factory.mktemp("videos"))


def test_studio_validates_like_the_cli(studio):
    size, length = next(iter(studio.presets.sizes)), next(iter(studio.presets.lengths))
    cases = {
        ("", 0, 20, 4.0, size, length): "the prompt is empty",
        ("a dragon flies", 0, 20, 4.0, size, length): "unknown words ['dragon', 'flies']",
        (PROMPT, 0, 0, 4.0, size, length): "steps must be >= 1, got 0",
        (PROMPT, -1, 20, 4.0, size, length): "seed must be between 0 and",
        (PROMPT, 1.5, 20, 4.0, size, length): "seed must be a whole number, got 1.5",
        (PROMPT, 0, 20, 99.0, size, length): "guidance scale must be between 0 and 30, got 99.0",
        (PROMPT, 0, 20, 4.0, "4x4", length): "unknown size '4x4'; choose one of",
        (PROMPT, 0, 20, 4.0, size, "1 frame"): "unknown length '1 frame'",
    }
    for (prompt, seed, steps, scale, s, n), message in cases.items():
        with pytest.raises(ValueError) as error:
            studio.generate(prompt, "", None, seed, steps, scale, s, n)
        assert message in str(error.value)
    with pytest.raises(ValueError, match="no image encoder"):
        studio.generate(PROMPT, "", str(ROOT / "README.md"), 0, 2, 4.0, size, length)
    assert not list(studio.out_dir.iterdir())  # nothing was written for refused requests


def test_studio_extends_a_video_it_made(studio, tmp_path):
    size, length = next(iter(studio.presets.sizes)), next(iter(studio.presets.lengths))
    first, _ = studio.generate(PROMPT, "", None, 0, 2, 2.0, size, length)
    longer, record = studio.extend(str(first), "a red circle moves up", "", 1, 2, 2.0)
    frames, _ = read_video(longer)
    given = 4 * (record["segments"]["overlap"] - 1) + 1  # the frames that repeat the video's end are dropped
    assert len(frames) == 17 + 17 - given and record["segments"]["seams"] == [17]
    assert record["extends"] == first.name and longer.with_suffix(".json").is_file()
    with pytest.raises(ValueError, match="generate a video first"):
        studio.extend(None, PROMPT, "", 0, 2, 2.0)
    copy = tmp_path / first.name  # the page's own copy of a shown video continues that video
    copy.write_bytes(first.read_bytes())
    assert studio.extend(str(copy), PROMPT, "", 0, 2, 2.0)[1]["extends"] == first.name
    elsewhere = tmp_path / "other.mp4"
    elsewhere.write_bytes(first.read_bytes())
    with pytest.raises(ValueError, match="continues a video this page made"):
        studio.extend(str(elsewhere), PROMPT, "", 0, 2, 2.0)
    for path in studio.out_dir.iterdir():  # leave the folder as the other tests expect it
        path.unlink()


def test_studio_cancel_stops_at_the_next_step_and_writes_nothing(studio):
    size, length = next(iter(studio.presets.sizes)), next(iter(studio.presets.lengths))
    seen = []

    def progress(value, desc=None, unit=None):
        seen.append(value)
        if value[0] == 3:
            studio.cancel("page-1")

    with pytest.raises(Cancelled, match="cancelled after step 4/50"):
        studio.generate(PROMPT, "", None, 0, 50, 4.0, size, length, session="page-1", progress=progress)
    assert seen[-1] == (3, 50)  # stopped at the step after the cancel
    assert not list(studio.out_dir.glob("*.mp4"))
    studio.cancel("page-2")  # a cancel from another page does not touch this one's next request
    path, record = studio.generate(PROMPT, "", None, 5, 2, 4.0, size, length, session="page-1")
    assert path.is_file() and record["seed"] == 5 and json.loads(path.with_suffix(".json").read_text())["steps"] == 2
    # names another client cannot guess: no counter, time or seed, 128 random bits
    again, _ = studio.generate(PROMPT, "", None, 5, 2, 4.0, size, length, session="page-2")
    tokens = [p.stem.rsplit("-", 1)[-1] for p in (path, again)]
    assert tokens[0] != tokens[1] and all(len(t) == 32 for t in tokens) and "seed" not in again.name


def test_an_unknown_huge_word_is_not_echoed_whole(studio):
    size, length = next(iter(studio.presets.sizes)), next(iter(studio.presets.lengths))
    with pytest.raises(ValueError) as error:
        studio.generate("a " + "x" * 100_000 + " circle", "", None, 0, 2, 4.0, size, length)
    assert len(str(error.value)) < 1000 and "xxx..." in str(error.value)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("served")
    with BackgroundServer("--out-dir", str(out), port=free_port()) as running:
        running.out_dir = out
        yield running


@pytest.fixture
def page(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server.url)
        page.wait_for_selector("#generate", timeout=60_000)
        yield page
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)  # the test's output, for a look
        browser.close()


@pytest.mark.slow
def test_browser_generates_a_playable_video(page, server, tmp_path):
    page.locator("#prompt textarea").fill(PROMPT)
    page.locator("#generate").click()
    page.wait_for_function(
        "() => { const v = document.querySelector('#video video');"
        " return v && v.currentSrc && v.readyState >= 1 && !v.error }",
        timeout=120_000,
    )
    src = page.locator("#video video").evaluate("v => v.currentSrc")
    body = page.request.get(src).body()
    (tmp_path / "served.mp4").write_bytes(body)
    frames, fps = read_video(tmp_path / "served.mp4")
    assert frames.shape == (17, 64, 64, 3) and round(fps) == 8
    record = page.locator("#record").inner_text()
    assert '"seed"' in record and PROMPT in record
    page.screenshot(path=str(tmp_path / "generated.png"), full_page=True)
    assert (tmp_path / "generated.png").stat().st_size > 10_000


@pytest.mark.slow
def test_browser_extends_the_generated_video(page, server, tmp_path):
    page.locator("#prompt textarea").fill(PROMPT)
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#record')?.innerText.includes('\"seed\"')", timeout=120_000)
    page.locator("#prompt textarea").fill("a red circle moves up")
    page.locator("#extend").click()
    page.wait_for_function("() => document.querySelector('#record')?.innerText.includes('extends')", timeout=120_000)
    src = page.locator("#video video").evaluate("v => v.currentSrc")
    (tmp_path / "extended.mp4").write_bytes(page.request.get(src).body())
    frames, _ = read_video(tmp_path / "extended.mp4")
    assert len(frames) > 17  # the generated video and one more segment


@pytest.mark.slow
def test_browser_shows_bad_input_as_a_message(page, server):
    before = set(server.out_dir.glob("*.mp4"))
    page.locator("#prompt textarea").fill("a dragon flies over the sea")
    page.locator("#generate").click()
    message = page.get_by_text("unknown words ['dragon', 'flies', 'over', 'sea']", exact=False)
    message.first.wait_for(timeout=60_000)
    assert "Traceback" not in page.content()
    assert set(server.out_dir.glob("*.mp4")) == before


@pytest.mark.slow
def test_browser_cancel_stops_the_running_generation(page, server):
    before = set(server.out_dir.glob("*.mp4"))
    page.locator("#prompt textarea").fill(PROMPT)
    page.locator("#steps input[type=number]").fill("100")
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#generate").click()
    page.wait_for_timeout(4000)  # running by now (100 steps take ~30 s on 2 cores)
    page.locator("#cancel").click()
    deadline = time.time() + 20
    while "cancelled after step" not in server.output() and time.time() < deadline:
        time.sleep(0.5)
    line = next(x for x in server.output().splitlines() if "cancelled after step" in x)
    assert int(line.split("step ")[1].split("/")[0]) < 100 and line.endswith("/100")
    assert set(server.out_dir.glob("*.mp4")) == before


@pytest.mark.slow
def test_twenty_queued_requests_from_four_clients_complete_in_order():
    result = subprocess.run(
        [sys.executable, "serve_load.py", "--steps", "4", "--json", "--port", str(free_port())],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["completed"] == 20 and report["errors"] == [] and report["in_order"] and report["seeds_match"]
    assert report["rss_after_mb"] - report["rss_before_mb"] < 150  # bounded: nothing piles up per request
