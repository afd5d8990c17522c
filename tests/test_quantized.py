"""Low-memory weights: GGUF files (official key names) and int8 weight-only, on real classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import perturb_
from motif_video.cli import main
from motif_video.config import get_preset
from motif_video.embedded import embedded_weights
from motif_video.model.checkpoint_io import load_transformer, to_official
from motif_video.model.quantized import (
    GGUFLinear,
    load_gguf_transformer,
    parameter_bytes,
    quantize_int8,
    write_gguf,
)
from motif_video.model.transformer import MotifVideoTransformer


def inputs(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cfg.in_channels, 5, 16, 16, generator=g)
    return x, torch.tensor([500.0]), torch.randn(1, 8, cfg.text_dim, generator=g)


@pytest.fixture(scope="module")
def embedded():
    return load_transformer(embedded_weights() / "transformer", dtype=torch.float32)


@pytest.mark.parametrize("qtype, tolerance", [("Q8_0", 0.05), ("Q4_0", 0.6)])
def test_gguf_round_trip_keeps_layers_quantized(embedded, tmp_path, qtype, tolerance):
    from gguf import GGUFReader

    path = write_gguf(embedded, tmp_path / "t.gguf", qtype)
    names = {t.name for t in GGUFReader(str(path)).tensors}
    assert names == set(to_official(embedded.cfg, embedded.state_dict()))  # the official key layout
    model = load_gguf_transformer(path)
    assert model.cfg == embedded.cfg
    assert sum(isinstance(m, GGUFLinear) for m in model.modules()) > 20
    assert parameter_bytes(model) < 0.5 * parameter_bytes(embedded)
    with torch.no_grad():
        ref, out = embedded(*inputs(embedded.cfg)).velocity, model(*inputs(embedded.cfg)).velocity
    assert (out - ref).abs().max() < tolerance * ref.abs().max()


def test_a_released_layout_gguf_without_our_metadata_loads_with_a_config(tmp_path):
    """As a community file: diffusers' key names, Q8_0 projections, no motif-video metadata."""
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    cfg = get_preset("debug").replace(cross_attention_kv="separate")
    model = perturb_(MotifVideoTransformer(cfg), seed=5, std=0.1)
    writer = GGUFWriter(str(tmp_path / "c.gguf"), "motif-video")
    for name, tensor in to_official(cfg, model.state_dict()).items():
        array = tensor.float().numpy()
        if "blocks" in name and name.endswith(".weight") and array.ndim == 2 and array.shape[1] % 32 == 0:
            writer.add_tensor(name, quantize(array, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(Exception, match="checkpoint does not match"):
        load_gguf_transformer(tmp_path / "c.gguf")  # no metadata: the 2B preset does not fit
    loaded = load_gguf_transformer(tmp_path / "c.gguf", cfg)
    assert any(isinstance(m, GGUFLinear) for m in loaded.modules())
    with torch.no_grad():
        ref, out = model(*inputs(cfg)).velocity, loaded(*inputs(cfg)).velocity
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_int8_shrinks_the_block_weights_and_keeps_the_output(embedded):
    model = load_transformer(embedded_weights() / "transformer", dtype=torch.float32)
    quantize_int8(model)
    assert parameter_bytes(model) < 0.55 * parameter_bytes(embedded)
    assert model.final_layer.linear.weight.dtype == torch.float32  # sensitive parts stay full precision
    with torch.no_grad():
        ref, out = embedded(*inputs(embedded.cfg)).velocity, model(*inputs(embedded.cfg)).velocity
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_generate_with_gguf_and_int8(embedded, tmp_path):
    gguf = write_gguf(embedded, tmp_path / "t.gguf", "Q8_0")
    prompt = "a red circle moves to the left on a gray background"
    videos = {}
    for name, extra in (("plain", []), ("gguf", ["--gguf", str(gguf)]), ("int8", ["--quantize", "int8"])):
        out = tmp_path / f"{name}.mp4"
        assert main(["generate", prompt, "--out", str(out), "--steps", "6", "--quiet", *extra]) == 0
        assert json.loads(out.with_suffix(".json").read_text())["steps"] == 6
        from motif_video.media import read_video

        videos[name] = read_video(out)[0].astype(np.float64)
    for name in ("gguf", "int8"):
        mse = ((videos[name] - videos["plain"]) ** 2).mean()
        assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 20  # PSNR against the float weights, dB
    assert main(["generate", prompt, "--gguf", str(tmp_path / "missing.gguf")]) == 2
