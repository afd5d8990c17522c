"""Runs to pipelines: `export(run_dir, out)` makes a training run's weights a complete pipeline directory
that `generate`, `serve` and `eval` load like any other, and a LoRA run's adapter a file that applies
to its base.

The transformer is the run's EMA export (`ema-transformer/`, LoRA merged in); every other component
(vae/, text_encoder/, tokenizer/, scheduler/, guider/, feature_extractor/) comes from the base
pipeline: the one the run started from (`model.init_from`), else `train.sample_weights`, else the
one given. The manifest names the base (and its fingerprint), the run, its step count and config.
Written beside and renamed: the directory appears only when complete.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from motif_video.sampling.pipeline import check_weights_dir, weights_fingerprint

LORA_FILE = "lora.safetensors"


def base_pipeline(config: dict, cwd: str | Path | None = None) -> Path | None:
    """The pipeline directory a run's config builds on, if it names one (relative paths are taken from `cwd`,
    the folder the run was started in)."""
    root = Path(cwd) if cwd else Path.cwd()
    init = config.get("model", {}).get("init_from")
    candidates = []
    if init:
        init = root / Path(init).expanduser()
        candidates += [init, init.parent]  # a pipeline, or its transformer/ folder
    if config.get("train", {}).get("sample_weights"):
        candidates.append(root / Path(config["train"]["sample_weights"]).expanduser())
    for c in candidates:
        if (c / "transformer" / "config.json").is_file() and (c / "vae" / "config.json").is_file():
            return c
    return None


def export(
    run_dir: str | Path, out: str | Path, base: str | Path | None = None, finish: Callable[[Path], None] | None = None
) -> Path:
    """`finish(partial)`: a last change to the folder before it is renamed into place (a student's guider
    and manifest). A distillation run without --base exports as its student (training/distill.py)."""
    run = Path(run_dir)
    out = Path(out)
    if base is None:
        from motif_video.training.distill import export_student, student_of

        student = student_of(run)
        if student is not None:
            return export_student(run, out, *student)
    config_file = run / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{run} is not a training run folder (no config.json)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file} is not valid JSON ({e.msg}, line {e.lineno})") from None
    if (run / "pipeline" / "manifest.json").is_file() and base is None and config["data"]["source"] == "shapes":
        source = run / "pipeline"  # a shapes-world run exports its own complete pipeline
        check_target(out, run, source)
        _copy_tree(source, out, lambda partial: None)
        return out
    transformer = run / "ema-transformer"
    if not (transformer / "config.json").is_file():
        raise FileNotFoundError(
            f"the run in {run} has not finished: it has no ema-transformer/ yet (run the same train command "
            "again to resume it; it exports at the end)"
        )
    started_in = json.loads((run / "run.json").read_text()).get("cwd") if (run / "run.json").is_file() else None
    base = Path(base) if base is not None else base_pipeline(config, started_in)
    if base is None:
        raise ValueError(
            f"the run in {run} names no base pipeline (model.init_from or train.sample_weights): give --base DIR, "
            "a pipeline directory whose vae/ and text encoder the run's transformer works with"
        )
    check_weights_dir(base)
    check_target(out, run, base)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()[-1:] if line.strip()]
    steps = metrics[-1]["step"] + 1 if metrics else None
    base_manifest = base / "manifest.json"
    defaults = json.loads(base_manifest.read_text()).get("defaults", {}) if base_manifest.is_file() else {}
    defaults = {**defaults, **trained_size(config, started_in)}  # generate's defaults: the size the run trained at
    lora = run / LORA_FILE

    def fill(partial: Path) -> None:
        shutil.rmtree(partial / "transformer")
        shutil.copytree(transformer, partial / "transformer")
        if lora.is_file():
            shutil.copy2(lora, partial / LORA_FILE)
        manifest = {
            "name": out.name,
            "base": str(base.resolve()),
            "base_fingerprint": weights_fingerprint(base),
            "run": str(run.resolve()),
            "steps": steps,
            "lora": {"rank": config["model"]["lora_rank"], "file": LORA_FILE, "merged": True}
            if lora.is_file()
            else None,
            "defaults": defaults,
            "config": config,
        }
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if finish is not None:
            finish(partial)

    _copy_tree(base, out, fill)
    return out


def check_target(out: Path, run: Path, base: Path) -> None:
    """Refuse an output folder whose contents an export would destroy: the run, its base, a folder inside
    them other than the run's own pipeline/, or any non-empty folder that is not an earlier export."""
    target = out.resolve()
    for name, folder in (("the run folder", run.resolve()), ("the base pipeline", base.resolve())):
        inside = target == folder or folder in target.parents
        if inside and target != run.resolve() / "pipeline":
            raise ValueError(f"--out {out} is {name} or inside it; export to a folder of its own")
        if target in folder.parents:
            raise ValueError(f"--out {out} holds {name}; export to a folder of its own")
    manifest = out / "manifest.json"
    earlier = manifest.is_file() and "run" in json.loads(manifest.read_text())
    if out.exists() and any(out.iterdir()) and not earlier and target != run.resolve() / "pipeline":
        raise ValueError(f"--out {out} exists and is not an earlier export: choose a new folder (nothing was written)")


def trained_size(config: dict, cwd: str | None = None) -> dict:
    """height / width / frames / fps of the clips the run trained on, from its shards' metadata."""
    path = config.get("data", {}).get("path")
    if config.get("data", {}).get("source") != "shards" or not path:
        return {}
    from motif_video.data.shards import iterate_shard

    for shard in sorted((Path(cwd) if cwd else Path.cwd()).joinpath(path).glob("shard-*.tar"))[:1]:
        for meta, _ in iterate_shard(shard):
            size = {k: meta[k] for k in ("height", "width", "frames", "fps") if k in meta}
            if float(size.get("fps", 0)).is_integer():  # the CLI's --fps is a whole number
                size["fps"] = int(size["fps"])
            return size
    return {}


def _copy_tree(source: Path, out: Path, fill) -> None:
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns("*.partial", ".*"))
        fill(partial)  # (writes the export's own manifest over the base's)
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
