"""motif-video: an open implementation of the Motif-Video 2B text/image-to-video system.

The names below load on first use (PEP 562), so `import motif_video` does not load torch: the `motif-video`
command's entry point has its Ctrl-C handler in place before torch starts to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_HOMES = {
    "PRESETS": "motif_video.config",
    "TransformerConfig": "motif_video.config",
    "get_preset": "motif_video.config",
    "CheckpointError": "motif_video.model.checkpoint_io",
    "load_transformer": "motif_video.model.checkpoint_io",
    "save_transformer": "motif_video.model.checkpoint_io",
    "Route": "motif_video.model.routing",
    "random_route": "motif_video.model.routing",
    "MotifVideoTransformer": "motif_video.model.transformer",
    "TransformerOutput": "motif_video.model.transformer",
    "MotifVideoPipeline": "motif_video.sampling.pipeline",
}

__all__ = [
    "PRESETS",
    "CheckpointError",
    "MotifVideoPipeline",
    "MotifVideoTransformer",
    "Route",
    "TransformerConfig",
    "TransformerOutput",
    "get_preset",
    "load_transformer",
    "random_route",
    "save_transformer",
]
assert sorted(__all__) == sorted(_HOMES)

if TYPE_CHECKING:  # what type checkers and editors see
    from motif_video.config import PRESETS, TransformerConfig, get_preset
    from motif_video.model.checkpoint_io import CheckpointError, load_transformer, save_transformer
    from motif_video.model.routing import Route, random_route
    from motif_video.model.transformer import MotifVideoTransformer, TransformerOutput
    from motif_video.sampling.pipeline import MotifVideoPipeline


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'motif_video' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
