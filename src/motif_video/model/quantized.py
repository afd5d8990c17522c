"""Low-memory transformer weights: int8 weight-only and fp8 (torchao), and GGUF files dequantised per layer.

Only the large projections inside the blocks are quantized; the parts the model is sensitive to
stay in full precision: norms, the adaLN modulation, the timestep / text / image embedders, the
patch embedding and the final layer (RoPE has no weights).

GGUF (the `gguf` package): tensors keep the official checkpoint key names; quantized projection
weights stay quantized in memory (`GGUFLinear` holds the raw blocks and dequantizes its weight at
each call), everything else is dequantized at load. Fused weights of our layout (e.g. Q/K/V) are
made by concatenating the official tensors' rows, which for GGUF's row-wise blocks is a byte
concatenation, so they stay quantized too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motif_video.config import TransformerConfig, get_preset
from motif_video.model.checkpoint_io import check_official_keys, key_table, to_official
from motif_video.model.transformer import MotifVideoTransformer

CONFIG_KEY = "motif_video.transformer_config"  # GGUF metadata: the diffusers config.json, as JSON


def quantizable(name: str, module: nn.Module) -> bool:
    """The large projections inside the blocks; not their adaLN modulation."""
    modulation = name.endswith(("_mod.linear", "modulation.linear"))
    return isinstance(module, nn.Linear) and "_blocks." in name and not modulation


def quantize_int8(model: MotifVideoTransformer) -> MotifVideoTransformer:
    """Weight-only int8 (per-channel scales) on the block projections, in place (torchao)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, name: quantizable(name, m))
    return model


FP8_CAPABILITY = (8, 9)  # float8 matmuls: Ada (8.9), Hopper (9.0) and newer


def fp8_unavailable(device: torch.device | str) -> str | None:
    """Why fp8 cannot run on `device` (None when it can): float8 matmuls need a GPU of compute capability
    8.9 or newer."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"--quantize fp8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper); got {device}"
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        return (
            f"--quantize fp8 needs compute capability 8.9 or newer (Ada, Hopper); {name} has "
            f"{capability[0]}.{capability[1]} (use --quantize int8)"
        )
    return None


def quantize_fp8(model: MotifVideoTransformer) -> MotifVideoTransformer:
    """float8 e4m3 dynamic activations and weights (per-row scales) on the block projections, in place
    (torchao); the model must already be on a GPU that `fp8_unavailable` accepts."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    reason = fp8_unavailable(next(model.parameters()).device)
    if reason is not None:
        raise ValueError(reason)
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    quantize_(model, config, filter_fn=lambda m, name: quantizable(name, m))
    return model


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the weights as stored (quantized tensors count their packed data and scales)."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        inner = [getattr(tensor, a) for a in ("qdata", "scale", "zero_point") if hasattr(tensor, a)]
        parts = [t for t in inner if isinstance(t, Tensor)] or [tensor]
        total += sum(t.numel() * t.element_size() for t in parts)
    return total


class GGUFLinear(nn.Module):
    """A linear layer whose weight stays in GGUF blocks and is dequantized at each call."""

    def __init__(self, raw: np.ndarray, qtype: int, shape: tuple[int, int], bias: Tensor | None) -> None:
        super().__init__()
        self.register_buffer("raw", torch.from_numpy(np.ascontiguousarray(raw)), persistent=False)
        self.qtype, self.out_features, self.in_features = qtype, shape[0], shape[1]
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def weight_now(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        w = dequantize(self.raw.cpu().numpy(), GGMLQuantizationType(self.qtype))
        return torch.from_numpy(w.reshape(self.out_features, self.in_features)).to(device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight_now(x.dtype, x.device), bias)


def write_gguf(model: MotifVideoTransformer, path: str | Path, qtype: str = "Q8_0") -> Path:
    """The transformer as a GGUF file in the official key layout: block projections in `qtype`
    (Q8_0, Q4_0, Q5_0, ...), the rest in float32; the config in the metadata."""
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    kind = GGMLQuantizationType[qtype]
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    quantized_ours = {f"{n}.weight" for n, m in model.named_modules() if quantizable(n, m)}
    table = key_table(model.cfg)
    quantized = {their for key in quantized_ours for their, _ in table[key]}
    official = to_official(model.cfg, ours)
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    writer = GGUFWriter(str(partial), "motif-video")
    writer.add_string(CONFIG_KEY, json.dumps(model.cfg.to_diffusers()))
    for name, tensor in official.items():
        array = tensor.numpy()
        if name in quantized and array.shape[-1] % 32 == 0:
            writer.add_tensor(name, quantize(array, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, array.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(path)
    return path


def load_gguf_transformer(
    path: str | Path,
    config: TransformerConfig | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> MotifVideoTransformer:
    """A transformer from a GGUF file (official key names), its quantized projections kept quantized.
    The config comes from the file's metadata, else `config`, else the 2B preset."""
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise ValueError(f"{path} is not a readable GGUF file: {e}") from None
    field = reader.get_field(CONFIG_KEY)
    if field is not None:
        config = TransformerConfig.from_diffusers(json.loads(bytes(field.parts[field.data[0]]).decode()))
    cfg = config or get_preset("motif-video-2b")
    tensors = {t.name: t for t in reader.tensors}
    check_official_keys(cfg, {n: tuple(int(d) for d in reversed(t.shape)) for n, t in tensors.items()})
    plain = (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16)

    def full(name: str) -> Tensor:
        t = tensors[name]
        shape = tuple(int(d) for d in reversed(t.shape))
        return torch.from_numpy(np.array(dequantize(t.data, t.tensor_type)).reshape(shape)).float()

    with torch.device("meta"):
        model = MotifVideoTransformer(cfg)
    state, layers = {}, {}
    for ours, parts in key_table(cfg).items():
        types = {tensors[k].tensor_type for k, _ in parts}
        module_name = ours.removesuffix(".weight")
        if ours.endswith(".weight") and len(types) == 1 and types.pop() not in plain:
            raw = np.concatenate([tensors[k].data for k, _ in parts])  # rows of blocks: bytes concatenate
            rows = sum(int(tensors[k].shape[-1]) for k, _ in parts)  # GGUF lists dimensions innermost first
            layers[module_name] = (raw, int(tensors[parts[0][0]].tensor_type), rows)
        else:
            state[ours] = torch.cat([full(k) for k, _ in parts]) if len(parts) > 1 else full(parts[0][0])
    for name, (raw, qtype, rows) in layers.items():
        linear = model.get_submodule(name)
        bias = state.pop(f"{name}.bias", None)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, GGUFLinear(raw, qtype, (rows, linear.in_features), bias))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected or [k for k in missing if k.rsplit(".", 1)[0] not in layers]:
        raise ValueError(f"GGUF load left keys unmatched: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if dtype in (torch.bfloat16, torch.float16):
        model.to_half(dtype)  # the conditioning path stays float32, as load_transformer does
    else:
        model.to(dtype)
    return model.to(device).eval()
