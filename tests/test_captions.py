"""Captions as metadata: the schema, the server client against a local stub, a tiny random Qwen2.5-VL
through the local backend, the tags' effects, selection, and the captions reaching training."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import footage
import numpy as np
import pytest
from vlm_stub import StubServer, answer

from motif_video.data.captions.backends import CaptionServerError, ServerBackend
from motif_video.data.captions.schema import Malformed, parse
from motif_video.data.curation import table
from motif_video.data.curation.config import CurateConfig
from motif_video.data.curation.funnel import admit, apply_captions

SCRIPT = shutil.which("motif-video", path=str(Path(sys.executable).parent))


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    assert SCRIPT is not None
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout)


def test_parse_accepts_the_schema_and_names_what_is_wrong():
    data = parse("```json\n" + answer(action="Static") + "\n```")  # models often fence their JSON
    assert data["action"] == "Static" and data["caption_truncated"].startswith("A wide static shot")
    assert data["caption_truncated"].endswith("to the left.")
    with pytest.raises(Malformed, match="no JSON object"):
        parse("I cannot help with that.")
    broken = json.loads(answer())
    del broken["nsfw"]
    with pytest.raises(Malformed, match=r"fields missing \['nsfw'\]"):
        parse(json.dumps(broken))
    with pytest.raises(Malformed, match="caption_short has 3 words"):
        parse(answer(caption_short="Too short here."))
    with pytest.raises(Malformed, match="action must be one of"):
        parse(answer(action="Moving"))
    with pytest.raises(Malformed, match="watermark must be a boolean"):
        parse(answer(watermark="no"))


def test_server_backend_retries_and_names_the_url():
    frames = [np.zeros((32, 48, 3), np.uint8)] * 2
    with StubServer([("status", 500), ("slow", 1.5, "late"), "fine"]) as stub:
        backend = ServerBackend(stub.url, "qwen3-vl", timeout=0.5, retries=3, backoff=0.01)
        assert backend("describe", frames) == "fine"
        assert len(stub.requests) == 3 and stub.requests[0]["path"] == "/v1/chat/completions"
        content = stub.requests[0]["body"]["messages"][0]["content"]
        assert content[0]["type"] == "text" and [c["type"] for c in content[1:]] == ["image_url", "image_url"]
        assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    with StubServer([("status", 400)]) as stub:
        with pytest.raises(CaptionServerError, match=f"{stub.url}/chat/completions refused the request: HTTP 400"):
            ServerBackend(stub.url, "m", retries=3, backoff=0.01)("x", frames)
        assert len(stub.requests) == 1  # a request the server refuses is not retried
    with StubServer() as stub:
        url = stub.url
    with pytest.raises(CaptionServerError, match=f"no answer from {url}/chat/completions after 3 tries"):
        ServerBackend(url, "m", retries=2, backoff=0.01)("x", frames)


def test_tags_reject_limit_admission_and_mark_sft():
    base = {
        "kept": True,
        "kind": "video",
        "crop_w": 854,
        "crop_h": 480,
        "start": 0.0,
        "end": 6.0,
        "motion": 0.02,
        "aesthetic": None,
        "reason": None,
        "sft": None,
    }
    rows = [dict(base, clip=f"c{i}") for i in range(5)]
    cfg = CurateConfig().admission
    admit(rows, cfg)
    assert all(r["stage_480p"] for r in rows)
    ok = {"caption_status": "ok", **parse(answer())}
    results = {
        "c0": ok,
        "c1": {**ok, "watermark": True, "timelapse": True},
        "c2": {**ok, "quality": "low"},
        "c3": {**ok, "action": "Static"},
        "c4": {"caption_status": "caption failed: invalid JSON (after 3 answers)", "caption_raw": "{oops"},
    }
    apply_captions(rows, results, cfg)
    c0, c1, c2, c3, c4 = rows
    assert c0["kept"] and c0["sft"] and c0["caption_short"] == ok["caption_short"]
    assert not c1["kept"] and c1["reason"] == "caption: tagged watermark, timelapse" and not c1["stage_144p"]
    assert c2["kept"] and c2["stage_360p"] and not c2["stage_480p"] and not c2["stage_720p"] and not c2["sft"]
    assert c3["kept"] and not c3["sft"]
    assert not c4["kept"] and c4["reason"].startswith("caption: caption failed") and c4["caption_raw"] == "{oops"


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    footage.letterboxed(raw / "bars.mp4")
    footage.three_shots(raw / "cuts.mp4")
    footage.write(raw / "pan.mp4", footage.panning(41, 3.0, 240, 320))
    from PIL import Image

    Image.fromarray(footage.texture(7, 240, 320)).save(raw / "photo.jpg")
    out = tmp_path_factory.mktemp("curated") / "out"
    result = cli("curate", str(raw), str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def test_caption_select_prepare_and_train_on_three_variants(curated, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(curated, out)
    rows = table.read(out / "clips.parquet")
    assert [Path(r["source"]).name for r in rows if r["kept"]] == [
        "bars.mp4",
        "cuts.mp4",
        "cuts.mp4",
        "cuts.mp4",
        "pan.mp4",
        "photo.jpg",
    ]
    script = [
        "not JSON at all",
        answer(subject="people", action="Dynamic"),  # bars: asked again, then fine
        answer(watermark=True),  # cuts-000: rejected by its tag
        answer(subject="animals", quality="low"),  # cuts-001
        ("status", 500),
        answer(subject="animals"),  # cuts-002: the server fails once, the client retries
        "{",
        "{",
        "{",  # pan: three malformed answers -> caption failed
        answer(subject="nature", action="Static"),  # photo (an image: prepare shards videos only)
    ]
    with StubServer(script) as stub:
        result = cli(
            "caption",
            str(out),
            "--api-url",
            stub.url,
            "--model",
            "qwen3-vl",
            "--concurrency",
            "1",
            "--frames",
            "4",
            "--quiet",
        )
        assert result.returncode == 0, result.stderr
        assert "captioned 5 clips, 1 failed (of 6 asked)" in result.stdout
        assert len(stub.requests) == 10
        assert len(stub.requests[0]["body"]["messages"][0]["content"]) == 1 + 4  # the prompt and 4 frames
        assert len(stub.requests[-1]["body"]["messages"][0]["content"]) == 1 + 1  # an image: itself
        again = cli("caption", str(out), "--api-url", stub.url, "--model", "qwen3-vl", "--quiet")
        assert again.returncode == 0, again.stderr
        assert len(stub.requests) == 10  # a rerun sends nothing for captioned clips

    rows = {(Path(r["source"]).name, r["clip"][-3:]): r for r in table.read(out / "clips.parquet")}
    bars, watermarked, low = rows["bars.mp4", "000"], rows["cuts.mp4", "000"], rows["cuts.mp4", "001"]
    assert bars["kept"] and bars["caption_status"] == "ok" and bars["subject"] == "people" and bars["sft"] is True
    assert bars["caption_truncated"] == bars["caption_long"].split(". ")[0] + "."
    assert not watermarked["kept"] and watermarked["reason"] == "caption: tagged watermark"
    assert low["kept"] and low["quality"] == "low" and not low["sft"]
    failed = rows["pan.mp4", "000"]
    assert not failed["kept"] and failed["caption_status"].startswith("caption failed") and failed["caption_raw"] == "{"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected_by"]["caption"] == 2 and summary["captioned"] == 5

    # a balanced subset by subject: 1 people clip limits the 50 / 50 mix to 1 + 1
    mix = tmp_path / "mix.toml"
    mix.write_text("[subject]\npeople = 1\nanimals = 1\n")
    chosen = cli("select", str(out), "--stage", "144p", "--target-mix", str(mix))
    assert chosen.returncode == 0, chosen.stderr
    assert "2 of 4 eligible clips selected" in chosen.stdout
    lines = {line.split()[0]: line.split()[1:] for line in chosen.stdout.splitlines() if line.startswith("  ")}
    assert lines["people"] == ["0.25", "0.50"] and lines["animals"] == ["0.50", "0.50"]
    assert lines["nature"] == ["0.25", "0.00"]  # not in the target: left out
    selection = out / "select-144p.csv"
    assert selection.is_file()
    bad = cli("select", str(out), "--stage", "144p", "--target-mix", str(tmp_path / "missing.toml"))
    assert bad.returncode == 2 and "missing.toml does not exist" in bad.stderr

    # prepare -> precompute -> training draws all three variants
    from motif_video.data.precompute import precompute
    from motif_video.data.preprocess import PrepareConfig, prepare
    from motif_video.data.shards import read_metadata
    from motif_video.data.stream import StreamedShards
    from motif_video.random_weights import build_random_pipeline
    from motif_video.training.config import TrainConfig
    from motif_video.training.train import train

    prepare(
        str(selection), tmp_path / "clips", PrepareConfig(fps=8.0, frame_buckets=(17,), area=32 * 32), progress=False
    )
    meta = read_metadata(tmp_path / "clips")
    assert len(meta) == 2 and all(len(m["captions"]) == 3 for m in meta)
    build_random_pipeline(tmp_path / "weights")
    precompute(tmp_path / "clips", tmp_path / "weights", tmp_path / "latents", progress=False)
    data = StreamedShards(tmp_path / "latents", workers=0)
    data.plan(tmp_path / "plan", 1, 0, 1, 2)
    batch = data.batch(0)
    assert batch["text_variants"].shape[:2] == (3, 2) and batch["caption_variants"][0] is not None
    cfg = TrainConfig.load(
        None,
        [
            "data.source='shards'",
            f"data.path={json.dumps(str(tmp_path / 'latents'))}",
            "data.batch_size=2",
            "model.overrides.in_channels=9",
            "model.overrides.out_channels=4",
            "train.steps=10",
            "train.save_every=10",
            "stage.caption_variants=[0.5, 0.3, 0.2]",
            f"train.out_dir={json.dumps(str(tmp_path / 'run'))}",
        ],
    )
    history = train(cfg, progress=False)
    drawn = np.sum([m["caption_variants"] for m in history], axis=0)
    assert drawn.sum() == 20 and (drawn > 0).all(), drawn  # long, short and truncated all drawn


def test_local_weights_plumbing(curated, tmp_path):
    """A tiny random Qwen2.5-VL from a config: frames in, text out, parsing (random weights write no JSON)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for s in specials:
        vocab[s] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=[], unk_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            bos_token_id=vocab["<|im_start|>"],
            eos_token_id=vocab["<|im_end|>"],
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, fullatt_block_indexes=[0]
        ),
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|image_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model_dir = tmp_path / "qwen"
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    out = tmp_path / "out"
    shutil.copytree(curated, out)
    result = cli(
        "caption",
        str(out),
        "--model-dir",
        str(model_dir),
        "--max-tokens",
        "6",
        "--attempts",
        "1",
        "--frames",
        "2",
        "--concurrency",
        "3",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "captioned 0 clips, 6 failed (of 6 asked)" in result.stdout
    rows = [r for r in table.read(out / "clips.parquet") if r["caption_status"]]
    assert len(rows) == 6 and all(r["captioner"] == "local qwen" for r in rows)
    assert all(r["caption_status"].startswith("caption failed") and r["caption_raw"] for r in rows)
    wrong = cli("caption", str(out), "--model-dir", str(tmp_path / "nothing"))
    assert wrong.returncode == 2 and "has no config.json" in wrong.stderr


def test_curate_captions_as_its_last_stage(tmp_path):
    raw = tmp_path / "raw"
    footage.write(raw / "pan.mp4", footage.panning(41, 3.0, 240, 320))
    with StubServer(default=answer(subject="nature")) as stub:
        result = cli(
            "curate",
            str(raw),
            str(tmp_path / "out"),
            "--captioner",
            "server",
            "--api-url",
            stub.url,
            "--model",
            "qwen3-vl",
            "--frames",
            "2",
            "--quiet",
        )
        assert result.returncode == 0, result.stderr
        assert len(stub.requests) == 1
    (row,) = table.read(tmp_path / "out" / "clips.parquet")
    assert row["kept"] and row["caption_status"] == "ok" and row["subject"] == "nature" and row["sft"] is True
    mismatch = cli("curate", str(raw), str(tmp_path / "out2"), "--captioner", "local", "--api-url", "http://x")
    assert mismatch.returncode == 2 and "--captioner local needs --model-dir" in mismatch.stderr
    assert not (tmp_path / "out2").exists()  # refused before any work


def test_an_unreachable_server_is_one_line(curated, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(curated, out)
    with StubServer() as stub:
        url = stub.url  # closed again: nothing listens there
    result = cli("caption", str(out), "--api-url", url, "--model", "m", "--retries", "0", "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"motif-video caption: error: no answer from {url}/chat/completions after 1 tries "
        "(URLError: [Errno 111] Connection refused)"
    )
    nothing = cli("select", str(out))
    assert nothing.returncode == 2 and "run `motif-video caption" in nothing.stderr
