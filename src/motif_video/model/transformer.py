"""The Motif-Video denoiser: a rectified-flow video DiT with a three-part backbone.

    latents [B, C, F, H, W] --patch_embed--> x [B, L, D] -----------------------------+
    text [B, S, Dt] --text_embed--> [B, S, D]  (image tokens [B, M, Di] prepended)    |
    t [B] --time_embed--> c [B, D]                                                    |
                                                                                      |
    1. dual-stream blocks    (early fusion)         x, text -> x, text                |
    2. single-stream blocks  (joint representation) x, text -> x, text                | fresh patch
       Shared Cross-Attention beside the joint attention where enabled                | tokens
    3. DDT decoder blocks    (detail refinement)    [x_dec ; x] -> x_dec, x  <--------+
    final adaLN + linear -> unpatchify -> velocity [B, C_out, F, H, W]

Legend: B batch, C/F/H/W latent channels/frames/height/width, T/Hp/Wp patch-grid size,
L = T*Hp*Wp video tokens, S text tokens (M image tokens first for I2V), D hidden, Dh head dim.
Paper: arXiv 2604.16503 (Motif-Video 2B), Sec. 3; checkpoint layout: diffusers 0.42
`MotifVideoTransformer3DModel` (see checkpoint_io.py for the key map).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from motif_video.config import TransformerConfig
from motif_video.model.attention import AttentionProbe, check_backend
from motif_video.model.blocks import BlockInputs, DualStreamBlock, SingleStreamBlock
from motif_video.model.context_parallel import ContextParallel
from motif_video.model.layers import (
    MLP,
    AdaLNModulation,
    FinalLayer,
    ImageProjection,
    PatchEmbed3D,
    RotaryEmbedding3D,
    TimestepEmbedder,
    grid_positions,
    layer_norm,
)
from motif_video.model.routing import Route


@dataclass
class TransformerOutput:
    velocity: Tensor  # [B, C_out, F, H, W]
    # block index -> video tokens after that block: [B, L, D], or [B, K, D] (the kept tokens only)
    # for a block inside a route other than its last, after which the skipped tokens are back.
    features: dict[int, Tensor] = field(default_factory=dict)


SAMPLE_PREDICTION_MIN_T = 0.05  # "sample" prediction: 1/t is capped near t = 0


def as_velocity(prediction: str, out: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    """The velocity of x_t = (1 - t) x0 + t noise from the last layer's output `out`.

    "sample": `out` is x0, v = (x_t - x0) / t.
    "preconditioned": v = c_skip x_t + c_out out, with the skip that makes the target of `out`
    smallest for unit-variance latents and the scale that gives that target unit variance:
    with D = t^2 + (1 - t)^2, c_skip = (2t - 1) / D and c_out = 1 / sqrt(D). At t = 1 the noise
    passes straight through (c_skip = 1) and the network predicts only -x0; at t = 0 the skip
    subtracts x_t and the network predicts the noise; the loss is unchanged (velocity MSE).
    """
    if prediction == "sample":
        return (x_t - out) / t.clamp(min=SAMPLE_PREDICTION_MIN_T)
    d = t.square() + (1 - t).square()
    return (2 * t - 1) / d * x_t + out / d.sqrt()


class MotifVideoTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.patch_embed = PatchEmbed3D(cfg.in_channels, d, cfg.patch_size_t, cfg.patch_size)
        self.text_embed = MLP(cfg.text_dim, d, d)
        self.image_embed = ImageProjection(cfg.image_dim, d) if cfg.image_dim is not None else None
        self.time_embed = TimestepEmbedder(d)
        self.pooled_embed = MLP(cfg.text_dim, d, d) if cfg.pooled_text else None
        self.rope = RotaryEmbedding3D(cfg.rope_axes_dim, cfg.rope_theta)

        self.dual_blocks = nn.ModuleList(
            DualStreamBlock(cfg, cfg.cross_attention_dual) for _ in range(cfg.num_dual_blocks)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(cfg, cfg.cross_attention_single) for _ in range(cfg.num_single_blocks)
        )
        # The decoder has no text stream, hence no cross-attention.
        self.decoder_blocks = nn.ModuleList(
            SingleStreamBlock(cfg, cross_attention=False) for _ in range(cfg.num_decoder_blocks)
        )
        patch_values = cfg.patch_size_t * cfg.patch_size * cfg.patch_size * cfg.out_channels
        self.final_layer = FinalLayer(d, patch_values, cfg.eps)

        # Run-time switches, not architecture: they change neither parameters nor outputs.
        self.attention_backend = "sdpa"
        self.parallel: ContextParallel | None = None  # set to split the video tokens over processes
        self.activation_checkpointing = False

    # -- initialisation ---------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Every initialisation decision of the model, in one place.

        | parameters                                   | init                              |
        |----------------------------------------------|-----------------------------------|
        | every Linear weight (default)                | xavier uniform                    |
        | every Linear bias                            | 0                                 |
        | patch_embed Conv3d weight (as [D, C*pt*p*p]) | xavier uniform; bias 0            |
        | time_embed, text_embed, pooled_embed weights | normal(0, 0.02)  (DiT embedders)  |
        | all adaLN modulation Linears (weight, bias)  | 0  -> every block is the identity |
        | final_layer modulation and linear            | 0  -> the velocity starts at 0    |
        | cross_attn.proj (weight, bias)               | 0  -> cross-attention adds nothing|
        | LayerNorm / RMSNorm weights                  | 1 (biases 0)                      |

        `generator` makes the random draws reproducible.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                _xavier_(module.weight, generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        conv = self.patch_embed.proj
        _xavier_(conv.weight.view(conv.weight.shape[0], -1), generator)
        nn.init.zeros_(conv.bias)
        for embedder in (self.time_embed, self.text_embed, self.pooled_embed):
            for linear in () if embedder is None else (embedder.fc1, embedder.fc2):
                linear.weight.normal_(0.0, 0.02, generator=generator)
        zeroed = [self.final_layer.modulation, self.final_layer.linear]
        for block in itertools.chain(self.dual_blocks, self.single_blocks, self.decoder_blocks):
            zeroed += [m.linear for m in block.modules() if isinstance(m, AdaLNModulation)]
            if block.cross_attn is not None:
                zeroed.append(block.cross_attn.proj)
        for linear in zeroed:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    # -- forward ----------------------------------------------------------------------------

    def forward(
        self,
        hidden_states: Tensor,
        timestep: Tensor,
        encoder_hidden_states: Tensor,
        encoder_attention_mask: Tensor | None = None,
        image_embeds: Tensor | None = None,
        *,
        route: Route | None = None,
        capture: Iterable[int] = (),
        probe: AttentionProbe | None = None,
    ) -> TransformerOutput:
        """Velocity for noisy latents (+ condition channels) at flow time `timestep` (0..1000).

        hidden_states [B, C_in, F, H, W]; timestep [B]; encoder_hidden_states [B, S, Dt];
        encoder_attention_mask [B, S] (1 = real token, 0 = padding); image_embeds [B, M, Di] (I2V).
        `route`: TREAD routing (training); `capture`: block indices whose video-token output is
        returned in `features` (e.g. for REPA); `probe`: records attention aggregates per block
        (analysis) without changing the output.
        """
        cfg = self.cfg
        self._check_inputs(hidden_states, timestep, encoder_hidden_states, encoder_attention_mask, image_embeds)
        batch, _, frames, height, width = hidden_states.shape
        grid = cfg.token_grid(frames, height, width)
        num_tokens = grid[0] * grid[1] * grid[2]
        if route is not None:
            route.validate(num_tokens, batch, cfg.num_blocks, cfg.num_dual_blocks + cfg.num_single_blocks)
        capture = set(capture)
        if probe is not None and probe.frames * probe.per_frame != num_tokens:
            raise ValueError(
                f"probe expects {probe.frames} x {probe.per_frame} video tokens, the input has {num_tokens}"
            )

        rope = self.rope(grid, hidden_states.device)  # [L, Dh] cos, sin
        timestep = timestep.expand(batch) if timestep.dim() == 0 else timestep  # [B]
        c = self.time_embed(timestep)  # [B, D]
        if self.pooled_embed is not None:  # + the prompt's mean hidden state: every block's adaLN sees it
            c = c + self.pooled_embed(_masked_mean(encoder_hidden_states, encoder_attention_mask)).to(c.dtype)
        x = self.patch_embed(hidden_states)  # [B, L, D]
        if cfg.absolute_positions:  # the width split over (T, H, W) as RoPE splits each head
            axes = tuple(a * cfg.num_heads for a in cfg.rope_axes_dim)
            x = x + grid_positions(grid, axes, x.device).to(x.dtype)
        encoder_hidden_states, text_valid = _trim_padding(encoder_hidden_states, encoder_attention_mask)
        text = self.text_embed(encoder_hidden_states)  # [B, S, D]
        num_image_tokens = 0
        if image_embeds is not None:
            image = self.image_embed(image_embeds)  # [B, M, D], always attended
            text = torch.cat([image, text], dim=1)
            num_image_tokens = image.shape[1]
            if text_valid is not None:
                text_valid = F.pad(text_valid, (num_image_tokens, 0), value=True)
        cp = self.parallel
        joint_mask, decoder_mask = _joint_mask(text_valid, num_tokens), None
        if cp is not None:  # this process keeps its share of the video tokens (model/context_parallel.py)
            if route is not None or probe is not None or capture:
                raise ValueError("context parallelism is for sampling: no routing, capture or probe")
            x, rope = cp.shard(x), tuple(cp.shard(r, dim=0) for r in rope)
            if cp.shard_length(num_tokens) * cp.size != num_tokens:  # padded (the same answer on every rank)
                valid = cp.valid(num_tokens, x.device)
                joint_mask = _joint_mask(text_valid, len(valid), valid, batch, text.shape[1])
                decoder_mask = torch.cat([valid, valid]).expand(batch, 1, 1, -1)
            else:
                joint_mask = _joint_mask(text_valid, x.shape[1])
        decoder_x = x  # the DDT decoder starts again from the fresh patch tokens

        inputs = BlockInputs(
            c=c,
            rope=rope,
            joint_mask=joint_mask,
            text_mask=None if text_valid is None else text_valid[:, None, None, num_image_tokens:],
            num_image_tokens=num_image_tokens,
            backend=self.attention_backend,
            probe=probe,
            parallel=cp,
        )
        routed = (
            inputs
            if route is None
            else inputs.with_video_tokens(route.gather_rope(rope), _joint_mask(text_valid, route.keep.shape[1]))
        )
        features: dict[int, Tensor] = {}

        # 1 + 2. Encoder: dual-stream then single-stream blocks over [video ; text].
        encoder = itertools.chain(self.dual_blocks, self.single_blocks)
        for index, block in enumerate(encoder):
            if probe is not None:
                probe.block, probe.decoder = index, False
            if route is not None and index == route.start:
                x_skipped, x = x, route.gather(x)
            in_route = route is not None and route.start <= index <= route.end
            x, text = self._run(block, x, text, routed if in_route else inputs)
            if route is not None and index == route.end:
                x = route.scatter(x_skipped, x)
            if index in capture:
                features[index] = x

        # 3. DDT decoder: [decoder tokens ; encoder output], no text, no mask, RoPE on the first part.
        decoder_inputs = BlockInputs(
            c, rope, decoder_mask, None, 0, self.attention_backend, probe, parallel=cp, context_sharded=True
        )
        decoder_routed = (
            decoder_inputs if route is None else decoder_inputs.with_video_tokens(route.gather_rope(rope), None)
        )
        if self.decoder_blocks:
            encoder_out, x = x, decoder_x
        for offset, block in enumerate(self.decoder_blocks):
            index = cfg.num_dual_blocks + cfg.num_single_blocks + offset
            if probe is not None:
                probe.block, probe.decoder = index, True
            if route is not None and index == route.start:
                (x_skipped, x), (enc_skipped, encoder_out) = (
                    (x, route.gather(x)),
                    (encoder_out, route.gather(encoder_out)),
                )
            in_route = route is not None and route.start <= index <= route.end
            x, encoder_out = self._run(block, x, encoder_out, decoder_routed if in_route else decoder_inputs)
            if route is not None and index == route.end:
                x, encoder_out = route.scatter(x_skipped, x), route.scatter(enc_skipped, encoder_out)
            if index in capture:
                features[index] = x

        out = self.final_layer(x, c)
        if cp is not None:
            out = cp.gather(out, num_tokens)
        out = self._unpatchify(out, grid)
        if cfg.prediction != "velocity":
            t = timestep.to(out.dtype).view(-1, 1, 1, 1, 1) / 1000
            out = as_velocity(cfg.prediction, out, hidden_states[:, : cfg.out_channels].to(out.dtype), t)
        return TransformerOutput(out, features)

    def float32_modules(self) -> list[str]:
        """The modules a half-precision model keeps in float32: the timestep embedder and the adaLN
        modulation (small, and what the conditioning's precision rests on)."""
        names = ["time_embed", "final_layer.modulation"]
        return names + [n for n, m in self.named_modules() if isinstance(m, AdaLNModulation)]

    def to_half(self, dtype: torch.dtype) -> MotifVideoTransformer:
        """Cast to `dtype` (bfloat16 / float16) except `float32_modules`, which keep their current
        values in float32; returns self."""
        kept = {name: self.get_submodule(name) for name in self.float32_modules()}
        originals = {
            name: {k: v.detach().float().clone() for k, v in m.state_dict().items()} for name, m in kept.items()
        }
        self.to(dtype)
        for name, module in kept.items():
            module.float()
            module.load_state_dict(originals[name])
        return self

    @torch.no_grad()
    def modulated_input(self, hidden_states: Tensor, timestep: Tensor) -> Tensor:
        """What the first block sees of the video: the patch tokens, normalised and modulated by
        the timestep (the cheap change indicator of step caching, sampling/cache.py). A pooled text
        projection, where the model has one, is the same at every step of a run and is left out."""
        batch = hidden_states.shape[0]
        c = self.time_embed(timestep.expand(batch) if timestep.dim() == 0 else timestep)
        first = self.dual_blocks[0].video_mod if self.dual_blocks else self.single_blocks[0].modulation
        tokens = self.patch_embed(hidden_states)
        return first(c, tokens.dtype)[0].modulate(layer_norm(tokens, self.cfg.eps))

    def _run(self, block: nn.Module, x: Tensor, context: Tensor, inputs: BlockInputs) -> tuple[Tensor, Tensor]:
        if self.activation_checkpointing and torch.is_grad_enabled():
            # Recompute the block in backward instead of keeping its activations.
            return checkpoint(block, x, context, inputs, use_reentrant=False)
        return block(x, context, inputs)

    def _unpatchify(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """[B, L, C*pt*p*p] -> [B, C, T*pt, Hp*p, Wp*p]."""
        cfg = self.cfg
        t, h, w = grid
        p, pt = cfg.patch_size, cfg.patch_size_t
        x = x.reshape(x.shape[0], t, h, w, cfg.out_channels, pt, p, p)
        x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # B C T pt Hp p Wp p
        return x.reshape(x.shape[0], cfg.out_channels, t * pt, h * p, w * p)

    def _check_inputs(
        self,
        latents: Tensor,
        timestep: Tensor,
        text: Tensor,
        mask: Tensor | None,
        image_embeds: Tensor | None,
    ) -> None:
        cfg = self.cfg
        if latents.dim() != 5 or latents.shape[1] != cfg.in_channels:
            raise ValueError(
                f"hidden_states must have shape [B, {cfg.in_channels}, F, H, W], got {tuple(latents.shape)}"
            )
        batch, _, frames, height, width = latents.shape
        if frames % cfg.patch_size_t or height % cfg.patch_size or width % cfg.patch_size:
            raise ValueError(
                f"latent size F x H x W = {frames} x {height} x {width} must be divisible by the patch size "
                f"{cfg.patch_size_t} x {cfg.patch_size} x {cfg.patch_size}"
            )
        if timestep.dim() > 1 or (timestep.dim() == 1 and timestep.shape[0] != batch):
            raise ValueError(f"timestep must be a scalar or have shape [{batch}], got {tuple(timestep.shape)}")
        if text.dim() != 3 or text.shape[0] != batch or text.shape[2] != cfg.text_dim:
            raise ValueError(
                f"encoder_hidden_states must have shape [{batch}, S, {cfg.text_dim}], got {tuple(text.shape)}"
            )
        if mask is not None and tuple(mask.shape) != tuple(text.shape[:2]):
            raise ValueError(
                f"encoder_attention_mask must have shape {tuple(text.shape[:2])} (like the text), "
                f"got {tuple(mask.shape)}"
            )
        if image_embeds is not None:
            if self.image_embed is None:
                raise ValueError("image_embeds given, but this model has no image projection (image_dim is None)")
            if image_embeds.dim() != 3 or image_embeds.shape[0] != batch or image_embeds.shape[2] != cfg.image_dim:
                raise ValueError(
                    f"image_embeds must have shape [{batch}, M, {cfg.image_dim}], got {tuple(image_embeds.shape)}"
                )

    # -- conveniences -------------------------------------------------------------------------

    def compile_blocks(self, **options) -> int:
        """Regional compilation: `torch.compile` on each block, not on the whole model. Blocks of one
        class share their compiled code (Dynamo caches it per code object, the weights are inputs),
        so the model compiles once per kind of block (dual, single, decoder), not once per block; a
        new text length recompiles once, with dynamic sizes, and later lengths reuse that. Returns
        the number of blocks compiled."""
        blocks = [*self.dual_blocks, *self.single_blocks, *self.decoder_blocks]
        for block in blocks:
            block.compile(**options)
        return len(blocks)

    def set_attention_backend(self, name: str) -> None:
        self.attention_backend = check_backend(name)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _masked_mean(text: Tensor, mask: Tensor | None) -> Tensor:
    """[B, S, Dt] -> [B, Dt]: the mean over the real tokens (all of them without a mask)."""
    if mask is None:
        return text.mean(dim=1)
    weights = mask.to(text.dtype)[..., None]
    return (text * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def _trim_padding(text: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Drop the trailing text positions that are padding in every sample.

    Exact: a padded token is never a key for anyone, so nothing valid depends on it. Prompts are
    padded to 512 tokens and are usually much shorter, so this saves real work. When what is left
    is all valid (one prompt, or prompts of one length) the mask is dropped: attention without a
    mask can take the fused kernels (on a GPU, flash attention does not take a mask at all)."""
    if mask is None:
        return text, None
    valid = mask.bool()
    used = valid.any(dim=0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    valid = valid[:, :length]
    return text[:, :length], None if bool(valid.all()) else valid


def _joint_mask(
    text_valid: Tensor | None,
    num_video_tokens: int,
    video_valid: Tensor | None = None,
    batch: int = 1,
    num_text_tokens: int = 0,
) -> Tensor | None:
    """[B, S] text validity (+ [L] video validity, padding of a context-parallel shard) ->
    [B, 1, 1, L+S] joint-attention key mask; None when every key is valid."""
    if video_valid is None:
        if text_valid is None:
            return None
        return F.pad(text_valid, (num_video_tokens, 0), value=True)[:, None, None, :]
    if text_valid is None:
        text_valid = torch.ones(batch, num_text_tokens, dtype=torch.bool, device=video_valid.device)
    return torch.cat([video_valid.expand(text_valid.shape[0], -1), text_valid], dim=1)[:, None, None, :]


def _xavier_(weight: Tensor, generator: torch.Generator | None) -> None:
    fan_out, fan_in = weight.shape
    bound = (6.0 / (fan_in + fan_out)) ** 0.5
    weight.uniform_(-bound, bound, generator=generator)
