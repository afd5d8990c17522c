"""The shapes benchmark scorer: the world's own renders score ~1, each kind of mistake is caught."""

from __future__ import annotations

import json
import re

import numpy as np
from test_cli import run

from motif_video.cli import main
from motif_video.data import world
from motif_video.eval.shapes import benchmark_scenes, evaluate, score
from motif_video.media import read_video


def _render(scene, frames=17):
    return world.render(scene, frames, 64, 96)


def test_reference_renders_score_near_one():
    for held_out in (False, True):
        for scene in benchmark_scenes(6, held_out):
            s = score(_render(scene), scene)
            # pixel grids make a small shape ambiguous in the odd frame
            assert s.color == 1 and s.shape >= 0.9 and s.motion == 1 and s.stability > 0.9, scene.caption


def test_each_mistake_is_caught():
    scene = benchmark_scenes(1, False)[0]
    obj = scene.objects[0]
    other_color = next(c for c in world.COLORS if c != obj.color and c != "white")
    other_shape = next(s for s in world.SHAPES if s != obj.shape)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[obj.motion]

    def variant(**change):
        fields = {"color": obj.color, "shape": obj.shape, "motion": obj.motion, "y": obj.y, "x": obj.x, **change}
        return world.Scene((world.ShapeObject(**fields),), scene.background, scene.pattern)

    assert score(_render(variant(color=other_color)), scene).color == 0
    assert score(_render(variant(shape=other_shape)), scene).shape == 0
    assert score(_render(variant(motion=opposite)), scene).motion == 0
    static = np.repeat(_render(scene)[:1], 17, axis=0)
    assert score(static, scene).motion == 0
    noise = np.random.default_rng(0).integers(0, 256, (17, 64, 96, 3), dtype=np.uint8)
    assert score(noise, scene).mean < 0.5


