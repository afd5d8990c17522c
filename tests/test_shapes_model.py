"""The shapes-world chain of the embedded model (prepare -> autoencoder -> latents -> joint training
of the transformer and a word-level text encoder -> pipeline export), and the shipped model."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_cli import run

from motif_video.data import world
from motif_video.embedded import EMBEDDED, embed, embedded_weights, manifest, samples_figure
from motif_video.media import read_video
from motif_video.model.word_encoder import WordTextEncoder
from motif_video.sampling.pipeline import MotifVideoPipeline
from motif_video.training.config import TrainConfig
from motif_video.training.objective import make_inputs, without_words
from motif_video.training.train import build, check_resume, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "shapes-tiny.toml"
FINISH = ROOT / "configs" / "shapes-tiny-finish.toml"  # make embedded's second stage
CONTINUE = ROOT / "configs" / "shapes-tiny-continue.toml"  # its third
CLOSE = ROOT / "configs" / "shapes-tiny-close.toml"  # and its fourth


def tiny_shapes_config(tmp_path, *overrides: str, config: Path = CONFIG, run: str = "run") -> TrainConfig:
    """configs/shapes-tiny.toml (or `config`) at toy sizes: 12 clips of 9 x 32 x 32, four training steps."""
    return TrainConfig.load(
        config,
        [
            f"data.path={json.dumps(str(tmp_path / 'data'))}",
            f"train.out_dir={json.dumps(str(tmp_path / run))}",
            "data.batch_size=4",
            "world.clips=12",
            "world.frames=9",
            "world.height=32",
            "world.width=32",
            "train.steps=4",
            "train.save_every=2",
            "train.sample_every=4",
            "train.sample_steps=2",
            "optim.warmup_steps=1",
            "autoencoder.decoder_steps=10",  # the DetailDecoder in the chain, at toy cost
            "autoencoder.decoder_batch=4",
            *overrides,
        ],
    )


def test_shapes_chain_trains_text_encoder_and_exports_a_pipeline(tmp_path):
    cfg = tiny_shapes_config(tmp_path)
    history = train(cfg, progress=False)
    assert len(history) == 4 and all(np.isfinite(m["loss"]) for m in history)
    data = tmp_path / "data"
    assert (data / "clips" / "report.json").is_file() and (data / "vae" / "config.json").is_file()
    assert len(list((data / "latents").glob("shard-*.tar"))) == 1
    assert not (data / "latents" / "null_text.npy").exists()  # no text states: the encoder is trained

    pipeline = tmp_path / "run" / "pipeline"
    info = manifest(pipeline)
    assert info["steps"] == 4 and info["data_seed"] == 0
    assert info["defaults"] == {"height": 32, "width": 32, "frames": 9, "fps": 8, "steps": 2, "negative_prompt": ""}
    # the text encoder was trained: its exported (EMA) weights moved away from the seeded init
    exported = WordTextEncoder.from_pretrained(pipeline / "text_encoder")
    assert set(world.vocabulary()) <= set(exported.vocab)
    torch.manual_seed(cfg.train.seed + 2)
    init = WordTextEncoder(exported.vocab, cfg.text.dim, cfg.text.layers, cfg.text.heads, cfg.text.max_len)
    assert not torch.equal(init.embed.weight, exported.embed.weight)

    pipe = MotifVideoPipeline.from_pretrained(pipeline)
    out = pipe("a red circle moves to the left", height=32, width=32, frames=9, steps=2, progress=False)
    assert out.frames.shape == (1, 9, 32, 32, 3)
    samples = sorted((tmp_path / "run" / "samples").glob("*.mp4"))
    assert [p.name for p in samples] == ["step-0000004-0.mp4", "step-0000004-1.mp4"]
    assert read_video(samples[0].read_bytes())[0].shape == (9, 32, 32, 3)

    # the second stage (configs/shapes-tiny-finish.toml) starts from this pipeline: its transformer trains
    # on, its word-level encoder stays as loaded (text.frozen), or trains on too without that
    def finish(run: str, *overrides: str):
        starts = [f"model.init_from={json.dumps(str(pipeline / 'transformer'))}"]
        starts += [f"text.init_from={json.dumps(str(pipeline))}", "train.steps=2", "train.sample_every=0"]
        train(tiny_shapes_config(tmp_path, *starts, *overrides, config=FINISH, run=run), progress=False)
        done = tmp_path / run / "pipeline"
        return load_file(
            str(done / "transformer" / "diffusion_pytorch_model.safetensors")
        ), WordTextEncoder.from_pretrained(done / "text_encoder")

    first = load_file(str(pipeline / "transformer" / "diffusion_pytorch_model.safetensors"))
    weights, encoder = finish("finish")
    assert any(not torch.equal(first[k], weights[k]) for k in first)
    assert all(torch.equal(a, b) for a, b in zip(exported.parameters(), encoder.parameters(), strict=True))
    _, encoder = finish("finish-text", "text.frozen=false")
    assert not all(torch.equal(a, b) for a, b in zip(exported.parameters(), encoder.parameters(), strict=True))


def test_the_later_stages_continue_the_first_with_every_token_then_from_a_frame():
    """make embedded trains four stages; each later one must start from the stage before's exported
    model and keep its latent space, data and model shape, and differ in what it is for: the second
    (the unrouted finish) TREAD off, the third most batches conditioned on their first frame, the fourth
    back to the first two's share (a closing text-to-video stretch). Also: the fourth's pipeline, with
    its decoder refitted on the first stage's clips, is what the Makefile ships."""
    first, finish, cont, close = (TrainConfig.load(c) for c in (CONFIG, FINISH, CONTINUE, CLOSE))
    for before, stage in ((first, finish), (finish, cont), (cont, close)):
        assert stage.model.init_from == f"{before.train.out_dir}/pipeline/transformer"
        assert stage.text.init_from == f"{before.train.out_dir}/pipeline" and stage.text.frozen
        assert (stage.model.preset, stage.model.overrides) == (first.model.preset, first.model.overrides)
        for section in ("data", "world", "autoencoder", "stage"):
            assert getattr(stage, section) == getattr(first, section), section
        assert dataclasses.replace(stage.text, init_from="", frozen=False) == first.text
        assert not stage.tread.enabled and stage.train.out_dir != before.train.out_dir
    assert first.tread.enabled
    assert first.flow.i2v_fraction == finish.flow.i2v_fraction == close.flow.i2v_fraction == 0.1
    assert cont.flow.i2v_fraction == 0.8
    assert dataclasses.replace(cont.flow, i2v_fraction=0.1) == finish.flow == close.flow  # nothing else changes
    assert close.train.steps < cont.train.steps
    makefile = (ROOT / "Makefile").read_text()
    stages = [line.split("configs/")[1] for line in makefile.splitlines() if "/motif-video train configs/" in line]
    assert stages == [CONFIG.name, FINISH.name, CONTINUE.name, CLOSE.name]  # in this order
    recorded = re.search(r"^STAGES := (.*)$", makefile, re.M)  # the command the shipped manifest records
    assert recorded and recorded.group(1).split(" && ") == [f"motif-video train configs/{name}" for name in stages]
    assert '--command "$(STAGES) && $(REFIT)"' in makefile
    refit = re.search(r"refit-decoder (\S+) (\S+) --out (\S+)/pipeline\n", makefile)
    assert refit and refit.group(1, 2) == (f"{close.train.out_dir}/pipeline", f"{first.data.path}/clips")
    assert f"motif_video.embedded {refit.group(3)}/pipeline " in makefile


