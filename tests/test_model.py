"""Properties of our transformer that document its design."""

from __future__ import annotations

import pytest
import torch

from helpers import make_inputs, perturb_
from motif_video import MotifVideoTransformer, Route, get_preset, random_route
from motif_video.model.attention import attention, check_backend
from motif_video.model.checkpoint_io import load_transformer, save_transformer
from motif_video.model.layers import RotaryEmbedding3D, apply_rope, grid_positions


def _perturbed(cfg=None, seed=0):
    return perturb_(MotifVideoTransformer(cfg or get_preset("debug")), seed=seed).eval()


def test_output_shape_is_input_shape_with_out_channels():
    model = _perturbed()
    inputs = make_inputs(frames=5, height=8, width=6)
    with torch.no_grad():
        out = model(**inputs)
    assert out.velocity.shape == (2, 16, 5, 8, 6)
    assert out.features == {}


def test_2b_preset_builds_on_meta_with_about_1_9b_parameters():
    with torch.device("meta"):
        model = MotifVideoTransformer(get_preset("motif-video-2b"))
    n = model.num_parameters()
    assert 1.8e9 <= n <= 2.0e9, n
    assert all(p.is_meta for p in model.parameters())
    assert len(model.dual_blocks) == 12 and len(model.single_blocks) == 16 and len(model.decoder_blocks) == 8
    assert all(b.cross_attn is not None for b in model.single_blocks)
    assert all(b.cross_attn is None for b in [*model.dual_blocks, *model.decoder_blocks])


