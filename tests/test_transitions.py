"""Curriculum stage transitions on the debug preset: each is an operation on checkpoints, tested."""

from __future__ import annotations

import pytest
import torch

from helpers import perturb_
from motif_video.config import get_preset
from motif_video.model.checkpoint_io import save_transformer
from motif_video.model.transformer import MotifVideoTransformer
from motif_video.training.flow import resolution_shift
from motif_video.training.transitions import start_from


def inputs(cfg, frames=3, size=16, text_len=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cfg.in_channels, frames, size, size, generator=g)
    return x, torch.full((1,), 600.0), torch.randn(1, text_len, cfg.text_dim, generator=g)


@pytest.fixture
def previous(tmp_path):
    """A 'trained' stage without Shared Cross-Attention (random weights, every gate open)."""
    cfg = get_preset("debug").replace(cross_attention_dual=False, cross_attention_single=False)
    model = perturb_(MotifVideoTransformer(cfg), seed=3, std=0.1)
    save_transformer(model, tmp_path / "stage")
    return model, tmp_path / "stage"


def test_inserting_shared_cross_attention_leaves_the_output_unchanged(previous):
    old, path = previous
    cfg = old.cfg.replace(cross_attention_single=True, cross_attention_dual=True)
    new, transition = start_from(path, cfg, torch.Generator().manual_seed(0))
    assert len(transition.inserted) == cfg.num_dual_blocks + cfg.num_single_blocks and not transition.rebuilt
    with torch.no_grad():
        before, after = old.eval()(*inputs(old.cfg)).velocity, new.eval()(*inputs(cfg)).velocity
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # and the inserted modules train: the output projection gets a gradient
    new.train()
    new(*inputs(cfg)).velocity.square().mean().backward()
    assert new.single_blocks[0].cross_attn.proj.weight.grad.abs().sum() > 0


def test_text_encoder_switch_rebuilds_only_the_text_projection(previous):
    old, path = previous
    cfg = old.cfg.replace(text_dim=48)
    new, transition = start_from(path, cfg, torch.Generator().manual_seed(0))
    assert transition.rebuilt == ("text_embed",)
    assert new.text_embed.fc1.weight.shape == (cfg.hidden_size, 48)
    old_state, new_state = old.state_dict(), new.state_dict()
    for key, value in new_state.items():
        if not key.startswith("text_embed."):
            assert torch.equal(value, old_state[key]), key
    assert transition.carried == len(new_state) - 4  # text_embed fc1/fc2 weight and bias are new
    new(*inputs(cfg))  # runs with the new encoder's width


def test_other_architecture_changes_and_removals_are_refused(previous):
    old, path = previous
    with pytest.raises(ValueError, match=r"num_heads 2 \(checkpoint\) vs 4 \(config\).*model.overrides.num_heads=2"):
        start_from(path, old.cfg.replace(num_heads=4), torch.Generator())
    inserted, _ = start_from(path, old.cfg.replace(cross_attention_single=True), torch.Generator())
    save_transformer(inserted, path.parent / "with-sca")
    with pytest.raises(ValueError, match="can insert Shared Cross-Attention, not remove it"):
        start_from(path.parent / "with-sca", old.cfg, torch.Generator())


def test_resolution_change_follows_the_token_count(previous):
    old, path = previous
    new, transition = start_from(path, old.cfg, torch.Generator())
    assert transition.carried == len(new.state_dict()) and not transition.inserted
    # RoPE positions come from the grid of each batch
    assert new(*inputs(old.cfg, frames=5, size=32)).velocity.shape[2:] == (5, 32, 32)
    tokens = [old.cfg.num_video_tokens(1, 16, 16), old.cfg.num_video_tokens(5, 32, 32)]
    assert tokens == [64, 1280] and resolution_shift(tokens[1], 1.0, 64) == pytest.approx(20**0.5)