def test_word_dropout_leaves_words_out_of_the_captions_it_encodes(tmp_path, monkeypatch):
    """flow.word_dropout: each word of a caption is left out with the given probability, in order, never all
    of them, on a stream of its own (the step's other draws do not move); the encoder sees the shorter captions."""
    caption = "a red circle moves to the left on a gray background"
    assert without_words(caption, 0.0, torch.Generator().manual_seed(0)) == caption
    g = torch.Generator().manual_seed(0)
    kept = [without_words(caption, 0.25, g).split() for _ in range(400)]
    assert all(words and all(w in caption.split() for w in words) for words in kept)
    share = sum(map(len, kept)) / (400 * len(caption.split()))
    assert 0.7 < share < 0.8  # about 1 - 0.25 of the words stay
    assert sum("circle" not in words for words in kept) > 50  # the shape word among them
    assert without_words("red", 0.99, torch.Generator().manual_seed(1)) == "red"  # one word is always kept

    def encoded(*overrides):
        cfg = tiny_shapes_config(tmp_path, "flow.caption_dropout=0.0", *overrides)
        state = build(cfg)
        seen: list[str] = []
        tokenize = state.model.text_encoder.tokenize
        monkeypatch.setattr(
            state.model.text_encoder, "tokenize", lambda prompts: (seen.extend(prompts), tokenize(prompts))[1]
        )
        ts = [make_inputs(state, state.data.batch(step, 4), step).t for step in range(6)]
        return seen, torch.cat(ts)

    plain, t_plain = encoded()
    dropped, t_dropped = encoded("flow.word_dropout=0.3")
    torch.testing.assert_close(t_dropped, t_plain)  # the same times: its own stream
    assert len(plain) == len(dropped) == 24
    for full, short in zip(plain, dropped, strict=True):  # in order, a subsequence of the caption
        rest = iter(full.split())
        assert short and all(w in rest for w in short.split())
    assert sum(map(len, (c.split() for c in dropped))) < 0.85 * sum(map(len, (c.split() for c in plain)))
    with pytest.raises(ValueError, match=r"flow.word_dropout must be a probability in \[0, 1\), got 1.0"):
        tiny_shapes_config(tmp_path, "flow.word_dropout=1.0")
    with pytest.raises(ValueError, match="flow.word_dropout leaves words out .* 'precomputed'"):
        TrainConfig.load(ROOT / "configs" / "debug.toml", ["flow.word_dropout=0.2"])  # precomputed text states


