"""Text (and I2V image) conditioning: T5Gemma2's encoder, loaded from a local directory.

`encode(prompts)` -> (embeddings [B, S, Dt], mask [B, S]): prompts are tokenised, padded to
`max_length` (512 for the released model) and run through the encoder; the mask marks real
tokens. `encode_image(image)` -> [B, M, Di]: the first frame through the encoder's own SigLIP
vision tower (raw last hidden state), the image tokens the transformer prepends to the text.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor


def load_text_encoder(root: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """The text encoder of a pipeline directory: T5Gemma2 (released model), our word-level encoder
    (small models) or a sentence-embedding model (early curriculum stages), told apart by
    `text_encoder/config.json`."""
    config = json.loads((Path(root) / "text_encoder" / "config.json").read_text())
    if config.get("_class_name") == "WordTextEncoder":
        from motif_video.model.word_encoder import WordTextEncoder

        return WordTextEncoder.from_pretrained(Path(root) / "text_encoder", device=device).to(dtype)
    if not str(config.get("model_type", "")).startswith("t5gemma2"):
        return SentenceTextEncoder.from_pretrained(root, dtype=dtype, device=device)
    return T5Gemma2TextEncoder.from_pretrained(root, dtype=dtype, device=device)


class _FrozenEncoder:
    """A frozen transformers encoder with its tokenizer: where it lives and in which dtype."""

    def __init__(self, tokenizer, encoder, image_processor=None, max_length: int = 512) -> None:
        self.tokenizer = tokenizer
        self.encoder = encoder.eval().requires_grad_(False)
        self.image_processor = image_processor
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    def to(self, device: str | torch.device):
        self.encoder.to(device)
        return self


class SentenceTextEncoder(_FrozenEncoder):
    """A sentence-level embedding model (a transformers encoder, mean-pooled over the real tokens):
    one vector per prompt, returned as a one-token sequence [B, 1, D] with its mask. The report's
    early stages condition on such a model before switching to T5Gemma2 (its name is not public;
    any `AutoModel` encoder in a folder with text_encoder/ and tokenizer/ works)."""

    @classmethod
    def from_pretrained(
        cls, root: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> SentenceTextEncoder:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging

        root = Path(root)
        tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # an encoder saved without its unused pooler head is not news
        try:
            encoder = AutoModel.from_pretrained(root / "text_encoder", dtype=dtype).to(device)
        finally:
            logging.set_verbosity(verbosity)
        return cls(tokenizer, encoder, max_length=128)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        tokens = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        weights = tokens.attention_mask[..., None].to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return pooled[:, None], torch.ones(len(prompts), 1, dtype=torch.bool, device=hidden.device)

    def encode_image(self, image: Tensor) -> Tensor:
        raise ValueError("a sentence-embedding text encoder has no vision tower: image-to-video needs T5Gemma2")


class T5Gemma2TextEncoder(_FrozenEncoder):
    @classmethod
    def from_pretrained(
        cls, root: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", max_length=512
    ) -> T5Gemma2TextEncoder:
        """From a pipeline directory: `tokenizer/`, `text_encoder/`, optional `feature_extractor/`."""
        from transformers import AutoTokenizer, SiglipImageProcessor, T5Gemma2Encoder

        root = Path(root)
        tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
        encoder = T5Gemma2Encoder.from_pretrained(root / "text_encoder", dtype=dtype).to(device)
        processor = None
        if (root / "feature_extractor" / "preprocessor_config.json").is_file():
            processor = SiglipImageProcessor.from_pretrained(root / "feature_extractor")
        return cls(tokenizer, encoder, processor, max_length)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        ).to(self.device)
        hidden = self.encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)[0]
        return hidden, tokens.attention_mask.bool()

    @torch.no_grad()
    def encode_image(self, image: Tensor) -> Tensor:
        """image [B, 3, H, W] in [0, 1] -> SigLIP tokens [B, M, Di]."""
        if self.image_processor is None:
            raise ValueError("image-to-video needs feature_extractor/preprocessor_config.json in the weights directory")
        pixels = self.image_processor.preprocess(
            images=image.float(),
            do_resize=True,
            do_rescale=False,
            do_normalize=True,
            do_convert_rgb=True,
            return_tensors="pt",
        )
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        return self.encoder.vision_tower(**pixels).last_hidden_state
