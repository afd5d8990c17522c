"""Random-weight Motif-Video pipelines in the official directory layout, at any size.

The components are the real classes (T5Gemma2 encoder with its SigLIP vision tower, a word-level
tokenizer, diffusers' AutoencoderKLWan and MotifVideoTransformer3DModel, FlowMatchEuler, a
diffusers guider), so loading code, shapes and numerics are exercised exactly as with released
weights, offline and in seconds. Tests, benchmarks and smoke checks use them; nothing learned is
in them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from motif_video.config import TransformerConfig

WORDS = (
    "<pad> </s> <unk> a the red green blue yellow circle square triangle moves left right up down on gray background"
).split()


def word_tokenizer(words: list[str] | tuple[str, ...] = WORDS):
    """A word-level tokenizer (no hub needed) with <pad>, </s> (appended) and <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = ["<pad>", "</s>", "<unk>", *sorted(set(words) - {"<pad>", "</s>", "<unk>"})]
    word_level = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    # every prompt ends with </s>, so the empty prompt is one token, as with real tokenizers
    word_level.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def t5gemma2_encoder(text_dim: int, vocab_size: int, image_dim: int | None = 24):
    from transformers import T5Gemma2Encoder
    from transformers.models.siglip.configuration_siglip import SiglipVisionConfig
    from transformers.models.t5gemma2.configuration_t5gemma2 import T5Gemma2EncoderConfig, T5Gemma2TextConfig

    text_config = T5Gemma2TextConfig(
        vocab_size=vocab_size,
        hidden_size=text_dim,
        intermediate_size=2 * text_dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        dropout_rate=0.0,
        sliding_window=16,
    )
    vision_config = SiglipVisionConfig(
        hidden_size=image_dim or 24,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    return T5Gemma2Encoder(
        T5Gemma2EncoderConfig(text_config=text_config, vision_config=vision_config, mm_tokens_per_image=4)
    ).eval()


def build_random_text_encoder(
    path: str | Path, kind: str, dim: int, words: list[str] | tuple[str, ...] = WORDS
) -> Path:
    """A random text encoder folder (text_encoder/ + tokenizer/) of `kind` "t5gemma2" or "sentence"
    (a small BERT, mean-pooled by SentenceTextEncoder), for curricula and tests."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(len(words) * 7 + dim)
    tokenizer = word_tokenizer(words)
    if kind == "t5gemma2":
        encoder = t5gemma2_encoder(dim, len(tokenizer))
    elif kind == "sentence":
        encoder = BertModel(
            BertConfig(
                vocab_size=len(tokenizer),
                hidden_size=dim,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=2 * dim,
                max_position_embeddings=64,
            ),
            add_pooling_layer=False,
        ).eval()
    else:
        raise ValueError(f"text encoder kind must be 't5gemma2' or 'sentence', got {kind!r}")
    path = Path(path)
    encoder.save_pretrained(path / "text_encoder")
    tokenizer.save_pretrained(path / "tokenizer")
    return path


def tiny_transformer_config(latent_channels: int = 4, text_dim: int = 32, image_dim: int = 24) -> TransformerConfig:
    """Every stage, Shared Cross-Attention in the single blocks (diffusers' separate form)."""
    return TransformerConfig(
        in_channels=2 * latent_channels + 1,
        out_channels=latent_channels,
        num_heads=2,
        head_dim=16,
        num_dual_blocks=2,
        num_single_blocks=2,
        num_decoder_blocks=2,
        text_dim=text_dim,
        image_dim=image_dim,
        rope_axes_dim=(4, 6, 6),
        cross_attention_dual=True,
        cross_attention_kv="separate",
    )


def build_random_pipeline(
    path: str | Path,
    transformer: TransformerConfig | None = None,
    guider: str = "apg",
    seed: int = 0,
    weight_std: float = 0.1,
):
    """Save a random-weight pipeline to `path`; returns diffusers' I2V pipeline over the same parts.

    `transformer` must use the separate cross-attention form (the one diffusers implements); its
    `text_dim` / `image_dim` size the text encoder and its vision tower.
    """
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        MotifVideoImage2VideoPipeline,
        MotifVideoTransformer3DModel,
    )
    from diffusers.guiders import AdaptiveProjectedGuidance, ClassifierFreeGuidance
    from transformers import SiglipImageProcessor

    cfg = transformer or tiny_transformer_config()
    if cfg.cross_attention_kv != "separate":
        raise ValueError("diffusers implements only the separate cross-attention form")
    torch.manual_seed(seed)
    tokenizer = word_tokenizer()
    encoder = t5gemma2_encoder(cfg.text_dim, len(WORDS), cfg.image_dim)
    z = cfg.out_channels
    generator = torch.Generator().manual_seed(seed + 1)
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=z,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=(torch.randn(z, generator=generator) * 0.2).tolist(),
        latents_std=(1 + torch.rand(z, generator=generator)).tolist(),
    ).eval()
    model = MotifVideoTransformer3DModel(**{k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")})
    with torch.no_grad():  # random everywhere: zero-initialised paths would hide mistakes
        for name, p in model.named_parameters():
            centre = 1.0 if "norm" in name and p.dim() == 1 and name.endswith("weight") else 0.0
            p.copy_(centre + weight_std * torch.randn(p.shape, generator=generator))
    if guider == "apg":  # the released model's settings
        guidance = AdaptiveProjectedGuidance(
            guidance_scale=8.0,
            adaptive_projected_guidance_rescale=12.0,
            adaptive_projected_guidance_momentum=0.1,
            use_original_formulation=True,
            adaptive_projected_guidance_norm_dim=[-1, -2, -4],
        )
    elif guider == "cfg":
        guidance = ClassifierFreeGuidance(guidance_scale=5.0)
    else:
        raise ValueError(f"guider must be 'apg' or 'cfg', got {guider!r}")
    pipe = MotifVideoImage2VideoPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=encoder,
        tokenizer=tokenizer,
        transformer=model.eval(),
        guider=guidance,
        feature_extractor=SiglipImageProcessor(size={"height": 32, "width": 32}),
    )
    pipe.save_pretrained(path)
    return pipe


def build_random_teacher(path: str | Path, kind: str) -> Path:
    """A tiny random REPA teacher folder (transformers' VJEPA2Model or Dinov2Model)."""
    if kind == "vjepa2":
        from transformers import VJEPA2Config, VJEPA2Model

        model = VJEPA2Model(
            VJEPA2Config(
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                mlp_ratio=2,
                crop_size=64,
                frames_per_clip=4,
                pred_hidden_size=16,
                pred_num_hidden_layers=1,
                pred_num_attention_heads=2,
            )
        )
    elif kind == "dinov2":
        from transformers import Dinov2Config, Dinov2Model

        model = Dinov2Model(
            Dinov2Config(
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                image_size=56,
                patch_size=14,
            )
        )
    else:
        raise ValueError(f"teacher kind must be 'vjepa2' or 'dinov2', got {kind!r}")
    model.save_pretrained(path)
    return Path(path)


def build_curriculum_parts(root: str | Path, progress: bool = False) -> Path:
    """What the micro curriculum (configs/micro-curriculum/) reads besides the shapes world: random
    sentence-level (48 wide) and T5Gemma2 (32 wide) text encoders that know the world's words,
    random DINOv2 and V-JEPA 2 teachers, and one patch autoencoder fitted on world clips, shared by
    every stage so that all stages train in the same latent space. Skips what exists."""
    from motif_video.data import world
    from motif_video.data.preprocess import PrepareConfig, prepare
    from motif_video.training.autoencoder import AutoencoderConfig, fit_patch_autoencoder

    root = Path(root)
    words = world.vocabulary()
    for kind, dim in (("sentence", 48), ("t5gemma2", 32)):
        if not (root / kind / "tokenizer").is_dir():
            build_random_text_encoder(root / kind, kind, dim, words)
    for kind in ("dinov2", "vjepa2"):
        if not (root / kind / "config.json").is_file():
            build_random_teacher(root / kind, kind)
    if not (root / "vae" / "config.json").is_file():
        prepare(
            "shapes:96", root / "vae-clips", PrepareConfig(fps=8, frame_buckets=(17,), area=64 * 64), progress=progress
        )
        fit_patch_autoencoder(
            root / "vae-clips", root / "vae.partial", AutoencoderConfig(kind="patch-pca", z_dim=16, spatial_factor=4)
        )
        (root / "vae.partial").rename(root / "vae")
    return root


def write_random_latent_shards(
    root: str | Path,
    shards: int,
    per_shard: int,
    buckets: dict[str, tuple[int, ...]],
    text_dim: int = 32,
    seed: int = 0,
) -> Path:
    """Random latent shards in precompute's layout (data/precompute.py) without a VAE or text encoder:
    per sample its latents, text states and json, per shard its `NAME.jsonl` index, and the empty
    prompt's `null_text.npy`. `buckets` maps a bucket name ("FxHxW") to its latent shape, dealt
    round-robin over the samples. For tests and benchmarks of the training data path."""
    import io
    import json
    import tarfile

    import numpy as np

    from motif_video.data.shards import _add_bytes
    from motif_video.data.stream import index_row

    root = Path(root)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = list(buckets)
    words = ["a", "red", "circle", "moves", "up", "fast"]
    n = 0
    for s in range(shards):
        rows = []
        with tarfile.open(root / f"shard-{s:06d}.tar", "w") as tar:
            for _ in range(per_shard):
                key, bucket = f"clip{n:06d}", names[n % len(names)]
                length = int(rng.integers(2, len(words) + 1))
                members = {
                    "latents.npy": rng.standard_normal(buckets[bucket]).astype(np.float32),
                    "text.npy": rng.standard_normal((length, text_dim)).astype(np.float32),
                }
                for kind, array in members.items():
                    buffer = io.BytesIO()
                    np.save(buffer, array)
                    _add_bytes(tar, f"{key}.{kind}", buffer.getvalue())
                meta = {"key": key, "bucket": bucket, "caption": " ".join(words[:length])}
                _add_bytes(tar, f"{key}.json", json.dumps(meta).encode())
                rows.append(index_row(key, meta, length))
                n += 1
        (root / f"shard-{s:06d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    np.save(root / "null_text.npy", np.zeros((1, text_dim), np.float32))
    return root


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "curriculum-parts":
        sys.exit("usage: python -m motif_video.random_weights curriculum-parts DIR")
    print(f"wrote {build_curriculum_parts(sys.argv[2], progress=True)}")
