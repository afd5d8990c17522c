"""The curation funnel (`motif-video curate`): each stage on footage with known properties, the whole
funnel on synthetic and real footage, resume, the Ray engine, and `prepare` reading the result."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import footage
import numpy as np
import pytest

from motif_video.data.curation import dedup, regions, table
from motif_video.data.curation.config import BordersSection, CurateConfig, OverlaySection
from motif_video.data.curation.funnel import admit, curate
from motif_video.data.curation.probe import Rejected, list_sources
from motif_video.data.curation.quality import motion

SCRIPT = shutil.which("motif-video", path=str(Path(sys.executable).parent))


# -- stages on their own -------------------------------------------------------------------------


def test_borders_find_the_letterbox_rectangle():
    frames = [np.zeros((192, 192, 3), np.uint8) for _ in range(4)]
    for i, f in enumerate(frames):
        f[24:168] = footage.texture(i, 144, 192)
    frames[0][:] = 0  # a black frame does not move the median
    rect = regions.content_rect(frames, BordersSection())
    assert (rect.x, rect.y, rect.w, rect.h) == (0, 24, 192, 144)
    with pytest.raises(Rejected, match="borders: no content"):
        regions.content_rect([np.full((96, 96, 3), 10, np.uint8)], BordersSection())


def test_persistent_overlays_and_the_crop_rule():
    cfg = OverlaySection()
    sub = regions.Rect(40, 200, 240, 30)
    frames = [
        [(sub, "NEWS", 0.9)],
        [(regions.Rect(42, 201, 238, 29), "NEWS", 0.9)],
        [],
        [(regions.Rect(5, 5, 20, 10), "x", 0.9)],
    ]
    overlays = regions.persistent_overlays(frames, cfg)
    assert [text for _, text in overlays] == ["NEWS"]  # seen in 2 of 4 frames; the one-off box is not persistent
    content = regions.Rect(0, 0, 320, 240)
    crop = regions.crop_excluding(content, overlays, cfg, 0.4)
    assert (crop.y, crop.y + crop.h) == (0, 192) and crop.y + crop.h <= sub.y  # a quarter of the box height above it
    logo = [(regions.Rect(250, 4, 60, 20), "LOGO")]
    assert regions.crop_excluding(content, logo, cfg, 0.4).y == 30
    with pytest.raises(Rejected, match="overlays: persistent text 'MID' in the middle"):
        regions.crop_excluding(content, [(regions.Rect(100, 110, 80, 20), "MID")], cfg, 0.4)


def test_motion_tells_frozen_from_moving():
    moving = footage.panning(1, 1.0)
    assert motion(np.repeat(moving[:1], 12, axis=0), 12.0) < 1e-3
    assert 0.1 < motion(moving[::2], 12.0) < 0.2  # 2 px per analysis frame, 192 wide, 12 fps -> 0.125


def test_duplicate_groups_and_the_representative():
    x = np.eye(4, dtype=np.float32)
    x[1] = x[0] * 0.95 + x[1] * np.sqrt(1 - 0.95**2)  # cosine 0.95 with row 0
    pairs = dedup.neighbours(x, 0.9)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert dedup.groups(4, pairs) == [[0, 1]]
    # resolution weighs 0.5, fps 0.3, file size 0.2
    assert dedup.representative(np.array([100, 400]), np.array([30, 24]), np.array([5, 5])) == 1
    assert dedup.representative(np.array([100, 400]), np.array([30, 24]), np.array([5, 1])) == 0  # 0.5 each: first
    assert dedup.representative(np.array([100, 100]), np.array([24, 30]), np.array([5, 1])) == 1


def test_admission_is_stricter_at_higher_stages():
    row = {
        "kept": True,
        "kind": "video",
        "crop_w": 640,
        "crop_h": 400,
        "start": 0.0,
        "end": 3.0,
        "motion": 0.02,
        "aesthetic": None,
    }
    rows = [dict(row), dict(row, crop_h=200), dict(row, kept=False), dict(row, aesthetic=4.6)]
    admit(rows, CurateConfig().admission)
    assert [rows[0][f"stage_{s}"] for s in ("144p", "360p", "480p", "720p")] == [True, True, False, False]
    assert [rows[1][f"stage_{s}"] for s in ("144p", "360p")] == [True, False]
    assert not any(rows[2][f"stage_{s}"] for s in ("144p", "360p", "480p", "720p"))
    assert (rows[3]["stage_360p"], rows[3]["stage_480p"]) == (True, False)  # aesthetic 4.6: >= 4.5, < 5.0


def test_config_rejects_unknown_keys_and_bad_ranges(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config keys \['quality.motion_mn'\]"):
        CurateConfig.load(None, ["quality.motion_mn=0.1"])
    with pytest.raises(ValueError, match="brightness 0.9..0.1"):
        CurateConfig.load(None, ["quality.brightness_min=0.9", "quality.brightness_max=0.1"])
    bad = tmp_path / "c.toml"
    bad.write_text("[quality\n")
    with pytest.raises(ValueError, match=f"config {bad} is not valid TOML"):
        CurateConfig.load(bad)


def test_sources_are_keyed_by_the_resolved_file(tmp_path, monkeypatch):
    clip = footage.write(tmp_path / "a.mp4", footage.panning(1, 2.5))
    (tmp_path / "a.txt").write_text("a panning shot")
    monkeypatch.chdir(tmp_path)
    listed = tmp_path / "list.csv"
    listed.write_text(f"path,caption,synthetic\na.mp4,,1\n{clip},other,0\nmissing.mp4,x,0\n")
    sources = list_sources(listed)
    assert len(sources) == 2  # a.mp4 spelled twice is one source
    assert sources[0].synthetic and sources[0].caption == "a panning shot"
    assert sources[1].problem == "sanitation: file does not exist"
    (tmp_path / "headless.csv").write_text(f"{clip},caption\n")
    with pytest.raises(ValueError, match="headless.csv: the first line must be a header naming a 'path' column"):
        list_sources(tmp_path / "headless.csv")


# -- the whole funnel ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("raw")
    footage.letterboxed(d / "bars.mp4")
    footage.subtitled(d / "news.mp4")
    (d / "news.txt").write_text("a news programme")
    footage.three_shots(d / "cuts.mp4")
    footage.frozen(d / "frozen.mp4")
    footage.dark(d / "dark.mp4")
    pan = footage.write(d / "pan.mp4", footage.panning(41, 3.0, 240, 320))
    footage.half_size_copy(pan, d / "pan-small.mp4")
    from PIL import Image

    Image.fromarray(footage.texture(7, 240, 320)).save(d / "photo.jpg")
    (d / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (d / "empty.mp4").write_bytes(b"")
    whole = (d / "bars.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    footage.write(d / "tiny.mp4", footage.panning(5, 3.0, 48, 64))
    footage.write(d / "short.mp4", footage.panning(6, 1.0))
    (d / "notes.csv").write_text("not media")
    (d / "notes.txt").write_text("a text file is not a caption of itself")
    shutil.copy(footage.real_footage("bikes.mp4"), d / "bikes.mp4")
    return d


def curate_cli(*args: str) -> subprocess.CompletedProcess:
    assert SCRIPT is not None
    return subprocess.run([SCRIPT, "curate", *args], capture_output=True, text=True, timeout=600)


def by_name(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(Path(r["source"]).name, []).append(r)
    return out


def test_curate_end_to_end(raw, tmp_path):
    out = tmp_path / "curated"
    result = curate_cli(str(raw), str(out), "quality.brightness_min=0.15", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "Traceback" not in result.stderr
    rows = table.read(out / "clips.parquet")
    files = by_name(rows)
    assert len(files) == 16  # every file has a row, kept or with its reason
    assert files["notes.txt"][0]["caption"] is None and files["notes.txt"][0]["reason"].startswith("sanitation")

    # sanitation: each bad file is one rejected row
    expected = {
        "random.mp4": "sanitation: undecodable",
        "empty.mp4": "sanitation: empty file",
        "truncated.mp4": "sanitation: undecodable",
        "tiny.mp4": "sanitation: too small: 64x48",
        "short.mp4": "sanitation: too short: 1.00 s",
        "notes.csv": "sanitation: not a video or image",
        "notes.txt": "sanitation: not a video or image",
    }
    for name, reason in expected.items():
        assert len(files[name]) == 1 and not files[name][0]["kept"] and files[name][0]["reason"].startswith(reason)

    bars = files["bars.mp4"][0]
    assert bars["kept"] and (bars["crop_x"], bars["crop_y"], bars["crop_w"], bars["crop_h"]) == (0, 24, 192, 144)

    news = files["news.mp4"][0]
    assert news["kept"] and news["overlay_status"] == "run"
    assert any("BREAKING" in t.replace(" ", "") for t in news["overlay_text"])
    # the text is drawn from row 204 on a plate from row 200: the crop ends above the text, keeps the picture
    assert news["crop_y"] == 0 and 180 <= news["crop_h"] <= 204
    assert news["caption"] == "a news programme"

    cuts = files["cuts.mp4"]
    assert [(round(c["start"], 2), round(c["end"], 2)) for c in cuts] == [(0, 2.5), (2.5, 5.0), (5.0, 7.5)]
    assert all(c["kept"] for c in cuts)

    frozen = files["frozen.mp4"][0]["reason"]  # "motion: M below T": M is the H.264 coding noise of a still shot
    assert frozen.startswith("motion: ") and float(frozen.split()[1]) < 0.001, frozen
    assert files["dark.mp4"][0]["reason"].startswith("brightness: 0.1")
    small, big = files["pan-small.mp4"][0], files["pan.mp4"][0]
    assert big["kept"] and big["duplicate_of"] is None
    assert not small["kept"] and small["duplicate_of"] == big["clip"] and small["duplicate_similarity"] >= 0.9
    photo = files["photo.jpg"][0]
    assert photo["kept"] and photo["kind"] == "image" and photo["motion"] is None

    # real footage: bikes.mp4 has five cuts; the pieces under 2 s are dropped
    bikes = files["bikes.mp4"]
    assert len(bikes) >= 6 and sum(b["kept"] for b in bikes) >= 2
    assert all(b["reason"].startswith("shots:") for b in bikes if not b["kept"])
    assert all(b["end"] - b["start"] >= 2.0 for b in bikes if b["kept"])

    # the aesthetic stage without weights is marked, never passed silently
    assert {r["aesthetic_status"] for r in rows if r["kept"]} == {"not run: no quality.aesthetic_encoder / _head"}
    # admission and output: kept clips are re-encoded at their crop
    from motif_video.media import read_video

    for r in rows:
        assert r["kept"] or not any(r[f"stage_{s}"] for s in ("144p", "360p", "480p", "720p"))
        assert (r["path"] is not None) == r["kept"] and (not r["kept"] or (out / r["path"]).is_file())
    assert (bars["stage_144p"], bars["stage_360p"]) == (True, False)  # a 192 x 144 crop
    video, _ = read_video(out / bars["path"])
    assert video.shape[1:3] == (144, 192)
    assert not any(p.name.startswith(".") for p in (out / "clips").iterdir())  # no temporary file left
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == sum(r["kept"] for r in rows)
    page = (out / "report.html").read_text()
    assert "Funnel" in page and "data:image/png;base64" in page and "not run" in page

    # a restarted job redoes nothing and gives the same table
    parts = {p: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    again = curate_cli(str(raw), str(out), "quality.brightness_min=0.15", "--quiet")
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in (out / "parts").iterdir()} == parts
    assert table.read(out / "clips.parquet") == rows

    # a changed quality threshold is decided again from the measurements, without measuring again
    stricter = curate_cli(str(raw), str(out), "quality.brightness_min=0.15", "quality.motion_min=0.1", "--quiet")
    assert stricter.returncode == 0, stricter.stderr
    assert {p: p.stat().st_mtime_ns for p in (out / "parts").iterdir()} == parts
    redone = by_name(table.read(out / "clips.parquet"))
    assert redone["pan.mp4"][0]["reason"].startswith("motion: 0.07") and not redone["pan.mp4"][0]["kept"]
    assert redone["bars.mp4"][0]["kept"]  # 0.125 frame widths / s
    # a changed measuring setting measures again
    remeasured = curate_cli(str(raw), str(out), "quality.brightness_min=0.15", "borders.luma_threshold=30", "--quiet")
    assert remeasured.returncode == 0, remeasured.stderr
    assert all(p.stat().st_mtime_ns != parts[p] for p in (out / "parts").iterdir())
    back = curate_cli(str(raw), str(out), "quality.brightness_min=0.15", "--quiet")
    assert back.returncode == 0 and table.read(out / "clips.parquet") == rows

    # prepare reads a curated folder directly: the kept video clips
    prepared = tmp_path / "prepared"
    from motif_video.data.preprocess import PrepareConfig, prepare

    (out / "clips").joinpath("x").write_text("")  # stray files in the folder do not matter
    report = prepare(str(out), prepared, PrepareConfig(frame_buckets=(9,), fps=4.0), progress=False)
    kept_videos = [r for r in rows if r["kept"] and r["kind"] == "video"]
    no_caption = [s["reason"] for s in report["skipped"] if "caption" in s["reason"]]
    assert no_caption and all(f"run `motif-video caption {out}`" in r for r in no_caption)
    with pytest.raises(ValueError, match=r"holds shards made with other settings \{'frame_buckets'"):
        prepare(str(out), prepared, PrepareConfig(frame_buckets=(17,), fps=4.0), progress=False)
    assert report["sources"] + len([s for s in report["skipped"] if "caption" in s["reason"]]) == len(kept_videos)
    # a curriculum stage takes only the clips admitted to it: at 360p none of these small clips
    staged = prepare(
        str(out), tmp_path / "p360", PrepareConfig(frame_buckets=(9,), fps=4.0), progress=False, stage="360p"
    )
    admitted = [r for r in kept_videos if r["stage_360p"]]
    assert staged["sources"] + len([s for s in staged["skipped"] if "caption" in s["reason"]]) == len(admitted)
    with pytest.raises(ValueError, match="unknown stage '1080p'"):
        prepare(str(out), tmp_path / "p1080", PrepareConfig(), progress=False, stage="1080p")


def test_a_bad_source_makes_no_output(tmp_path):
    result = curate_cli(str(tmp_path / "missing"), str(tmp_path / "out"))
    assert result.returncode == 2 and "does not exist" in result.stderr and not (tmp_path / "out").exists()


def test_ray_engine_gives_the_same_table(raw, tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="ray[data] is installed by the test extra")
    subset = tmp_path / "subset"
    subset.mkdir()
    for name in ("bars.mp4", "cuts.mp4", "pan.mp4", "pan-small.mp4", "random.mp4"):
        shutil.copy(raw / name, subset / name)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token written to the home folder
    short = tempfile.mkdtemp(prefix="ray")  # Ray's socket paths must stay under 108 bytes
    monkeypatch.setenv("RAY_TMPDIR", short)
    local = curate(subset, tmp_path / "local", CurateConfig(), engine="local", workers=2, progress=False)
    ray = curate(subset, tmp_path / "ray-out", CurateConfig(), engine="ray", workers=2, progress=False)
    assert local == ray
    assert table.read(tmp_path / "local" / "clips.parquet") == table.read(tmp_path / "ray-out" / "clips.parquet")
    shutil.rmtree(short, ignore_errors=True)


def test_siglip_descriptor_and_aesthetic_stage_from_local_files(tmp_path):
    """The weight-needing paths on tiny random weights of the same classes: SigLIP as the shot / duplicate
    descriptor, Aesthetic Predictor V2.5 (SigLIP + its head, the release's .pth layout) as the aesthetic score."""
    import torch
    from transformers import SiglipVisionConfig, SiglipVisionModel

    siglip = tmp_path / "siglip"
    torch.manual_seed(0)
    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    SiglipVisionModel(config).save_pretrained(siglip)
    dims = [32, 1024, 128, 64, 16, 1]
    head = {}
    for i, layer in enumerate((0, 2, 4, 6, 8)):
        head[f"{layer}.weight"] = torch.randn(dims[i + 1], dims[i]) * 0.05
        head[f"{layer}.bias"] = torch.full((dims[i + 1],), 0.5)
    torch.save(head, tmp_path / "aesthetic_predictor_v2_5.pth")  # the release's file: the head's state dict

    raw = tmp_path / "raw"
    footage.write(raw / "pan.mp4", footage.panning(41, 3.0, 240, 320))
    footage.three_shots(raw / "cuts.mp4")
    cfg = CurateConfig.load(
        None,
        [
            f"shots.embedder={json.dumps(str(siglip))}",
            f"quality.aesthetic_encoder={json.dumps(str(siglip))}",
            f"quality.aesthetic_head={json.dumps(str(tmp_path / 'aesthetic_predictor_v2_5.pth'))}",
        ],
    )
    curate(raw, tmp_path / "out", cfg, progress=False)
    rows = table.read(tmp_path / "out" / "clips.parquet")
    assert all(r["aesthetic_status"] == "run" and isinstance(r["aesthetic"], float) for r in rows if r["kept"])
    assert all(len(r["descriptor"]) == 32 for r in rows if r["descriptor"])  # SigLIP's pooled width
    scores = {r["aesthetic"] for r in rows if r["kept"]}
    assert len(scores) > 1  # a score of the frames, not a constant
    with pytest.raises(ValueError, match="given together or not at all"):
        CurateConfig.load(None, [f"quality.aesthetic_encoder={json.dumps(str(siglip))}"])
