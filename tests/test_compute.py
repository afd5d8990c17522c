"""The compute planner's FLOP count against torch's FLOP counter on the debug preset."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from motif_video.config import get_preset
from motif_video.model.routing import Route
from motif_video.model.transformer import MotifVideoTransformer
from motif_video.training.compute import Routing, forward_flops, gpu_hours, training_flops


def counted(model, *args, backward: bool = False, **kwargs) -> int:
    # The math backend: the counter has no formula for the CPU flash kernel, it sees the math one's products.
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        out = model(*args, **kwargs).velocity
        if backward:
            out.sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"cross_attention_kv": "separate"}, {"cross_attention_dual": False}, {"num_decoder_blocks": 0}],
)
def test_counted_flops_match_the_formula(overrides):
    torch.manual_seed(0)
    cfg = get_preset("debug").replace(**overrides)
    model = MotifVideoTransformer(cfg)
    x, t = torch.randn(1, cfg.in_channels, 5, 16, 24), torch.full((1,), 500.0)
    text, image = torch.randn(1, 9, cfg.text_dim), torch.randn(1, 4, cfg.image_dim)
    tokens = cfg.num_video_tokens(5, 16, 24)
    assert counted(model, x, t, text) == pytest.approx(forward_flops(cfg, tokens, 9), rel=1e-9)
    assert counted(model, x, t, text, None, image) == pytest.approx(
        forward_flops(cfg, tokens, 9, image_tokens=4), rel=1e-9
    )
    keep = tokens // 2
    route = Route(1, 2, torch.randperm(tokens)[:keep].sort().values[None])
    routed = forward_flops(cfg, tokens, 9, routing=Routing(1, 2, keep / tokens))
    assert counted(model, x, t, text, route=route) == pytest.approx(routed, rel=1e-9)
    assert routed < forward_flops(cfg, tokens, 9)
    # forward + backward: the planner's 3x is within 5% of the counted step
    assert counted(model, x, t, text, backward=True) == pytest.approx(training_flops(cfg, tokens, 9), rel=0.05)


def test_gpu_hours_and_bad_input():
    assert gpu_hours(989e12 * 0.5 * 3600, "h200", 0.5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown GPU 'tpu'"):
        gpu_hours(1.0, "tpu", 0.4)
    with pytest.raises(ValueError, match="MFU must be in"):
        gpu_hours(1.0, "h100", 1.5)