def test_free_layout_clips_teach_continuing_not_text_to_video(tmp_path):
    """Extension training (configs/shapes-tiny-extend.toml): clips whose object starts anywhere are
    marked in the data; a batch without a condition leaves them out of the loss, a batch conditioned
    on a prefix trains on them."""
    from motif_video.training.objective import losses, make_inputs
    from motif_video.training.train import build

    overrides = ["world.free_layout=0.5", "flow.i2v_fraction=0.0", "flow.prefix_fraction=0.5", "train.steps=30"]
    cfg = tiny_shapes_config(tmp_path, *overrides)
    state = build(cfg)
    lines = [json.loads(x) for x in (tmp_path / "data" / "clips" / "metadata.jsonl").read_text().splitlines()]
    free = {m["caption"] for m in lines if m.get("layout") == "free"}
    assert 2 <= len(free) <= 10  # about half of 12, each a scene that world.scene moved
    seen = {"t2v": 0, "prefix": 0}
    for step in range(30):  # the steps of the run's plan, in order
        batch = state.data.batch(step, 4)
        flags = batch["free_layout"]
        assert flags.tolist() == [c in free for c in batch["captions"]]
        inputs = make_inputs(state, batch, step)
        if not flags.any():  # no free clip: nothing to weigh
            assert inputs.sample_weights is None
            continue
        if inputs.loss_from == 0:  # text-to-video: the free clips weigh nothing
            assert inputs.sample_weights.tolist() == (~flags).float().tolist()
            seen["t2v"] += 1
        else:  # continuing a prefix: every clip counts
            assert inputs.sample_weights is None
            seen["prefix"] += 1
        if seen["t2v"] == 1 and inputs.loss_from == 0 and not flags.all():  # and the loss follows the weights
            with torch.no_grad():
                base, _ = losses(state, inputs, slice(0, 4), repa_on=False)
                kept = ~flags
                inputs.target[kept] += 1.0  # the kept clips' error changes the loss, the free clips' does not
                assert losses(state, inputs, slice(0, 4), repa_on=False)[0] > base + 0.1
                inputs.target[kept] -= 1.0
                inputs.target[flags] += 1.0
                torch.testing.assert_close(losses(state, inputs, slice(0, 4), repa_on=False)[0], base)
    assert seen["t2v"] and seen["prefix"]


