"""Architecture configuration of the Motif-Video transformer, with named presets.

Every architectural number lives in `TransformerConfig`; nothing else in the package hard-codes
one. The field names are ours; `to_diffusers` / `from_diffusers` translate to and from the
`config.json` that diffusers' `MotifVideoTransformer3DModel` reads and writes (see the key table in
`_DIFFUSERS_FIELDS`).

Motif-Video 2B (arXiv 2604.16503, model card): 12 dual-stream blocks, 16 single-stream blocks and
an 8-block DDT decoder, hidden 1536 = 12 heads x 128, patch 1x2x2 on 16-channel Wan-VAE latents,
T5Gemma2 text (4B encoder, width 2560), SigLIP image tokens (width 1152) for I2V, and Shared
Cross-Attention in the encoder single-stream blocks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

CrossAttentionKV = Literal["shared", "separate"]
PREDICTIONS = ("velocity", "sample", "preconditioned")


@dataclass(frozen=True)
class TransformerConfig:
    """All numbers that fix the transformer's shapes.

    The three stages in order: `num_dual_blocks` dual-stream blocks (separate text and video
    weights, joint attention), `num_single_blocks` single-stream blocks (one set of weights over
    the joint sequence), `num_decoder_blocks` DDT decoder blocks (single-stream blocks over
    [fresh patch tokens ; encoder output], no text).
    """

    in_channels: int = 33  # 16 noisy latent + 16 first-frame condition + 1 condition mask
    out_channels: int = 16  # velocity, one value per latent channel
    num_heads: int = 12
    head_dim: int = 128
    num_dual_blocks: int = 12
    num_single_blocks: int = 16
    num_decoder_blocks: int = 8
    mlp_ratio: float = 4.0
    patch_size: int = 2  # spatial (height and width)
    patch_size_t: int = 1  # temporal
    text_dim: int = 2560  # width of the text encoder's hidden states (T5Gemma2 4B encoder)
    image_dim: int | None = 1152  # width of the image-encoder tokens (SigLIP); None: no I2V tokens
    rope_axes_dim: tuple[int, int, int] = (16, 56, 56)  # head-dim channels per (T, H, W) axis
    rope_theta: float = 256.0
    cross_attention_dual: bool = False  # Shared Cross-Attention in the dual-stream blocks
    cross_attention_single: bool = True  # ... in the encoder single-stream blocks (never decoder)
    # "shared": the cross-attention reuses the block's self-attention K/V projections (the paper's
    # design, original checkpoint layout); "separate": its own Q/K/V/out (diffusers 0.42 layout).
    cross_attention_kv: CrossAttentionKV = "shared"
    eps: float = 1e-6  # LayerNorm and QK RMSNorm epsilon inside the blocks
    # What the last layer predicts, always returned as the velocity so that sampler and loss stay the
    # same: "velocity" (the released model); "sample", the clean latents x0, returned as
    # (x_t - x0) / t (Li & He 2025, "Back to Basics"); "preconditioned", the velocity with a skip
    # from the input, v = c_skip(t) x_t + c_out(t) F (Karras et al. 2022's preconditioning written
    # for rectified flow, model/transformer.py), so the noise need not be carried through the
    # network (the embedded model uses it).
    prediction: Literal["velocity", "sample", "preconditioned"] = "velocity"
    # Fixed sine-cosine positions of the token grid added to the patch embeddings (DiT's absolute
    # embedding, in 3D; no parameters). RoPE alone tells a token only where it lies relative to the
    # others, so at pure noise every position sees the same thing; data whose layout the caption
    # decides (the shapes world: an object starts behind the centre along its motion) needs the
    # absolute place. False for the released model.
    absolute_positions: bool = False
    # The mean of the prompt's hidden states, projected and added to the timestep embedding, so the
    # whole prompt also steers every block's adaLN modulation (the pooled text projection of
    # HunyuanVideo / FLUX; the released config's `pooled_projection_dim` is null: it has none). A
    # small model learns the global facts of a prompt much sooner this way than through attention.
    pooled_text: bool = False

    def __post_init__(self) -> None:
        positive = {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "patch_size": self.patch_size,
            "patch_size_t": self.patch_size_t,
            "text_dim": self.text_dim,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TransformerConfig.{name} must be a positive integer, got {value!r}")
        for name in ("num_dual_blocks", "num_single_blocks", "num_decoder_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"TransformerConfig.{name} must be an integer >= 0, got {value!r}")
        if self.num_dual_blocks + self.num_single_blocks + self.num_decoder_blocks == 0:
            raise ValueError("TransformerConfig needs at least one block; all three block counts are 0")
        if self.image_dim is not None and (not isinstance(self.image_dim, int) or self.image_dim <= 0):
            raise ValueError(f"TransformerConfig.image_dim must be a positive integer or None, got {self.image_dim!r}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"TransformerConfig.mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if len(self.rope_axes_dim) != 3 or any(d <= 0 or d % 2 for d in self.rope_axes_dim):
            raise ValueError(
                f"TransformerConfig.rope_axes_dim must be three positive even numbers (T, H, W), "
                f"got {self.rope_axes_dim!r}"
            )
        if sum(self.rope_axes_dim) != self.head_dim:
            raise ValueError(
                f"TransformerConfig.rope_axes_dim {self.rope_axes_dim} sums to {sum(self.rope_axes_dim)}, "
                f"but RoPE must cover the whole head: head_dim={self.head_dim}"
            )
        if not self.rope_theta > 0:
            raise ValueError(f"TransformerConfig.rope_theta must be > 0, got {self.rope_theta!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"TransformerConfig.prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if not isinstance(self.pooled_text, bool):
            raise ValueError(f"TransformerConfig.pooled_text must be true or false, got {self.pooled_text!r}")
        if not isinstance(self.absolute_positions, bool):
            raise ValueError(
                f"TransformerConfig.absolute_positions must be true or false, got {self.absolute_positions!r}"
            )
        if self.cross_attention_kv not in ("shared", "separate"):
            raise ValueError(
                f"TransformerConfig.cross_attention_kv must be 'shared' or 'separate', got {self.cross_attention_kv!r}"
            )
        if not 0 < self.eps < 1:
            raise ValueError(f"TransformerConfig.eps must be in (0, 1), got {self.eps!r}")

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def num_blocks(self) -> int:
        return self.num_dual_blocks + self.num_single_blocks + self.num_decoder_blocks

    def replace(self, **changes: Any) -> TransformerConfig:
        return dataclasses.replace(self, **changes)

    # -- plain dictionaries (TOML files, run directories) ---------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rope_axes_dim"] = list(self.rope_axes_dim)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransformerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown transformer config keys {unknown}; known keys: {sorted(known)}")
        d = dict(d)
        if "rope_axes_dim" in d:
            d["rope_axes_dim"] = tuple(d["rope_axes_dim"])
        return cls(**d)

    # -- diffusers config.json ----------------------------------------------------------------

    def token_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(T, H, W) video tokens of a latent of frames x height x width positions."""
        return frames // self.patch_size_t, height // self.patch_size, width // self.patch_size

    def num_video_tokens(self, frames: int, height: int, width: int) -> int:
        t, h, w = self.token_grid(frames, height, width)
        return t * h * w

    def to_diffusers(self) -> dict[str, Any]:
        """The `config.json` dictionary of diffusers' `MotifVideoTransformer3DModel`.

        diffusers has no field for the K/V form of the cross-attention (it only knows the separate
        form); a shared-form model records it in the extra key `text_cross_attention_kv`.
        """
        out: dict[str, Any] = {"_class_name": "MotifVideoTransformer3DModel", "_diffusers_version": "0.42.1"}
        for theirs, ours in _DIFFUSERS_FIELDS.items():
            out[theirs] = getattr(self, ours)
        out["num_single_layers"] = self.num_single_blocks + self.num_decoder_blocks
        out["rope_axes_dim"] = list(self.rope_axes_dim)
        out["qk_norm"] = "rms_norm"
        out["norm_type"] = "layer_norm"
        if self.cross_attention_kv == "shared":
            out["text_cross_attention_kv"] = "shared"
        if self.prediction != "velocity":
            out["prediction"] = self.prediction  # ours only: diffusers' class predicts the velocity
        if self.absolute_positions:
            out["absolute_positions"] = True  # ours only: diffusers' class has RoPE alone
        if self.pooled_text:
            out["pooled_projection_dim"] = self.text_dim  # diffusers' class does not read it
        return out

    @classmethod
    def from_diffusers(cls, d: dict[str, Any]) -> TransformerConfig:
        """Read a diffusers `config.json` dictionary (class defaults fill absent keys)."""
        d = {k: v for k, v in d.items() if not k.startswith("_")}
        unknown = sorted(set(d) - set(_DIFFUSERS_FIELDS) - _DIFFUSERS_EXTRA_KEYS)
        if unknown:
            raise ValueError(f"unknown keys in MotifVideoTransformer3DModel config: {unknown}")
        for key, supported in (("qk_norm", "rms_norm"), ("norm_type", "layer_norm")):
            if d.get(key, supported) != supported:
                raise ValueError(f"config {key}={d[key]!r} is not supported; expected {supported!r}")
        if (base := d.get("base_latent_size")) is not None:
            raise ValueError(f"config base_latent_size={base!r} is not supported (the released model leaves it null)")
        pooled = d.get("pooled_projection_dim")
        if pooled is not None and pooled != d.get("text_embed_dim", _DIFFUSERS_DEFAULTS["text_embed_dim"]):
            raise ValueError(
                f"config pooled_projection_dim={pooled!r} is not supported: the pooled projection reads the mean "
                "of the text hidden states, so it must equal text_embed_dim (or be null, as in the released model)"
            )
        # Absent keys take diffusers' class defaults, so a config.json written with defaults
        # omitted reads the same as diffusers reads it.
        values = {ours: d.get(theirs, _DIFFUSERS_DEFAULTS[theirs]) for theirs, ours in _DIFFUSERS_FIELDS.items()}
        num_single_layers = d.get("num_single_layers", _DIFFUSERS_DEFAULTS["num_single_layers"])
        if values["num_decoder_blocks"] > num_single_layers:
            raise ValueError(
                f"config num_decoder_layers={values['num_decoder_blocks']} exceeds "
                f"num_single_layers={num_single_layers} (the decoder is the last single-stream blocks)"
            )
        values["num_single_blocks"] = num_single_layers - values["num_decoder_blocks"]
        values["rope_axes_dim"] = tuple(values["rope_axes_dim"])
        values["cross_attention_kv"] = d.get("text_cross_attention_kv", "separate")
        values["prediction"] = d.get("prediction", "velocity")
        values["absolute_positions"] = d.get("absolute_positions", False)
        values["pooled_text"] = pooled is not None
        return cls(**values)


