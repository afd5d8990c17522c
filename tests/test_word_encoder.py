"""The word-level text encoder of small models, and pipelines that use it."""

from __future__ import annotations

import shutil

import pytest
import torch

from motif_video.data import world
from motif_video.model.word_encoder import WordTextEncoder
from motif_video.random_weights import build_random_pipeline
from motif_video.sampling.pipeline import MotifVideoPipeline


def test_tokenize_encode_and_unknown_words():
    encoder = WordTextEncoder(world.vocabulary(), dim=16, layers=1, heads=2)
    ids, mask = encoder.tokenize(["A red circle moves to the left.", ""])
    assert ids.shape == (2, 8) and mask.sum(1).tolist() == [8, 1]  # 7 words + </s>; the empty prompt: </s>
    states, mask = encoder.encode(["a red circle moves up"])
    assert states.shape == (1, 6, 16) and mask.all()
    with pytest.raises(ValueError, match=r"unknown words \['dragon', 'flies'\]: this model knows only: a, and"):
        encoder.tokenize(["a dragon flies"])
    # padding does not change the states of real tokens
    a, _ = encoder.encode(["a red circle moves up"])
    b, _ = encoder.encode(["a red circle moves up", "a green square moves to the left on a gray background"])
    torch.testing.assert_close(b[:1, :6], a, rtol=1e-5, atol=1e-5)


def test_untrained_encoder_keeps_words_apart():
    """At initialisation a word must still be visible in its token's state: if the residual
    branches drown the word vectors, every token leaves the encoder as nearly the same vector, the
    transformer learns to ignore the text, and the text encoder never gets a useful gradient (the
    first embedded model trained that way and ignored its prompts)."""
    torch.manual_seed(0)
    encoder = WordTextEncoder(world.vocabulary(), dim=64, layers=2, heads=4)
    a, _ = encoder.encode(["a red circle moves up on a gray background"])
    b, _ = encoder.encode(["a blue square moves up on a gray background"])
    similarity = torch.nn.functional.cosine_similarity(a[0], b[0], dim=-1)
    assert similarity[1] < 0.5 and similarity[2] < 0.5  # red/blue, circle/square
    assert similarity[4] > 0.8  # the same word at the same place ("up")
    within = torch.nn.functional.cosine_similarity(a[0, :, None], a[0, None], dim=-1)
    assert within[1, 2] < 0.5  # two different words of one prompt


def test_save_load_and_generate_through_the_pipeline(tmp_path):
    build_random_pipeline(tmp_path / "pipe")  # transformer text width 32
    shutil.rmtree(tmp_path / "pipe" / "text_encoder")
    shutil.rmtree(tmp_path / "pipe" / "tokenizer")
    encoder = WordTextEncoder(world.vocabulary(), dim=32, layers=1, heads=2)
    encoder.save_pretrained(tmp_path / "pipe" / "text_encoder")
    loaded = WordTextEncoder.from_pretrained(tmp_path / "pipe" / "text_encoder")
    for (name, a), b in zip(encoder.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    pipe = MotifVideoPipeline.from_pretrained(tmp_path / "pipe")
    assert isinstance(pipe.text_encoder, WordTextEncoder)
    out = pipe("a red circle moves to the left", height=32, width=48, frames=9, steps=2, progress=False)
    assert out.frames.shape == (1, 9, 32, 48, 3) and torch.isfinite(out.frames).all()
    with pytest.raises(ValueError, match="unknown words"):
        pipe("a purple elephant", height=32, width=48, frames=9, steps=2, progress=False)
