"""motif-video: an open implementation of the Motif-Video 2B text/image-to-video system."""

from motif_video.config import PRESETS, TransformerConfig, get_preset
from motif_video.model.checkpoint_io import CheckpointError, load_transformer, save_transformer
from motif_video.model.routing import Route, random_route
from motif_video.model.transformer import MotifVideoTransformer, TransformerOutput
from motif_video.sampling.pipeline import MotifVideoPipeline

__version__ = "0.1.0"

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