# diffusers config key -> our field (num_single_layers is derived: single + decoder blocks).
_DIFFUSERS_FIELDS: dict[str, str] = {
    "in_channels": "in_channels",
    "out_channels": "out_channels",
    "num_attention_heads": "num_heads",
    "attention_head_dim": "head_dim",
    "num_layers": "num_dual_blocks",
    "num_decoder_layers": "num_decoder_blocks",
    "mlp_ratio": "mlp_ratio",
    "patch_size": "patch_size",
    "patch_size_t": "patch_size_t",
    "text_embed_dim": "text_dim",
    "image_embed_dim": "image_dim",
    "rope_theta": "rope_theta",
    "rope_axes_dim": "rope_axes_dim",
    "enable_text_cross_attention_dual": "cross_attention_dual",
    "enable_text_cross_attention_single": "cross_attention_single",
}
# Keys read but not mapped onto a field (validated in from_diffusers).
_DIFFUSERS_EXTRA_KEYS = {
    "num_single_layers",
    "qk_norm",
    "norm_type",
    "text_cross_attention_kv",
    "prediction",
    "absolute_positions",
    "pooled_projection_dim",
    "base_latent_size",
}
# `MotifVideoTransformer3DModel.__init__` defaults in diffusers 0.42.1.
_DIFFUSERS_DEFAULTS: dict[str, Any] = {
    "in_channels": 33,
    "out_channels": 16,
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "num_layers": 20,
    "num_single_layers": 40,
    "num_decoder_layers": 0,
    "mlp_ratio": 4.0,
    "patch_size": 2,
    "patch_size_t": 1,
    "text_embed_dim": 4096,
    "image_embed_dim": None,
    "rope_theta": 256.0,
    "rope_axes_dim": (16, 56, 56),
    "enable_text_cross_attention_dual": False,
    "enable_text_cross_attention_single": False,
}