def test_meta_construction_then_init_matches_direct_init():
    cfg = get_preset("debug")
    direct = MotifVideoTransformer(cfg)
    direct.init_weights(torch.Generator().manual_seed(7))
    with torch.device("meta"):
        lazy = MotifVideoTransformer(cfg)
    lazy.to_empty(device="cpu")
    lazy.init_weights(torch.Generator().manual_seed(7))
    for (name, a), b in zip(direct.state_dict().items(), lazy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_blocks_are_identity_and_velocity_zero_at_init(debug_model):
    inputs = make_inputs()
    x = torch.randn(2, 18, debug_model.cfg.hidden_size)
    text = torch.randn(2, 7, debug_model.cfg.hidden_size)
    from motif_video.model.blocks import BlockInputs

    c = torch.randn(2, debug_model.cfg.hidden_size)
    rope = debug_model.rope((3, 3, 2), torch.device("cpu"))
    block_inputs = BlockInputs(c, rope, None, None, 0, "sdpa")
    with torch.no_grad():
        for block in [*debug_model.dual_blocks, *debug_model.single_blocks, *debug_model.decoder_blocks]:
            out_x, out_text = block(x, text, block_inputs)
            assert torch.equal(out_x, x) and torch.equal(out_text, text)
        velocity = debug_model(**inputs).velocity
    assert torch.count_nonzero(velocity) == 0


def test_padded_text_tokens_do_not_matter():
    model = _perturbed()
    inputs = make_inputs(valid=(5, 3))
    changed = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"].clone()}
    changed["encoder_hidden_states"][0, 5:] = 100.0  # padding of sample 0
    changed["encoder_hidden_states"][1, 3:] = -7.0  # padding of sample 1
    with torch.no_grad():
        a, b = model(**inputs).velocity, model(**changed).velocity
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # ... while a real token does matter
    changed["encoder_hidden_states"][0, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(**changed).velocity[0], a[0], atol=1e-4)


def test_samples_in_a_batch_are_independent():
    model = _perturbed()
    inputs = make_inputs(batch=2)
    one = {k: (v[:1] if v is not None else None) for k, v in inputs.items()}
    with torch.no_grad():
        torch.testing.assert_close(model(**one).velocity, model(**inputs).velocity[:1], rtol=1e-5, atol=1e-5)


def test_route_none_equals_route_keeping_every_token():
    model = _perturbed()
    inputs = make_inputs()
    keep_all = torch.arange(18).expand(2, -1).contiguous()
    with torch.no_grad():
        plain = model(**inputs).velocity
        for start, end in [(0, 3), (1, 1), (4, 5), (0, 0)]:
            routed = model(**inputs, route=Route(start, end, keep_all)).velocity
            torch.testing.assert_close(routed, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("start,end", [(1, 2), (5, 5)])  # inside the encoder; inside the decoder
def test_routed_tokens_skip_the_routed_blocks(start, end):
    """Tokens not kept leave block `end` exactly as they entered block `start`."""
    model = _perturbed()
    inputs = make_inputs()
    route = random_route(2, 18, keep_ratio=0.5, start=start, end=end, generator=torch.Generator().manual_seed(0))
    assert route.keep.shape == (2, 9)
    assert torch.equal(route.keep, route.keep.sort(dim=1).values)
    with torch.no_grad():
        out = model(**inputs, route=route, capture=[start - 1, end])
        plain = model(**inputs).velocity
    before, after = out.features[start - 1], out.features[end]
    for b in range(2):
        skipped = sorted(set(range(18)) - set(route.keep[b].tolist()))
        kept = route.keep[b]
        assert torch.equal(after[b, skipped], before[b, skipped])
        assert not torch.allclose(after[b, kept], before[b, kept])
    assert not torch.allclose(out.velocity, plain)


def test_route_gather_scatter_round_trip():
    x = torch.randn(2, 10, 4)
    route = random_route(2, 10, 0.3, 0, 0, generator=torch.Generator().manual_seed(1))
    kept = route.gather(x)
    assert torch.equal(route.scatter(x, kept), x)
    assert torch.equal(kept, torch.stack([x[b, route.keep[b]] for b in range(2)]))


def test_bad_routes_are_rejected():
    model = _perturbed()
    inputs = make_inputs()
    keep = torch.arange(9).expand(2, -1).contiguous()
    with pytest.raises(ValueError, match="encoder/decoder boundary"):
        model(**inputs, route=Route(3, 4, keep))
    with pytest.raises(ValueError, match="start <= end"):
        model(**inputs, route=Route(2, 9, keep))
    with pytest.raises(ValueError, match=r"lie in \[0, 18\)"):
        model(**inputs, route=Route(0, 1, keep + 10))
    with pytest.raises(ValueError, match="keep_ratio"):
        random_route(2, 18, 0.0, 0, 1)


def test_activation_checkpointing_gives_same_output_and_gradients():
    model = _perturbed().train()
    inputs = make_inputs()
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.activation_checkpointing = flag
        model(**inputs).velocity.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_attention_backends_agree_and_unknown_ones_are_rejected():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    mask = torch.tensor([[True] * 4 + [False], [True] * 5])[:, None, None, :]
    for m in (None, mask):
        torch.testing.assert_close(attention(q, k, v, m, "sdpa"), attention(q, k, v, m, "math"), rtol=1e-5, atol=1e-5)
    assert attention(q, k, v).shape == (2, 5, 24)
    with pytest.raises(ValueError, match="unknown attention backend 'cuda'"):
        check_backend("cuda")
    model = _perturbed()
    inputs = make_inputs()
    with torch.no_grad():
        a = model(**inputs).velocity
        model.set_attention_backend("math")
        torch.testing.assert_close(model(**inputs).velocity, a, rtol=1e-4, atol=1e-4)


def test_rope_rotates_pairs_by_position_and_preserves_norms():
    rope = RotaryEmbedding3D((2, 2, 4), theta=256.0)
    cos, sin = rope((2, 3, 4), torch.device("cpu"))
    assert cos.shape == (24, 8)
    # token 0 sits at the origin: no rotation
    x = torch.randn(1, 1, 24, 8)
    y = apply_rope(x, (cos, sin))
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    # token (t=1, h=0, w=0) rotates only the T-axis pair, by angle 1 (lowest frequency index 0)
    t1 = 12
    a = torch.tensor(1.0)
    expected = torch.stack(
        [x[0, 0, t1, 0] * a.cos() - x[0, 0, t1, 1] * a.sin(), x[0, 0, t1, 1] * a.cos() + x[0, 0, t1, 0] * a.sin()]
    )
    torch.testing.assert_close(y[0, 0, t1, :2], expected)
    torch.testing.assert_close(y[0, 0, t1, 2:], x[0, 0, t1, 2:])


def test_inserting_cross_attention_does_not_change_the_output():
    """Zero output projection: a model with freshly inserted cross-attention equals the model without."""
    cfg = get_preset("debug").replace(cross_attention_dual=False, cross_attention_single=False)
    without = _perturbed(cfg)
    with_cross = MotifVideoTransformer(cfg.replace(cross_attention_single=True, cross_attention_dual=True))
    with_cross.init_weights()
    missing, unexpected = with_cross.load_state_dict(without.state_dict(), strict=False)
    assert not unexpected and all(".cross_attn." in k for k in missing)
    inputs = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(with_cross.eval()(**inputs).velocity, without(**inputs).velocity)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"hidden_states": torch.randn(2, 32, 3, 6, 4)}, r"hidden_states must have shape \[B, 33, F, H, W\]"),
        ({"hidden_states": torch.randn(2, 33, 3, 5, 4)}, "must be divisible by the patch size"),
        ({"timestep": torch.ones(3)}, r"timestep must be a scalar or have shape \[2\]"),
        ({"encoder_hidden_states": torch.randn(2, 7, 31)}, r"encoder_hidden_states must have shape \[2, S, 32\]"),
        ({"encoder_attention_mask": torch.ones(2, 6)}, "encoder_attention_mask must have shape"),
        ({"image_embeds": torch.randn(2, 3, 5)}, r"image_embeds must have shape \[2, M, 24\]"),
    ],
)
def test_bad_inputs_get_clear_errors(change, message, debug_model):
    with pytest.raises(ValueError, match=message):
        debug_model(**{**make_inputs(), **change})


