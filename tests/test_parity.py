"""Our transformer against diffusers' MotifVideoTransformer3DModel, the reference for the numerics.

Each case builds a tiny random diffusers model, perturbs every weight, saves it with
`save_pretrained`, loads it with our loader and compares outputs on the same inputs (float32).
The shared-K/V (original) form has no diffusers class; its reference is the diffusers model
with its cross-attention modules rewired to compute exactly what the original code does.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from helpers import make_inputs, make_reference, perturb_, shared_form_reference, tiny_diffusers_kwargs
from motif_video import load_transformer, save_transformer

ATOL = 1e-5


def _compare(reference, ours, inputs) -> float:
    with torch.no_grad():
        expected = reference(**inputs).sample
        actual = ours(**inputs).velocity
    assert actual.shape == expected.shape
    diff = (actual - expected).abs().max().item()
    assert diff <= ATOL * max(1.0, expected.abs().max().item()), f"max abs difference {diff}"
    return diff


CASES = {
    # name: (diffusers constructor overrides, input overrides)
    "all-stages-i2v-padded": ({}, {}),
    "t2v-no-image-tokens": ({}, {"image_tokens": None}),
    "no-mask": ({}, {"valid": None}),
    "batch-1-square": ({}, {"batch": 1, "height": 4, "width": 4, "valid": (4,)}),
    "batch-3-odd-frames": ({}, {"batch": 3, "frames": 5, "valid": (7, 1, 4)}),
    "no-decoder": ({"num_decoder_layers": 0}, {}),
    "cross-attn-off": ({"enable_text_cross_attention_dual": False, "enable_text_cross_attention_single": False}, {}),
    "cross-attn-dual-only": ({"enable_text_cross_attention_single": False}, {}),
    "cross-attn-single-only": ({"enable_text_cross_attention_dual": False}, {}),
    "no-image-projection": ({"image_embed_dim": None}, {"image_tokens": None}),
    "temporal-patch-2": ({"patch_size_t": 2}, {"frames": 4}),
    "wider-heads-mlp": (
        {
            "num_attention_heads": 3,
            "attention_head_dim": 8,
            "rope_axes_dim": (2, 2, 4),
            "mlp_ratio": 2.0,
            "rope_theta": 10000.0,
        },
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_diffusers(name, tmp_path):
    model_overrides, input_overrides = CASES[name]
    reference = make_reference(**model_overrides)
    reference.save_pretrained(tmp_path)
    ours = load_transformer(tmp_path)
    assert ours.cfg.cross_attention_kv == "separate"
    _compare(reference, ours, make_inputs(**input_overrides))


def test_our_save_loads_in_diffusers(tmp_path):
    from diffusers import MotifVideoTransformer3DModel

    reference = make_reference()
    reference.save_pretrained(tmp_path / "ref")
    ours = load_transformer(tmp_path / "ref")
    # small shards, to exercise the index too
    save_transformer(ours, tmp_path / "ours", max_shard_bytes=64 * 1024)
    assert (tmp_path / "ours" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    reloaded = MotifVideoTransformer3DModel.from_pretrained(tmp_path / "ours").eval()
    for key, value in reference.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    _compare(reloaded, ours, make_inputs())


def test_sharded_diffusers_checkpoint_loads(tmp_path):
    reference = make_reference()
    reference.save_pretrained(tmp_path, max_shard_size="50KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    _compare(reference, load_transformer(tmp_path), make_inputs())


def test_pipeline_directory_loads_its_transformer(tmp_path):
    reference = make_reference()
    reference.save_pretrained(tmp_path / "transformer")
    _compare(reference, load_transformer(tmp_path), make_inputs())


# -- the original (shared K/V) layout -------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
@pytest.mark.parametrize("image_tokens", [3, None])
def test_original_single_file_matches_reference(tmp_path, prefix, image_tokens):
    from motif_video import get_preset

    reference, original = shared_form_reference()
    file = tmp_path / "motif.safetensors"
    save_file({prefix + k: v for k, v in original.items()}, str(file))
    # The file cannot show head size, decoder depth or RoPE: they come from a base config.
    ours = load_transformer(file, config=get_preset("debug"))
    assert ours.cfg.cross_attention_kv == "shared"
    assert (ours.cfg.num_dual_blocks, ours.cfg.num_single_blocks, ours.cfg.num_decoder_blocks) == (2, 2, 2)
    assert ours.cfg.cross_attention_dual and ours.cfg.cross_attention_single
    _compare(reference, ours, make_inputs(image_tokens=image_tokens))


def test_shared_form_round_trips_through_our_directory_layout(tmp_path):
    from motif_video import get_preset

    reference, original = shared_form_reference(enable_text_cross_attention_dual=False)
    save_file(original, str(tmp_path / "motif.safetensors"))
    ours = load_transformer(tmp_path / "motif.safetensors", config=get_preset("debug"))
    save_transformer(ours, tmp_path / "dir")
    again = load_transformer(tmp_path / "dir")
    assert again.cfg == ours.cfg
    for key, value in ours.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    _compare(reference, again, make_inputs())


def test_shared_and_separate_forms_differ():
    """The two forms are different functions (the query LayerNorm, the K/V weights)."""
    from motif_video import MotifVideoTransformer, get_preset

    cfg = get_preset("debug")
    shared = perturb_(MotifVideoTransformer(cfg)).eval()
    separate = perturb_(MotifVideoTransformer(cfg.replace(cross_attention_kv="separate"))).eval()
    inputs = make_inputs()
    with torch.no_grad():
        assert not torch.allclose(shared(**inputs).velocity, separate(**inputs).velocity, atol=1e-3)
    assert tiny_diffusers_kwargs()["num_layers"] == cfg.num_dual_blocks