PRESETS: dict[str, TransformerConfig] = {
    # The released model (arXiv 2604.16503; ~1.9 B parameters).
    "motif-video-2b": TransformerConfig(),
    # Same structure, tiny sizes: every stage, both cross-attention sites, I2V tokens.
    "debug": TransformerConfig(
        num_heads=2,
        head_dim=16,
        num_dual_blocks=2,
        num_single_blocks=2,
        num_decoder_blocks=2,
        text_dim=32,
        image_dim=24,
        rope_axes_dim=(4, 6, 6),
        cross_attention_dual=True,
    ),
    # The embedded default (configs/shapes-tiny.toml): the 2B's structure (all three stages, Shared
    # Cross-Attention with shared K/V in the single-stream blocks, patch 1x2x2) on the 16-channel
    # latents of the shapes-world patch autoencoder and a 64-wide word-level text encoder; I2V by
    # the first-frame latent only (no image tokens).
    "shapes-tiny": TransformerConfig(
        in_channels=33,
        out_channels=16,
        num_heads=4,
        head_dim=32,
        num_dual_blocks=2,
        num_single_blocks=4,
        num_decoder_blocks=2,
        text_dim=64,
        image_dim=None,
        rope_axes_dim=(8, 12, 12),
        prediction="preconditioned",
    ),
}


def get_preset(name: str) -> TransformerConfig:
    """A named preset; the error lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown transformer preset {name!r}; choose one of {sorted(PRESETS)}") from None
