"""The transformer config: presets, validation, and the diffusers config.json round trip."""

from __future__ import annotations

import dataclasses

import pytest

from helpers import tiny_diffusers_kwargs
from motif_video import PRESETS, TransformerConfig, get_preset


def test_2b_preset_numbers():
    cfg = get_preset("motif-video-2b")
    assert (cfg.hidden_size, cfg.num_heads, cfg.head_dim) == (1536, 12, 128)
    assert (cfg.num_dual_blocks, cfg.num_single_blocks, cfg.num_decoder_blocks) == (12, 16, 8)
    assert (cfg.patch_size_t, cfg.patch_size, cfg.in_channels, cfg.out_channels) == (1, 2, 2 * 16 + 1, 16)
    assert cfg.cross_attention_single and not cfg.cross_attention_dual
    assert sum(cfg.rope_axes_dim) == cfg.head_dim


def test_debug_preset_differs_only_in_sizes():
    big, small = get_preset("motif-video-2b"), get_preset("debug")
    structural = {
        "in_channels",
        "out_channels",
        "patch_size",
        "patch_size_t",
        "mlp_ratio",
        "rope_theta",
        "cross_attention_single",
        "cross_attention_kv",
        "eps",
    }
    for name in structural:
        assert getattr(big, name) == getattr(small, name), name


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("debug").num_heads = 3


@pytest.mark.parametrize(
    "change,message",
    [
        ({"num_heads": 0}, "num_heads must be a positive integer, got 0"),
        ({"rope_axes_dim": (4, 6, 8)}, r"sums to 18, but RoPE must cover the whole head: head_dim=16"),
        ({"rope_axes_dim": (3, 6, 7)}, "three positive even numbers"),
        ({"cross_attention_kv": "both"}, "must be 'shared' or 'separate', got 'both'"),
        ({"num_decoder_blocks": -1}, "num_decoder_blocks must be an integer >= 0, got -1"),
        ({"image_dim": 0}, "image_dim must be a positive integer or None"),
        ({"mlp_ratio": 0}, "mlp_ratio must be > 0"),
        ({"num_dual_blocks": 0, "num_single_blocks": 0, "num_decoder_blocks": 0}, "at least one block"),
    ],
)
def test_invalid_configs_name_the_bad_value(change, message):
    with pytest.raises(ValueError, match=message):
        get_preset("debug").replace(**change)


def test_unknown_preset_lists_the_valid_ones():
    valid = r"\['debug', 'motif-video-2b', 'shapes-tiny'\]"
    with pytest.raises(ValueError, match=r"unknown transformer preset 'tiny'; choose one of " + valid):
        get_preset("tiny")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dict_round_trip_and_unknown_keys(name):
    cfg = get_preset(name)
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown transformer config keys \['hidden'\]"):
        TransformerConfig.from_dict({**cfg.to_dict(), "hidden": 3})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_diffusers_config_round_trip(name):
    cfg = get_preset(name)
    assert TransformerConfig.from_diffusers(cfg.to_diffusers()) == cfg
    separate = cfg.replace(cross_attention_kv="separate")
    assert "text_cross_attention_kv" not in separate.to_diffusers()
    assert TransformerConfig.from_diffusers(separate.to_diffusers()) == separate


def test_diffusers_reads_our_config_and_we_read_theirs():
    from diffusers import MotifVideoTransformer3DModel

    ours = get_preset("debug").replace(cross_attention_kv="separate")
    theirs = {k: v for k, v in ours.to_diffusers().items() if not k.startswith("_")}
    model = MotifVideoTransformer3DModel(**theirs)
    assert TransformerConfig.from_diffusers(dict(model.config)) == ours
    assert len(model.single_transformer_blocks) == ours.num_single_blocks + ours.num_decoder_blocks
    # absent keys take the diffusers class defaults, as diffusers itself does
    defaults = TransformerConfig.from_diffusers({})
    assert (defaults.num_heads, defaults.num_dual_blocks, defaults.num_decoder_blocks) == (24, 20, 0)
    assert TransformerConfig.from_diffusers(tiny_diffusers_kwargs()).num_single_blocks == 2


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"qk_norm": "layer_norm"}, "qk_norm='layer_norm' is not supported"),
        ({"num_layerz": 3}, r"unknown keys in MotifVideoTransformer3DModel config: \['num_layerz'\]"),
        ({"num_single_layers": 2, "num_decoder_layers": 3}, "exceeds num_single_layers=2"),
        ({"base_latent_size": 160}, "base_latent_size=160 is not supported"),
        ({"pooled_projection_dim": 768}, "pooled_projection_dim=768 is not supported: .* must equal text_embed_dim"),
    ],
)
def test_bad_diffusers_configs(bad, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig.from_diffusers({**tiny_diffusers_kwargs(), **bad})