def test_shapes_data_is_reused_and_guarded(tmp_path, monkeypatch):
    train(tiny_shapes_config(tmp_path), progress=False)
    data = tmp_path / "data"
    stamps = {p: p.stat().st_mtime_ns for p in (data / "vae" / "config.json", *(data / "latents").glob("*.tar"))}
    # an ablation on the same data: the three stages are skipped, nothing is rewritten
    train(tiny_shapes_config(tmp_path, "train.out_dir=" + json.dumps(str(tmp_path / "ablation"))), progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # other world settings: the run folder with checkpoints refuses them; a new run on the same data folder too
    with pytest.raises(ValueError, match=r"holds checkpoints of a run with other settings \(world.clips 12 -> 13\)"):
        train(tiny_shapes_config(tmp_path, "world.clips=13"), progress=False)
    # a run folder of an older version (settings added since are absent from its config.json) resumes, and a
    # change of such a setting is still refused
    original = (tmp_path / "run" / "config.json").read_text()
    saved = json.loads(original)
    del saved["text"]["frozen"], saved["world"]["free_layout"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    check_resume(tmp_path / "run", tiny_shapes_config(tmp_path))
    with pytest.raises(ValueError, match=r"other settings \(world.free_layout 0.0 -> 0.5\)"):
        check_resume(tmp_path / "run", tiny_shapes_config(tmp_path, "world.free_layout=0.5"))
    # a run that loaded its word-level encoder (text.init_from) before text.frozen existed had it frozen
    saved["text"]["init_from"] = "base"
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    check_resume(tmp_path / "run", tiny_shapes_config(tmp_path, "text.init_from='base'", "text.frozen=true"))
    with pytest.raises(ValueError, match=r"other settings \(text.frozen True -> False\)"):
        check_resume(tmp_path / "run", tiny_shapes_config(tmp_path, "text.init_from='base'"))
    (tmp_path / "run" / "config.json").write_text(original)
    with pytest.raises(ValueError, match="other \\[world\\]"):
        other = "train.out_dir=" + json.dumps(str(tmp_path / "other"))
        train(tiny_shapes_config(tmp_path, "world.clips=13", other), progress=False)
    with pytest.raises(ValueError, match="other \\[world\\]"):  # a later setting, recorded once it is set
        train(tiny_shapes_config(tmp_path, "world.free_layout=0.5", other), progress=False)
    with pytest.raises(ValueError, match="other \\[world\\]"):  # the config's exact starts (jitter 0), not the world's
        train(tiny_shapes_config(tmp_path, "world.jitter=1.0", other), progress=False)
    recipe = json.loads((data / "recipe.json").read_text())  # and left out while unset: older folders stay valid
    assert recipe["world"]["jitter"] == 0.0  # set in configs/shapes-tiny.toml, so recorded
    assert "free_layout" not in recipe["world"] and "decoder_noise" not in recipe["autoencoder"]
    assert not {"decoder_contrast", "decoder_width", "decoder_depth"} & set(recipe["autoencoder"])
    with monkeypatch.context() as m:  # clips of another version of the world (larger objects)
        m.setattr(world, "OBJECT_SIZE", world.OBJECT_SIZE + 0.1)
        with pytest.raises(ValueError, match="another version of the world"):
            train(tiny_shapes_config(tmp_path), progress=False)
    with pytest.raises(ValueError, match="set text.encoder to word, sentence or t5gemma2"):
        tiny_shapes_config(tmp_path, "text.encoder='precomputed'")
    with pytest.raises(ValueError, match="world.max_objects must be at least 1, got 0"):
        tiny_shapes_config(tmp_path, "world.max_objects=0")
    with pytest.raises(ValueError, match=r"world.free_layout must be a share in \[0, 1\], got -0.1"):
        tiny_shapes_config(tmp_path, "world.free_layout=-0.1")
    with pytest.raises(ValueError, match="text.frozen keeps a loaded word-level encoder: it needs .* text.init_from"):
        tiny_shapes_config(tmp_path, "text.frozen=true")  # nothing loaded: it would freeze a random encoder


def test_embed_writes_float16_weights_and_scores(tmp_path):
    train(tiny_shapes_config(tmp_path), progress=False)
    report = {s: {"mean": {"color": 0.5, "mean": 0.4}} for s in ("trained", "held_out")}
    (tmp_path / "report.json").write_text(json.dumps(report))
    out = embed(
        tmp_path / "run" / "pipeline", tmp_path / "report.json", tmp_path / "shipped", "make embedded", 2.5, 7, "v9"
    )
    info = manifest(out)
    assert info["command"] == "make embedded" and info["dtype"] == "float16" and info["defaults"]["steps"] == 7
    assert info["name"] == "v9" and "decoder" in json.loads((out / "vae" / "config.json").read_text())
    assert json.loads((out / "guider" / "guider_config.json").read_text())["guidance_scale"] == 2.5
    assert info["metrics"]["shapes_benchmark"]["held_out"]["color"] == 0.5
    for file in out.rglob("*.safetensors"):
        assert {t.dtype for t in load_file(str(file)).values()} == {torch.float16}
    full = MotifVideoPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    half = MotifVideoPipeline.from_pretrained(out)  # loads back as float32
    kwargs = dict(height=32, width=32, frames=9, steps=2, progress=False)
    a, b = full("a red circle moves up", **kwargs).frames, half("a red circle moves up", **kwargs).frames
    assert (a - b).abs().max() < 0.05
    # the samples figure: a row of frames per prompt, at the model's default size
    figure = samples_figure(out, tmp_path / "samples.png", prompts=("a red circle moves up", "blue square"), columns=3)
    assert np.asarray(Image.open(figure)).shape == (2 * 32, 3 * 32, 3)


def test_refit_decoder_keeps_the_latents_and_redraws_the_pixels(tmp_path, capsys):
    """`motif-video refit-decoder`: a copy of the pipeline whose DetailDecoder is fitted anew (with context
    and noise), the components and the transformer byte for byte the same; bad input is one line, exit 2."""
    from motif_video.cli import main
    from motif_video.model.vae import load_autoencoder

    train(tiny_shapes_config(tmp_path), progress=False)
    pipeline, clips, out = tmp_path / "run" / "pipeline", tmp_path / "data" / "clips", tmp_path / "refit"
    args = ["refit-decoder", str(pipeline), str(clips), "--out", str(out), "--steps", "12", "--batch", "4", "--quiet"]
    assert main([*args, "--width", "32", "--depth", "2"]) == 0
    assert "reconstruction L1" in capsys.readouterr().out
    for part in ("transformer", "text_encoder"):
        for file in (pipeline / part).iterdir():
            assert (out / part / file.name).read_bytes() == file.read_bytes()
    before, after = load_autoencoder(pipeline / "vae"), load_autoencoder(out / "vae")
    assert after.decoder.context == 1 and before.decoder.context == 0
    for name in ("mean", "basis"):
        assert torch.equal(before.tensors[name], after.tensors[name])
    assert before.config["latents_std"] == after.config["latents_std"]
    assert after.decoder.latent_in.in_channels == 3 * before.decoder.latent_in.in_channels - 2 * 4  # 3 grids, 1 place
    assert not torch.equal(after.decoder.out.weight, before.decoder.out.weight)
    info = manifest(out)
    assert info["decoder_refit"]["context"] == 1 and info["decoder_refit"]["noise"] == 0.3
    assert info["decoder_refit"]["contrast_loss"] is True  # the default since v22; --plain-loss turns it off
    assert (info["decoder_refit"]["width"], info["decoder_refit"]["depth"]) == (32, 2)
    settings = after.config["decoder"]  # the latent path as asked, unfolded to width / 8 features per pixel
    assert (settings["latent_channels"], settings["latent_layers"], settings["unfold_channels"]) == (32, 2, 4)
    assert json.loads((out / "vae" / "training.json").read_text())["refit"]["steps"] == 12
    frames = MotifVideoPipeline.from_pretrained(out)("a red circle moves up", height=32, width=32, frames=9, steps=2,
                                                     progress=False).frames  # fmt: skip
    assert frames.shape == (1, 9, 32, 32, 3)
    # bad input: the same folder, no clips, a negative context
    for bad, message in (
        (["--out", str(pipeline)], "another folder"),
        (["--context", "-1"], "--context must be at least 0"),
        (["--width", "4"], "--width must be at least 8, got 4"),
    ):
        assert main([*args[:3], "--out", str(tmp_path / "x"), "--quiet", *bad]) == 2
        assert message in capsys.readouterr().err
    assert main(["refit-decoder", str(pipeline), str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert "clips folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# -- the shipped model -------------------------------------------------------------------------------


def test_embedded_model_is_small_and_documented():
    root = embedded_weights()
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert size < 12 * 2**20, f"{size / 2**20:.1f} MiB"
    info = manifest(root)
    # how it was made: every training stage of make embedded is named (v21 records the first two as v19's
    # chain, then the third run on the shipped v19)
    for stage in (CONFIG, FINISH, CONTINUE, CLOSE):
        assert f"motif-video train configs/{stage.name}" in info["command"], stage.name
    assert "motif-video refit-decoder" in info["command"]
    assert info["steps"] > 0 and "shapes_benchmark" in info["metrics"]


def test_generate_without_weights_uses_the_embedded_model(tmp_path):
    out = tmp_path / "red-circle.mp4"
    result = run("generate", "a red circle moves to the left", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    frames, _ = read_video(out.read_bytes())
    defaults = manifest(EMBEDDED)["defaults"]
    assert frames.shape == (defaults["frames"], defaults["height"], defaults["width"], 3)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["weights"] == str(EMBEDDED.resolve()) and sidecar["negative_prompt"] == ""
    assert sidecar["steps"] == manifest(EMBEDDED)["defaults"]["steps"]


def test_the_shipped_4step_student_samples_in_4_passes_by_name(tmp_path):
    """`--weights shapes-tiny-4step`: the distilled student, by name, with its own defaults: 4 steps, the
    conditional pass only; its manifest records the teacher, the schedule and the guidance folded in."""
    from motif_video.embedded import embedded_weights as shipped_model

    student = shipped_model("shapes-tiny-4step")
    info = manifest(student)
    assert info["distilled"]["teacher"] == "shapes-tiny" and info["distilled"]["teacher_steps"] == 20
    assert info["defaults"]["steps"] == 4 and "shapes_benchmark" in info["metrics"]
    absolute = re.findall(r'"(/[^"]*)"', json.dumps(info))
    assert not absolute, absolute  # a shipped manifest names no folder of the machine that made it
    out = tmp_path / "student.mp4"
    result = run("generate", "a red circle moves to the left", "--weights", "shapes-tiny-4step", "--out", str(out))
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["steps"] == 4 and sidecar["guidance_passes"] is None and sidecar["distilled"]["steps"] == 4
    assert sidecar["weights"] == str(student.resolve())


def test_unknown_words_are_refused_with_the_vocabulary(tmp_path):
    result = run("generate", "a pink elephant dances", "--out", str(tmp_path / "x.mp4"))
    assert result.returncode == 2
    assert "unknown words ['dances', 'elephant', 'pink']" in result.stderr
    assert "circle" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "x.mp4")


def test_info_on_a_training_run_names_its_pipeline(tmp_path):
    """info --weights RUN (a train out_dir, whose config.json is the training config, not a model's) is
    refused as generate refuses it, naming the pipeline the run exported; that pipeline is read."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(embedded_weights(), run_dir / "pipeline")
    (run_dir / "config.json").write_text(json.dumps({"train": {"steps": 1}, "model": {"preset": "shapes-tiny"}}))
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    refused = run("info", "--weights", str(run_dir))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert f"is not a checkpoint (this is a training run: use --weights {run_dir / 'pipeline'})" in refused.stderr
    result = run("info", "--weights", str(run_dir / "pipeline"))
    assert result.returncode == 0, result.stderr
    assert re.search(rf"^{re.escape(str(run_dir / 'pipeline'))}: [\d,]+ parameters", result.stdout, re.M), result.stdout


def test_a_missing_embedded_model_is_a_clear_error(tmp_path, monkeypatch):
    import motif_video.embedded

    monkeypatch.setattr(motif_video.embedded, "EMBEDDED", tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="embedded model is missing from this installation"):
        embedded_weights()
