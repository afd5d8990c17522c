"""Image descriptors for shot re-merging and near-duplicates, and the aesthetic predictor.

The default descriptor needs no weights: the frame's colour layout (a 16 x 16 RGB thumbnail, its
mean removed, unit length), which survives re-encoding and resizing and tells scenes apart. Given
a local SigLIP folder (the report stitches shots with SigLIP embeddings), its pooled embedding is
used instead. The aesthetic score is Aesthetic Predictor V2.5: SigLIP's pooled embedding, unit
length, through a five-layer MLP head; it runs only from local files.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np


def colour_layout(frames: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] uint8 -> [N, 768] float32 unit vectors (zero for a flat frame)."""
    from PIL import Image

    out = []
    for frame in frames:
        thumb = np.asarray(Image.fromarray(frame).resize((16, 16), Image.BOX), dtype=np.float32).reshape(-1)
        thumb -= thumb.mean()
        norm = np.linalg.norm(thumb)
        out.append(thumb / norm if norm > 1e-3 else np.zeros_like(thumb))
    return np.stack(out).astype(np.float32)


class SiglipEncoder:
    """A local SigLIP vision tower: pooled embeddings of RGB frames."""

    def __init__(self, folder: str | Path) -> None:
        import torch
        from transformers import SiglipImageProcessor, SiglipVisionModel

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"SigLIP folder {folder} has no config.json")
        self.model = SiglipVisionModel.from_pretrained(folder).eval()
        size = self.model.config.image_size
        if (folder / "preprocessor_config.json").is_file():
            self.processor = SiglipImageProcessor.from_pretrained(folder)
        else:
            self.processor = SiglipImageProcessor(size={"height": size, "width": size})
        self.torch = torch

    def pooled(self, frames: np.ndarray):
        from PIL import Image

        pixels = self.processor(images=[Image.fromarray(f) for f in frames], return_tensors="pt").pixel_values
        with self.torch.inference_mode():
            return self.model(pixel_values=pixels).pooler_output.float()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        pooled = self.pooled(frames)
        return (pooled / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-6)).numpy().astype(np.float32)


@cache
def embedder(folder: str):
    """The descriptor function for `shots.embedder`: SigLIP from a folder, or the colour layout ("")."""
    return SiglipEncoder(folder) if folder else colour_layout


class AestheticPredictor:
    """Aesthetic Predictor V2.5 from local files: a SigLIP folder and the head's state dict
    (keys scoring_head.{0,2,4,6,8}.weight/bias, as its release names them). Scores are about 1-10."""

    def __init__(self, encoder: str | Path, head: str | Path) -> None:
        import torch
        from torch import nn

        self.encoder = SiglipEncoder(encoder)
        head = Path(head)
        if not head.is_file():
            raise FileNotFoundError(f"aesthetic head {head} does not exist")
        if head.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(head)
        else:  # the release's .pth: tensors only, read without running pickled code
            state = torch.load(head, map_location="cpu", weights_only=True)
        width = self.encoder.model.config.hidden_size
        dims = [width, 1024, 128, 64, 16, 1]
        layers: list[nn.Module] = []
        for i in range(5):  # Linear, Dropout, ... as released (dropout is inert in eval)
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < 4:
                layers.append(nn.Dropout(0.0))
        self.head = nn.Sequential(*layers).eval()
        state = {k.removeprefix("scoring_head."): v for k, v in state.items()}
        missing, unexpected = self.head.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"aesthetic head {head}: missing keys {missing}, unexpected keys {unexpected}")
        self.torch = torch

    def __call__(self, frames: np.ndarray) -> float:
        pooled = self.encoder.pooled(frames)
        with self.torch.inference_mode():
            scores = self.head(pooled / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-6))
        return float(scores.mean())


@cache
def aesthetic_predictor(encoder: str, head: str) -> AestheticPredictor:
    return AestheticPredictor(encoder, head)
