"""Training checkpoints that lose nothing: sharded (torch.distributed.checkpoint), atomic, pruned.

Checkpoint metadata (DCP's `.metadata`) is a pickle, and a run folder may come from someone else:
it is read with an unpickler that admits only the checkpoint metadata classes (and torch sizes,
dtypes, layouts, paths), so a crafted `.metadata` is refused instead of run. The tensors themselves
are read as raw bytes by DCP.

A checkpoint is the folder `step-NNNNNNN/` in the run directory: model (with the REPA projector
while it exists), optimizer, EMA and `meta.json` (step, skipped steps). Every rank writes its
shards into `step-NNNNNNN.partial/`; rank 0 renames it when all are done, so a folder without
`.partial` is complete and a killed save leaves only a `.partial` that resume ignores and the
next save replaces. The learning rate is a function of the step; the data position and every
random draw are functions of (seed, step, rank), so the step restores them too.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.optim import Optimizer

from motif_video import distributed
from motif_video.training.ema import EMA

_NAME = re.compile(r"^step-(\d{7})$")


class UnsafeCheckpoint(ValueError):
    """Checkpoint metadata that names something other than checkpoint metadata classes."""


class _MetadataUnpickler(pickle.Unpickler):
    ALLOWED_MODULES = ("torch.distributed.checkpoint.metadata",)
    ALLOWED = {
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("collections", "OrderedDict"),
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PurePosixPath"),
    }

    def find_class(self, module: str, name: str):
        if module in self.ALLOWED_MODULES or (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpoint(f"{module}.{name}")


class SafeReader(FileSystemReader):
    """DCP's file reader with the metadata read by `_MetadataUnpickler`."""

    def read_metadata(self, *args, **kwargs):
        from torch.distributed.checkpoint.metadata import StorageMeta

        path = self._get_metadata_path(kwargs.get("rank"))
        try:
            with self.fs.create_stream(path, "rb") as f:
                metadata = _MetadataUnpickler(f).load()
        except UnsafeCheckpoint as e:
            raise UnsafeCheckpoint(
                f"checkpoint metadata {path} names {e}, which checkpoint metadata never holds: refused (a pickle "
                "can run code when loaded; this checkpoint was not written by motif-video)"
            ) from None
        except (pickle.UnpicklingError, EOFError, AttributeError) as e:
            raise ValueError(f"checkpoint metadata {path} is not readable ({type(e).__name__}: {e})") from None
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def save(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: Optimizer,
    ema: EMA,
    meta: dict,
    keep_last: int,
    is_main: bool,
) -> Path:
    final = run_dir / f"step-{step:07d}"
    partial = run_dir / f"step-{step:07d}.partial"
    if is_main and partial.exists():
        shutil.rmtree(partial)
    distributed.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    with warnings.catch_warnings():  # one process without a process group is a supported case
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"model": model_state, "optim": optim_state, "ema": ema.state_dict()}, checkpoint_id=str(partial))
    distributed.barrier()
    if is_main:
        (partial / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        for old in checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old)
    distributed.barrier()
    return final


def load(path: Path, model: nn.Module, optimizer: Optimizer, ema: EMA) -> dict:
    """Restore in place; returns meta.json."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state, "ema": ema.state_dict()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        reader = SafeReader(str(path))
        saved = reader.read_metadata()  # here, not inside dcp.load, which would swallow a refusal and try other files
        # Parameters that never had a gradient (e.g. the image embedder, on data without image tokens) have
        # no optimizer state in the checkpoint, though a fresh optimizer's state dict lists them: not loaded,
        # they stay without state, as in the run that saved it.
        unsaved = [n for n in optim_state.get("state", {}) if not _saved(saved, f"optim.state.{n}.")]
        for name in unsaved:
            del optim_state["state"][name]
        dcp.load(state, storage_reader=reader)
    # the model's keys were all checked by dcp.load; strict=False lets those parameters stay without state
    options = StateDictOptions(strict=not unsaved)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"], options=options)
    ema.load_state_dict(state["ema"])
    return json.loads((path / "meta.json").read_text())


def _saved(metadata, prefix: str) -> bool:
    return any(key.startswith(prefix) for key in metadata.state_dict_metadata)
