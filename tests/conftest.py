"""Fixtures shared by the tests (helpers live in helpers.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def debug_model():
    from motif_video import MotifVideoTransformer, get_preset

    model = MotifVideoTransformer(get_preset("debug"))
    model.init_weights(torch.Generator().manual_seed(0))
    return model.eval()