def test_report_splits_trained_and_held_out(tmp_path):
    scenes = {s.caption: s for h in (False, True) for s in benchmark_scenes(3, h)}
    report = evaluate(lambda caption, i: _render(scenes[caption]), count=3)
    assert report["trained"]["mean"]["mean"] > 0.95 and report["held_out"]["mean"]["mean"] > 0.95
    assert all(
        not any((o.color, o.shape) in world.HELD_OUT for o in scenes[r["caption"]].objects)
        for r in report["trained"]["prompts"]
    )
    # every caption form: the same scenes prompted as the world writes them and as people type them
    args = ("eval", "shapes", "--reference", "--captions", "all", "--count", "2", "--out", str(tmp_path / "ev"))
    result = run(*args, "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["trained"]["mean"]["motion"] == 1.0 and report["caption_forms"] == ["long", "short", "truncated"]
    for split in ("trained", "held_out"):
        prompts = report[split]["prompts"]
        assert [p["form"] for p in prompts] == ["long"] * 2 + ["short"] * 2 + ["truncated"] * 2
        assert all("background" in p["caption"] for p in prompts[:2])
        assert not any("background" in p["caption"] or p["caption"].startswith("a ") for p in prompts[4:])
        assert all(p["caption"].endswith(("left", "right", "up", "down")) for p in prompts[2:])
        assert set(report[split]["by_form"]) == {"long", "short", "truncated"}
        assert all(m["color"] == 1.0 and m["motion"] == 1.0 for m in report[split]["by_form"].values())
    assert "| trained, short captions |" in result.stdout
    assert len(list((tmp_path / "ev" / "videos").glob("*.mp4"))) == 12
    page = (tmp_path / "ev" / "report.html").read_text()
    sources = re.findall(r'<video src="([^"]+)" autoplay muted loop', page)
    assert len(sources) == 12 and all((tmp_path / "ev" / src).is_file() for src in sources)
    assert "Shapes benchmark" in page and "temporal_flickering" in page
    metrics = json.loads((tmp_path / "ev" / "report.json").read_text())["metrics"]
    assert all(0.9 < m["temporal_flickering"] <= 1 and m["dynamic_degree_moving_share"] > 0 for m in metrics.values())
    assert run("eval", "vbench").returncode == 2


def test_the_autoencoders_ceiling_scores_the_renders_after_encode_and_decode(tmp_path, capsys):
    """--reference --through-vae: the world's renders through the weights' autoencoder, scored (the most a
    model on those latents can reach). The embedded model's linear patch decoder loses some shape."""
    out = tmp_path / "ceiling"
    result = run("eval", "shapes", "--reference", "--through-vae", "--count", "4", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["source"].startswith("reference renders through the autoencoder of ")
    for split in ("trained", "held_out"):
        m = report[split]["mean"]
        assert m["color"] == 1.0 and m["motion"] == 1.0  # the decoder keeps colour and motion
    plain = run("eval", "shapes", "--reference", "--count", "4", "--out", str(tmp_path / "plain"), "--quiet")
    assert plain.returncode == 0, plain.stderr
    a, b = (read_video(next((folder / "videos").glob("000-*.mp4")))[0] for folder in (out, tmp_path / "plain"))
    assert 0.5 < np.abs(a.astype(int) - b.astype(int)).mean() < 20  # decoded renders, not the renders
    assert main(["eval", "shapes", "--through-vae", "--count", "1", "--out", str(tmp_path / "x")]) == 2
    assert "--through-vae goes with --reference" in capsys.readouterr().err
    # --jitter 0: the renders start where the caption's layout puts them, the world the shipped model (and
    # its autoencoder) trains on since v23; through that autoencoder the shape comes back
    exact = tmp_path / "exact"
    result = run("eval", "shapes", "--reference", "--through-vae", "--jitter", "0", "--count", "4", "--out", str(exact))
    assert result.returncode == 0, result.stderr
    report = json.loads((exact / "report.json").read_text())
    assert report["trained"]["mean"]["shape"] >= 0.9 and report["held_out"]["mean"]["color"] == 1.0
    c = read_video(next((exact / "videos").glob("000-*.mp4")))[0]
    assert np.abs(c.astype(int) - a.astype(int)).mean() > 0.5  # another start than the jittered render's
    assert main(["eval", "shapes", "--jitter", "0", "--count", "1", "--out", str(tmp_path / "y")]) == 2
    assert "--jitter goes with --reference" in capsys.readouterr().err


def test_model_report_has_videos_metrics_and_the_attention_figure(tmp_path):
    out = tmp_path / "ev"
    result = run("eval", "shapes", "--count", "1", "--steps", "2", "--seed", "5", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr  # the embedded model
    settings = json.loads((out / "report.json").read_text())["settings"]  # how the videos were made
    assert settings == {"frames": 17, "height": 64, "width": 64, "steps": 2, "seed": 5, "guidance": "cfg", "scale": 2.0}
    page = (out / "report.html").read_text()
    assert '<img src="attention.png"' in page and len(re.findall(r"<video src=", page)) == 2
    assert (out / "attention.png").stat().st_size > 10_000
    blocks = json.loads((out / "attention.json").read_text())["blocks"]
    assert [b["stage"] for b in blocks.values()] == ["dual"] * 2 + ["single"] * 4 + ["decoder"] * 2


def test_shape_diagnosis_scores_every_stage_of_the_chain(tmp_path, capsys):
    """analyze shapes: renders, the autoencoder, its first k channels, and the model's clean estimates;
    the renders are the ceiling, and the model's estimate from a lightly noised clip keeps its colour."""
    out = tmp_path / "loss"
    result = run("analyze", "shapes", "--count", "2", "--out", str(out), "--quiet")  # the embedded model
    assert result.returncode == 0, result.stderr
    rows = {r["stage"]: r for r in json.loads((out / "shape-loss.json").read_text())["stages"]}
    assert list(rows)[:2] == ["renders", "autoencoder"] and "first 4 of 16 channels" in rows
    assert {f"clean estimate, t = {t}" for t in ("0.25", "0.5", "0.75", "0.9", "1")} <= set(rows)
    for split in ("trained", "held_out"):
        assert rows["renders"][split]["shape"] == 1.0 and rows["renders"][split]["color"] == 1.0
        assert rows["clean estimate, t = 0.25"][split]["color"] == 1.0
        assert rows["first 4 of 16 channels"][split]["shape"] <= rows["autoencoder"][split]["shape"]
    assert "| renders |" in (out / "shape-loss.md").read_text()
    assert main(["analyze", "attention", "--count", "1"]) == 2
    assert "analyze attention needs --prompt" in capsys.readouterr().err