def test_scalar_timestep_broadcasts():
    model = _perturbed()
    inputs = make_inputs()
    with torch.no_grad():
        a = model(**{**inputs, "timestep": torch.tensor(300.0)}).velocity
        b = model(**{**inputs, "timestep": torch.tensor([300.0, 300.0])}).velocity
    torch.testing.assert_close(a, b)


def test_extra_trailing_padding_changes_nothing():
    """Trailing padding is trimmed before the blocks; the result equals the unpadded call."""
    model = _perturbed()
    inputs = make_inputs(valid=(5, 3))
    padded = dict(inputs)
    padded["encoder_hidden_states"] = torch.cat([inputs["encoder_hidden_states"], torch.randn(2, 40, 32)], dim=1)
    padded["encoder_attention_mask"] = torch.cat([inputs["encoder_attention_mask"], torch.zeros(2, 40)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(**padded).velocity, model(**inputs).velocity, rtol=1e-5, atol=1e-5)


def test_attention_gets_no_mask_once_the_padding_is_trimmed(monkeypatch):
    """One padded prompt: after trimming every key is valid, so no block passes a mask (on a GPU a
    mask rules out flash attention); prompts of different lengths still get one."""
    import motif_video.model.blocks as blocks

    masks = []

    def spy(q, k, v, mask=None, *args):
        masks.append(mask)
        return attention(q, k, v, mask, *args)

    monkeypatch.setattr(blocks, "attention", spy)
    model = _perturbed()
    with torch.no_grad():
        model(**make_inputs(batch=1, valid=(5,)))
        assert masks and all(m is None for m in masks)
        masks.clear()
        model(**make_inputs(valid=(5, 3)))
    assert any(m is not None for m in masks)


def test_grid_positions_give_every_token_its_own_place():
    table = grid_positions((3, 4, 5), (4, 6, 6), torch.device("cpu"))
    assert table.shape == (60, 16) and table.abs().max() <= 1
    assert len({tuple(row.tolist()) for row in table}) == 60  # every (t, y, x) distinct
    grid = table.reshape(3, 4, 5, 16)
    torch.testing.assert_close(grid[:, :1, :1, :4].expand(3, 4, 5, 4), grid[..., :4])  # T part: only t
    torch.testing.assert_close(grid[:1, :, :1, 4:10].expand(3, 4, 5, 6), grid[..., 4:10])  # H part: only y
    assert torch.equal(grid[0, 0, 0], torch.tensor([0.0, 0, 1, 1] + [0.0, 0, 0, 1, 1, 1] * 2))  # sin 0, cos 0


def test_absolute_positions_add_no_weights_change_the_output_and_round_trip(tmp_path):
    """The flag adds a fixed table (the same weights load), changes what the model computes,
    is written to config.json (ours only) and read back; the released layout does not carry it."""
    plain = _perturbed()
    cfg = plain.cfg.replace(absolute_positions=True)
    model = MotifVideoTransformer(cfg).eval()
    model.load_state_dict(plain.state_dict(), strict=True)
    inputs = make_inputs()
    with torch.no_grad():
        out = model(**inputs).velocity
        assert (out - plain(**inputs).velocity).abs().max() > 1e-3
        assert cfg.to_diffusers()["absolute_positions"] is True and "absolute_positions" not in plain.cfg.to_diffusers()
        assert type(cfg).from_diffusers(cfg.to_diffusers()) == cfg
        loaded = load_transformer(save_transformer(model, tmp_path / "transformer"))
        assert loaded.cfg.absolute_positions
        torch.testing.assert_close(loaded(**inputs).velocity, out)
    with pytest.raises(ValueError, match="absolute_positions must be true or false, got 'yes'"):
        cfg.replace(absolute_positions="yes")


def test_pooled_text_steers_the_modulation_and_round_trips(tmp_path):
    """With `pooled_text` the prompt's mean hidden state (padding left out) is added to the
    timestep embedding: a zero-initialised pooled projection changes nothing, a trained one makes
    the output depend on the prompt through every block; padding still does not matter; the
    projection is saved under HunyuanVideo's name and `pooled_projection_dim` and read back."""
    plain = _perturbed()
    cfg = plain.cfg.replace(pooled_text=True)
    model = MotifVideoTransformer(cfg).eval()
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == [f"pooled_embed.fc{i}.{p}" for i in (1, 2) for p in ("bias", "weight")]
    inputs = make_inputs()
    with torch.no_grad():
        for p in model.pooled_embed.parameters():
            p.zero_()
        torch.testing.assert_close(model(**inputs).velocity, plain(**inputs).velocity)
        perturb_(model.pooled_embed, seed=3)
        out = model(**inputs).velocity
        assert (out - plain(**inputs).velocity).abs().max() > 1e-3
        padded = dict(inputs)
        padded["encoder_hidden_states"] = torch.cat([inputs["encoder_hidden_states"], torch.randn(2, 9, 32)], dim=1)
        padded["encoder_attention_mask"] = torch.cat([inputs["encoder_attention_mask"], torch.zeros(2, 9)], dim=1)
        torch.testing.assert_close(model(**padded).velocity, out, rtol=1e-5, atol=1e-5)
        config = cfg.to_diffusers()
        assert config["pooled_projection_dim"] == cfg.text_dim
        assert "pooled_projection_dim" not in plain.cfg.to_diffusers()
        assert type(cfg).from_diffusers(config) == cfg
        directory = save_transformer(model, tmp_path / "transformer")
        assert load_transformer(directory).cfg.pooled_text
        torch.testing.assert_close(load_transformer(directory)(**inputs).velocity, out)


def _read_as(prediction: str, timesteps: list[float]):
    """(the last layer's raw output, the same weights' velocity under `prediction`, x_t, the model)."""
    velocity_model = _perturbed()
    model = MotifVideoTransformer(velocity_model.cfg.replace(prediction=prediction))
    model.load_state_dict(velocity_model.state_dict())
    inputs = make_inputs(frames=5, height=8, width=6)
    inputs["timestep"] = torch.tensor(timesteps)
    with torch.no_grad():
        raw, velocity = velocity_model(**inputs).velocity, model(**inputs).velocity
    return raw, velocity, inputs["hidden_states"][:, :16], model, velocity_model


def test_sample_prediction_returns_the_velocity_of_its_x0():
    x0, velocity, x_t, sample_model, velocity_model = _read_as("sample", [300.0, 10.0])
    torch.testing.assert_close(velocity[0], (x_t[0] - x0[0]) / 0.3)
    torch.testing.assert_close(velocity[1], (x_t[1] - x0[1]) / 0.05)  # 1/t capped at t = 0.05
    config = sample_model.cfg.to_diffusers()
    assert config["prediction"] == "sample" and "prediction" not in velocity_model.cfg.to_diffusers()
    assert type(sample_model.cfg).from_diffusers(config) == sample_model.cfg
    with pytest.raises(ValueError, match=r"prediction must be one of \('velocity', 'sample', 'preconditioned'\)"):
        velocity_model.cfg.replace(prediction="noise")


def test_preconditioned_prediction_skips_the_input():
    """v = c_skip x_t + c_out F: at t = 1 the noise passes through, at t = 1/2 no skip and scale
    sqrt(2); the skip is the one that minimises the variance of F's target (unit-variance data)."""
    raw, velocity, x_t, model, _ = _read_as("preconditioned", [1000.0, 500.0])
    torch.testing.assert_close(velocity[0], x_t[0] + raw[0])
    torch.testing.assert_close(velocity[1], 2**0.5 * raw[1])
    # the skip minimises E|v - c x_t|^2 over c, and that minimum is c_out^2, for x0, noise ~ N(0, 1)
    x0, noise = torch.randn(2, 200_000, generator=torch.Generator().manual_seed(0))
    for t in (0.1, 0.3, 0.8):
        xt, v = (1 - t) * x0 + t * noise, noise - x0
        d = t**2 + (1 - t) ** 2
        best = min((v - c * xt).var().item() for c in torch.linspace(-1, 1, 401).tolist())
        assert abs((v - (2 * t - 1) / d * xt).var().item() - best) < 1e-3 and abs(best - 1 / d) < 0.02
    assert type(model.cfg).from_diffusers(model.cfg.to_diffusers()).prediction == "preconditioned"


def test_half_precision_keeps_the_conditioning_path_in_float32(tmp_path):
    from motif_video import load_transformer, save_transformer

    model = _perturbed()
    save_transformer(model, tmp_path / "t")
    half = load_transformer(tmp_path / "t", dtype=torch.bfloat16)
    kept = half.float32_modules()
    assert "time_embed" in kept and "dual_blocks.0.video_mod" in kept and "single_blocks.0.modulation" in kept
    for name, p in half.named_parameters():
        expected = torch.float32 if any(name.startswith(k + ".") for k in kept) else torch.bfloat16
        assert p.dtype == expected, name
    # the float32 copies are the checkpoint's values, not bfloat16-rounded ones
    torch.testing.assert_close(half.time_embed.fc1.weight, model.time_embed.fc1.weight, rtol=0, atol=0)
    inputs = make_inputs()
    with torch.no_grad():
        reference = model(**inputs).velocity
        out = half(
            **{k: v.bfloat16() if torch.is_floating_point(v) and k != "timestep" else v for k, v in inputs.items()}
        ).velocity
    assert out.dtype == torch.bfloat16
    assert (out.float() - reference).abs().max() < 0.05 * reference.abs().max()
