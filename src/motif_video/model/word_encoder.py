"""A word-level text encoder for small models (the embedded default), trained with the transformer.

Prompts are lower-cased and split into words (punctuation dropped); each word has a learned
embedding, and a small pre-norm transformer encoder with learned positions turns the sequence
into states. A word outside the vocabulary is an error that lists the words the model knows:
a small model trained on a closed world should say so rather than guess. Saved as
`text_encoder/config.json` (`_class_name: WordTextEncoder`) + `model.safetensors`, beside the
other components of a pipeline directory, with the same `encode(prompts)` interface as the
T5Gemma2 encoder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

PAD, END = "<pad>", "</s>"


class WordTextEncoder(nn.Module):
    def __init__(self, vocab: list[str], dim: int = 64, layers: int = 2, heads: int = 4, max_len: int = 32) -> None:
        super().__init__()
        self.vocab = [PAD, END, *sorted(set(vocab) - {PAD, END})]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.dim, self.layers, self.heads, self.max_len = dim, layers, heads, max_len
        self.embed = nn.Embedding(len(self.vocab), dim)
        self.position = nn.Parameter(torch.zeros(max_len, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        # Unit-scale word vectors: the residual branches must not drown them, or every token leaves
        # the encoder as the same vector and the transformer learns to ignore the text.
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.normal_(self.position, std=0.2)
        self.image_processor = None  # no vision tower: image-to-video needs the T5Gemma2 encoder

    def tokenize(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """ids [B, S] and mask [B, S]; every prompt ends with </s>, so the empty prompt has one token."""
        rows = []
        for prompt in prompts:
            words = re.findall(r"[a-z0-9]+", prompt.lower())
            unknown = sorted({w for w in words if w not in self.index})
            if unknown:
                known = ", ".join(w for w in self.vocab if w not in (PAD, END))
                # a word is shown to 40 characters and at most 10 of them: an error never echoes a whole payload
                shown = [w if len(w) <= 40 else w[:37] + "..." for w in unknown[:10]]
                more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
                raise ValueError(f"unknown words {shown}{more}: this model knows only: {known}")
            if len(words) + 1 > self.max_len:
                raise ValueError(f"prompt has {len(words)} words; this model reads at most {self.max_len - 1}")
            rows.append([self.index[w] for w in words] + [self.index[END]])
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.index[PAD], dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids, ids != self.index[PAD]

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        x = self.embed(ids) + self.position[: ids.shape[1]]
        return self.norm(self.encoder(x, src_key_padding_mask=~mask))

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        ids, mask = self.tokenize(prompts)
        device = self.embed.weight.device
        ids, mask = ids.to(device), mask.to(device)
        return self(ids, mask), mask

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def encode_image(self, image: Tensor) -> Tensor:
        raise ValueError("this text encoder has no vision tower: image-to-video needs the T5Gemma2 encoder")

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "_class_name": "WordTextEncoder",
            "vocab": self.vocab,
            "dim": self.dim,
            "layers": self.layers,
            "heads": self.heads,
            "max_len": self.max_len,
        }
        (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> WordTextEncoder:
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        model = cls(config["vocab"], config["dim"], config["layers"], config["heads"], config["max_len"])
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        return model.to(device).eval().requires_grad_(False)
