"""Weights I/O: the released checkpoint layouts <-> our parameter names.

Two official layouts exist for the transformer (see docs/architecture.md):
- the diffusers layout (diffusers >= 0.42, `MotifVideoTransformer3DModel`): a directory with
  `config.json` and `diffusion_pytorch_model.safetensors` (or shards + an index); its
  cross-attention has its own Q/K/V/out (`cross_attn.to_q/.to_k/.to_v/.to_out.0`);
- the original layout (the single .safetensors file the ComfyUI nodes load): the same names
  except the cross-attention, `cross_attn_query_proj` / `cross_attn_query_norm` /
  `cross_attn_out_proj`, whose keys and values come from the block's self-attention weights.

`key_table(cfg)` is the one map between the official names and ours. Where we fuse projections
(Q/K/V), one of our tensors is the row-wise concatenation of several official ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from motif_video.config import PRESETS, TransformerConfig
from motif_video.media import current_umask
from motif_video.model.transformer import MotifVideoTransformer

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
CONFIG_NAME = "config.json"
# Prefixes that single-file checkpoints saved by other tools put before the model's keys.
_FILE_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.")

# one entry: our parameter name -> official (name, rows) parts, concatenated along dim 0;
# rows None means the whole tensor.
KeyTable = dict[str, tuple[tuple[str, int | None], ...]]


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: lists what is missing, unknown or mis-shaped."""


def check_safetensors(file: str | Path) -> None:
    """A clear error for a file that is not a complete safetensors file (truncated, another format,
    random bytes). Reads the header only: the header's offsets must cover the file exactly."""
    from safetensors import SafetensorError

    try:
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        detail = str(e).splitlines()[0].removeprefix("Error while deserializing header: ")
        raise CheckpointError(
            f"{file} is not a complete safetensors file ({detail}): truncated or another format"
        ) from None


