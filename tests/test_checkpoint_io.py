"""Weights I/O: the key map, sharded directories, atomic writes and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import make_inputs, make_reference, perturb_
from motif_video import CheckpointError, MotifVideoTransformer, get_preset, load_transformer, save_transformer
from motif_video.model import checkpoint_io
from motif_video.model.checkpoint_io import expected_shapes, key_table


@pytest.mark.parametrize("kv", ["shared", "separate"])
@pytest.mark.parametrize("preset", ["debug", "motif-video-2b"])
def test_key_table_covers_every_parameter_once(preset, kv):
    cfg = get_preset(preset).replace(cross_attention_kv=kv)
    with torch.device("meta"):
        ours = MotifVideoTransformer(cfg).state_dict()
    table = key_table(cfg)
    assert set(table) == set(ours)
    official = [k for parts in table.values() for k, _ in parts]
    assert len(official) == len(set(official))
    # fused tensors are exactly the concatenation of their parts
    shapes = expected_shapes(cfg)
    for our_key, parts in table.items():
        assert sum(shapes[k][0] for k, _ in parts) == ours[our_key].shape[0]


def test_2b_official_names_match_diffusers_names():
    """Our map produces exactly the parameter names of diffusers' model for the 2B shape."""
    from diffusers import MotifVideoTransformer3DModel

    cfg = get_preset("motif-video-2b").replace(cross_attention_kv="separate")
    with torch.device("meta"):
        theirs = MotifVideoTransformer3DModel(**{k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")})
    assert {k: tuple(v.shape) for k, v in theirs.state_dict().items()} == expected_shapes(cfg)


def test_save_load_round_trip_is_bitwise_and_sharded(tmp_path):
    model = perturb_(MotifVideoTransformer(get_preset("debug"))).eval()
    save_transformer(model, tmp_path / "ckpt", max_shard_bytes=100_000)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert "config.json" in files and "diffusion_pytorch_model.safetensors.index.json" in files
    assert sum(name.endswith(".safetensors") for name in files) > 1
    loaded = load_transformer(tmp_path / "ckpt")
    assert loaded.cfg == model.cfg
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    half = load_transformer(tmp_path / "ckpt", dtype=torch.bfloat16)
    kept = tuple(name + "." for name in half.float32_modules())  # the conditioning path stays float32
    assert {p.dtype for n, p in half.named_parameters() if not n.startswith(kept)} == {torch.bfloat16}
    assert {p.dtype for n, p in half.named_parameters() if n.startswith(kept)} == {torch.float32}


def test_saving_over_an_existing_directory_replaces_it(tmp_path):
    a = perturb_(MotifVideoTransformer(get_preset("debug")), seed=1)
    b = perturb_(MotifVideoTransformer(get_preset("debug")), seed=2)
    save_transformer(a, tmp_path / "ckpt")
    save_transformer(b, tmp_path / "ckpt")
    assert torch.equal(load_transformer(tmp_path / "ckpt").final_layer.linear.weight, b.final_layer.linear.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_interrupted_save_leaves_nothing_partial(tmp_path, monkeypatch):
    good = perturb_(MotifVideoTransformer(get_preset("debug")), seed=1)
    save_transformer(good, tmp_path / "ckpt")
    calls = []

    def failing_save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job is stopped half-way through the shards
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint_io, "save_file", failing_save_file)
    with pytest.raises(KeyboardInterrupt):
        save_transformer(
            perturb_(MotifVideoTransformer(get_preset("debug")), seed=2), tmp_path / "ckpt", max_shard_bytes=100_000
        )
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary directory left behind
    assert torch.equal(load_transformer(tmp_path / "ckpt").final_layer.linear.weight, good.final_layer.linear.weight)


def _reference_dir(tmp_path):
    make_reference().save_pretrained(tmp_path)
    return tmp_path / "diffusion_pytorch_model.safetensors"


def test_missing_unknown_and_misshaped_keys_are_listed(tmp_path):
    weights = _reference_dir(tmp_path)
    tensors = load_file(weights)
    del tensors["transformer_blocks.1.attn.to_k.bias"]
    tensors["transformer_blocks.0.attn.extra.weight"] = torch.zeros(3)
    tensors["proj_out.weight"] = torch.zeros(5, 32)
    save_file(tensors, weights)
    with pytest.raises(CheckpointError) as err:
        load_transformer(tmp_path)
    message = str(err.value)
    assert "1 missing keys:\n    transformer_blocks.1.attn.to_k.bias" in message
    assert "1 unknown keys:\n    transformer_blocks.0.attn.extra.weight" in message
    assert "proj_out.weight: checkpoint (5, 32), model (64, 32)" in message


def test_config_and_weights_must_agree_on_the_cross_attention_form(tmp_path):
    _reference_dir(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "text_cross_attention_kv": "shared"}))
    with pytest.raises(
        CheckpointError, match="says text_cross_attention_kv='shared' but the weights use the 'separate'"
    ):
        load_transformer(tmp_path)


def test_incomplete_directories_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no transformer checkpoint at"):
        load_transformer(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_transformer(tmp_path / "empty")
    make_reference().save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    next((tmp_path / "sharded").glob("*-00002-of-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="names shard files that are missing"):
        load_transformer(tmp_path / "sharded")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="neither a directory nor a .safetensors file"):
        load_transformer(tmp_path / "weights.bin")


def test_single_file_without_motif_keys_is_rejected(tmp_path):
    save_file({"some.weight": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="not a Motif-Video transformer checkpoint"):
        load_transformer(tmp_path / "x.safetensors")


def test_single_file_diffusers_keys_infer_the_config(tmp_path):
    reference = make_reference()
    save_file(reference.state_dict(), str(tmp_path / "m.safetensors"))
    ours = load_transformer(tmp_path / "m.safetensors", config=get_preset("debug"))
    assert ours.cfg.cross_attention_kv == "separate"
    inputs = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).velocity, reference(**inputs).sample, rtol=1e-5, atol=1e-5)


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from motif_video.media import write_json

    mask = os.umask(0o022)
    try:
        save_transformer(MotifVideoTransformer(get_preset("debug")), tmp_path / "ckpt")
        write_json({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