def read_json(file: str | Path) -> dict:
    """A JSON file, with an error naming it (and where) when it is not valid JSON."""
    try:
        return json.loads(Path(file).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def key_table(cfg: TransformerConfig) -> KeyTable:
    d = cfg.hidden_size
    table: KeyTable = {}

    def linear(ours: str, *theirs: str, rows: tuple[int, ...] | None = None) -> None:
        for suffix in (".weight", ".bias"):
            parts = zip(theirs, rows, strict=True) if rows else [(theirs[0], None)]
            table[ours + suffix] = tuple((t + suffix, r) for t, r in parts)

    def rms(ours: str, theirs: str) -> None:
        table[ours + ".weight"] = ((theirs + ".weight", None),)

    linear("patch_embed.proj", "x_embedder.proj")
    linear("text_embed.fc1", "context_embedder.linear_1")
    linear("text_embed.fc2", "context_embedder.linear_2")
    if cfg.image_dim is not None:
        for ours, theirs in (
            ("norm_in", "norm_in"),
            ("fc1", "linear_1"),
            ("fc2", "linear_2"),
            ("norm_out", "norm_out"),
        ):
            linear(f"image_embed.{ours}", f"image_embedder.{theirs}")
    linear("time_embed.fc1", "time_text_embed.timestep_embedder.linear_1")
    linear("time_embed.fc2", "time_text_embed.timestep_embedder.linear_2")
    if cfg.pooled_text:  # the name HunyuanVideo gives its pooled text projection
        linear("pooled_embed.fc1", "time_text_embed.text_embedder.linear_1")
        linear("pooled_embed.fc2", "time_text_embed.text_embedder.linear_2")
    linear("final_layer.modulation", "norm_out.linear")
    linear("final_layer.linear", "proj_out")

    def cross_attention(ours: str, theirs: str) -> None:
        if cfg.cross_attention_kv == "separate":
            linear(f"{ours}.cross_attn.q", f"{theirs}.cross_attn.to_q")
            linear(f"{ours}.cross_attn.kv", f"{theirs}.cross_attn.to_k", f"{theirs}.cross_attn.to_v", rows=(d, d))
            rms(f"{ours}.cross_attn.norm_q", f"{theirs}.cross_attn.norm_q")
            rms(f"{ours}.cross_attn.norm_k", f"{theirs}.cross_attn.norm_k")
            linear(f"{ours}.cross_attn.proj", f"{theirs}.cross_attn.to_out.0")
        else:
            linear(f"{ours}.cross_attn.q", f"{theirs}.cross_attn_query_proj")
            linear(f"{ours}.cross_attn.q_norm", f"{theirs}.cross_attn_query_norm")
            linear(f"{ours}.cross_attn.proj", f"{theirs}.cross_attn_out_proj")

    for i in range(cfg.num_dual_blocks):
        o, t = f"dual_blocks.{i}", f"transformer_blocks.{i}"
        linear(f"{o}.video_mod.linear", f"{t}.norm1.linear")
        linear(f"{o}.text_mod.linear", f"{t}.norm1_context.linear")
        linear(f"{o}.video_attn.qkv", f"{t}.attn.to_q", f"{t}.attn.to_k", f"{t}.attn.to_v", rows=(d, d, d))
        rms(f"{o}.video_attn.norm_q", f"{t}.attn.norm_q")
        rms(f"{o}.video_attn.norm_k", f"{t}.attn.norm_k")
        linear(f"{o}.video_attn_out", f"{t}.attn.to_out.0")
        linear(
            f"{o}.text_attn.qkv", f"{t}.attn.add_q_proj", f"{t}.attn.add_k_proj", f"{t}.attn.add_v_proj", rows=(d, d, d)
        )
        rms(f"{o}.text_attn.norm_q", f"{t}.attn.norm_added_q")
        rms(f"{o}.text_attn.norm_k", f"{t}.attn.norm_added_k")
        linear(f"{o}.text_attn_out", f"{t}.attn.to_add_out")
        linear(f"{o}.video_mlp.fc1", f"{t}.ff.net.0.proj")
        linear(f"{o}.video_mlp.fc2", f"{t}.ff.net.2")
        linear(f"{o}.text_mlp.fc1", f"{t}.ff_context.net.0.proj")
        linear(f"{o}.text_mlp.fc2", f"{t}.ff_context.net.2")
        if cfg.cross_attention_dual:
            cross_attention(o, t)

    # diffusers keeps the decoder as the last `num_decoder_layers` single-stream blocks.
    singles = [(f"single_blocks.{i}", i, cfg.cross_attention_single) for i in range(cfg.num_single_blocks)]
    singles += [(f"decoder_blocks.{j}", cfg.num_single_blocks + j, False) for j in range(cfg.num_decoder_blocks)]
    for o, index, has_cross in singles:
        t = f"single_transformer_blocks.{index}"
        linear(f"{o}.modulation.linear", f"{t}.norm.linear")
        linear(f"{o}.qkv", f"{t}.attn.to_q", f"{t}.attn.to_k", f"{t}.attn.to_v", rows=(d, d, d))
        linear(f"{o}.mlp_in", f"{t}.proj_mlp")
        rms(f"{o}.norm_q", f"{t}.attn.norm_q")
        rms(f"{o}.norm_k", f"{t}.attn.norm_k")
        linear(f"{o}.proj", f"{t}.proj_out")
        if has_cross:
            cross_attention(o, t)
    return table


def expected_shapes(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Official key -> tensor shape for a config (built on the meta device: no memory)."""
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in MotifVideoTransformer(cfg).state_dict().items()}
    shapes = {}
    for our_key, parts in key_table(cfg).items():
        for their_key, rows in parts:
            shapes[their_key] = ours[our_key] if rows is None else (rows, *ours[our_key][1:])
    return shapes


def from_official(cfg: TransformerConfig, official: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official state dict -> ours. Raises CheckpointError listing every mismatch."""
    check_official_keys(cfg, {k: tuple(v.shape) for k, v in official.items()})
    return {
        ours: torch.cat([official[k] for k, _ in parts]) if len(parts) > 1 else official[parts[0][0]]
        for ours, parts in key_table(cfg).items()
    }


def to_official(cfg: TransformerConfig, ours: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for our_key, parts in key_table(cfg).items():
        tensor = ours[our_key]
        if len(parts) == 1:
            out[parts[0][0]] = tensor.contiguous()
        else:  # fused: split rows back into the official tensors (copies: no shared storage)
            for (their_key, _), piece in zip(parts, tensor.split([r for _, r in parts]), strict=True):
                out[their_key] = piece.clone()
    return out


def check_official_keys(cfg: TransformerConfig, shapes: Mapping[str, tuple[int, ...]]) -> None:
    expected = expected_shapes(cfg)
    missing = sorted(set(expected) - set(shapes))
    unknown = sorted(set(shapes) - set(expected))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(shapes[k])}, model {expected[k]}"
        for k in set(expected) & set(shapes)
        if tuple(shapes[k]) != expected[k]
    )
    if missing or unknown or misshaped:
        lines = [f"checkpoint does not match the transformer config ({_describe(cfg)}):"]
        for title, keys in (("missing keys", missing), ("unknown keys", unknown), ("mis-shaped keys", misshaped)):
            if keys:
                shown = keys[:20] + ([f"... and {len(keys) - 20} more"] if len(keys) > 20 else [])
                lines.append(f"  {len(keys)} {title}:\n    " + "\n    ".join(shown))
        raise CheckpointError("\n".join(lines))


def _describe(cfg: TransformerConfig) -> str:
    return (
        f"{cfg.num_dual_blocks} dual + {cfg.num_single_blocks} single + {cfg.num_decoder_blocks} decoder blocks, "
        f"hidden {cfg.hidden_size}, cross-attention dual={cfg.cross_attention_dual} "
        f"single={cfg.cross_attention_single} kv={cfg.cross_attention_kv}"
    )


# -- reading ---------------------------------------------------------------------------------


def load_transformer(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    config: TransformerConfig | None = None,
) -> MotifVideoTransformer:
    """Load a transformer from the official layouts into our model (in eval mode).

    `path` is one of
    - a pipeline directory (with `transformer/`) or a transformer directory: `config.json` plus
      `diffusion_pytorch_model.safetensors` or its shards and index, in either key layout;
    - a single `.safetensors` file in either key layout: numbers that the tensors cannot show
      (head size, decoder depth, RoPE) come from `config`, by default the `motif-video-2b` preset.
    `dtype` converts the weights (default: keep the checkpoint's dtype); half precision keeps the
    timestep embedder and the adaLN modulation in float32.
    """
    cfg, files, prefix = read_config(path, config)
    official = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                official[key[len(prefix) :]] = t
    state = from_official(cfg, official)
    with torch.device("meta"):
        model = MotifVideoTransformer(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    if dtype in (torch.bfloat16, torch.float16):
        model.to_half(dtype)  # the conditioning path stays float32 (model/layers.py, numerics)
    elif dtype is not None:
        model.to(dtype)
    return model.to(device).eval()


def read_config(
    path: str | os.PathLike, config: TransformerConfig | None = None
) -> tuple[TransformerConfig, list[Path], str]:
    """The config of a checkpoint, its weight files and the key prefix to strip; reads no tensors."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no transformer checkpoint at {path}")
    if path.is_dir():
        if (path / "transformer" / CONFIG_NAME).is_file():
            path = path / "transformer"
        if not (path / CONFIG_NAME).is_file():
            raise CheckpointError(f"{path} has no {CONFIG_NAME}: expected a diffusers transformer directory")
        raw = read_json(path / CONFIG_NAME)
        cfg = TransformerConfig.from_diffusers(raw)
        files = _weight_files(path)
        found = _detect_kv_form(_read_shapes(files), cfg.cross_attention_kv)
        if raw.get("text_cross_attention_kv", found) != found:
            raise CheckpointError(
                f"{path / CONFIG_NAME} says text_cross_attention_kv={raw['text_cross_attention_kv']!r} "
                f"but the weights use the {found!r} cross-attention layout"
            )
        return cfg.replace(cross_attention_kv=found), files, ""
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path} is neither a directory nor a .safetensors file")
    shapes = _read_shapes([path])
    prefix = next((p for p in _FILE_PREFIXES if shapes and all(k.startswith(p) for k in shapes)), "")
    shapes = {k[len(prefix) :]: v for k, v in shapes.items()}
    return infer_config(shapes, config or PRESETS["motif-video-2b"]), [path], prefix


def _weight_files(directory: Path) -> list[Path]:
    index = directory / INDEX_NAME
    if index.is_file():
        weight_map = read_json(index)["weight_map"]
        files = sorted({directory / name for name in weight_map.values()})
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise CheckpointError(f"{index} names shard files that are missing: {absent}")
        return files
    if (directory / WEIGHTS_NAME).is_file():
        return [directory / WEIGHTS_NAME]
    raise CheckpointError(f"{directory} has neither {WEIGHTS_NAME} nor {INDEX_NAME}")


def _read_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Key -> shape from the safetensors headers, without reading any tensor data."""
    shapes = {}
    for file in files:
        check_safetensors(file)
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


def _detect_kv_form(keys: Iterable[str], default: str) -> str:
    """'shared' or 'separate' from the cross-attention key names; `default` when there are none."""
    keys = list(keys)
    shared = any(".cross_attn_query_proj." in k for k in keys)
    separate = any(".cross_attn.to_q." in k for k in keys)
    if shared and separate:
        raise CheckpointError(
            "checkpoint mixes both cross-attention layouts (cross_attn_query_proj and cross_attn.to_q)"
        )
    return "shared" if shared else "separate" if separate else default


def infer_config(shapes: Mapping[str, tuple[int, ...]], base: TransformerConfig) -> TransformerConfig:
    """Architecture of a single-file checkpoint from its tensor shapes; the rest from `base`."""

    def count(template: str) -> int:
        n = 0
        while template.format(n) in shapes:
            n += 1
        return n

    try:
        patch = shapes["x_embedder.proj.weight"]  # [D, C_in, pt, p, p]
        text = shapes["context_embedder.linear_1.weight"]  # [D, Dt]
        out = shapes["proj_out.weight"]  # [pt*p*p*C_out, D]
    except KeyError as e:
        raise CheckpointError(f"not a Motif-Video transformer checkpoint: key {e.args[0]!r} is missing") from None
    hidden, in_channels, pt, p = patch[0], patch[1], patch[2], patch[3]
    if hidden % base.head_dim:
        raise CheckpointError(
            f"hidden size {hidden} is not a multiple of head_dim={base.head_dim} (from the base config)"
        )
    num_dual = count("transformer_blocks.{}.norm1.linear.weight")
    num_single_total = count("single_transformer_blocks.{}.norm.linear.weight")
    mlp_key = (
        "single_transformer_blocks.0.proj_mlp.weight"
        if num_single_total
        else "transformer_blocks.0.ff.net.0.proj.weight"
    )
    cross_dual = (
        "transformer_blocks.0.cross_attn_query_proj.weight" in shapes
        or "transformer_blocks.0.cross_attn.to_q.weight" in shapes
    )
    cross_single = (
        "single_transformer_blocks.0.cross_attn_query_proj.weight" in shapes
        or "single_transformer_blocks.0.cross_attn.to_q.weight" in shapes
    )
    num_decoder = base.num_decoder_blocks
    if cross_single:  # decoder blocks are exactly the single-stream blocks without cross-attention
        num_decoder = sum(
            1
            for i in range(num_single_total)
            if f"single_transformer_blocks.{i}.cross_attn_query_proj.weight" not in shapes
            and f"single_transformer_blocks.{i}.cross_attn.to_q.weight" not in shapes
        )
    if num_decoder > num_single_total:
        raise CheckpointError(
            f"checkpoint has {num_single_total} single-stream blocks, fewer than num_decoder_blocks={num_decoder}"
        )
    image = shapes.get("image_embedder.linear_1.weight")
    return base.replace(
        in_channels=in_channels,
        out_channels=out[0] // (pt * p * p),
        num_heads=hidden // base.head_dim,
        num_dual_blocks=num_dual,
        num_single_blocks=num_single_total - num_decoder,
        num_decoder_blocks=num_decoder,
        mlp_ratio=shapes[mlp_key][0] / hidden,
        patch_size=p,
        patch_size_t=pt,
        text_dim=text[1],
        image_dim=None if image is None else image[1],
        cross_attention_dual=cross_dual,
        cross_attention_single=cross_single,
        cross_attention_kv=_detect_kv_form(shapes, base.cross_attention_kv),
    )


# -- writing ---------------------------------------------------------------------------------


def save_transformer(
    model: MotifVideoTransformer, path: str | os.PathLike, *, max_shard_bytes: int = 5 * 2**30
) -> Path:
    """Write `model` as a diffusers transformer directory (config.json + safetensors shards).

    The separate cross-attention form loads in diffusers' `MotifVideoTransformer3DModel`; the
    shared form is written with the original key names (diffusers cannot load it). The
    directory appears complete or not at all: it is written under a temporary name and renamed.
    """
    path = Path(path)
    cfg = model.cfg
    official = to_official(cfg, model.state_dict())
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for key in sorted(official):
        nbytes = official[key].numel() * official[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = official[key]
        size += nbytes

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; give the usual permissions
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg.to_diffusers(), indent=2) + "\n")
        if len(shards) == 1:
            save_file(shards[0], str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                name = f"diffusion_pytorch_model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(t.numel() * t.element_size() for t in official.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _replace_dir(new: Path, target: Path) -> None:
    """Rename `new` to `target`; an existing `target` is moved aside first, then removed."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rename(target, old / target.name)
        os.rename(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, target)
