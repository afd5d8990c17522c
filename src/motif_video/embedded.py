"""The embedded default model: a shapes-world pipeline this project trained, shipped in the package.

`motif-video generate "a red circle moves to the left"` without --weights uses it. It is a
complete pipeline directory (transformer/, vae/, text_encoder/, scheduler/, guider/) in float16,
with `manifest.json`: the command and recipe that trained it, its steps and data seed, its
figures (flow loss, shapes benchmark) and the generation defaults (size, frames, fps, steps).

Rebuilt with `make embedded` (train configs/shapes-tiny.toml, score it, `python -m
motif_video.embedded RUN_DIR EVAL_DIR`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

EMBEDDED = Path(__file__).parent / "weights" / "shapes-tiny"
DEFAULT = "shapes-tiny"  # the shipped models are folders of weights/, named by their folder


def shipped() -> list[str]:
    """The names of the models shipped in the package (shapes-tiny, shapes-tiny-4step, ...)."""
    folders = EMBEDDED.parent.iterdir()
    return sorted(p.name for p in folders if "." not in p.name and (p / "manifest.json").is_file())


def embedded_weights(name: str = DEFAULT) -> Path:
    """The folder of the shipped model `name` (default: the embedded default model)."""
    folder = EMBEDDED if name == DEFAULT else EMBEDDED.parent / name
    if not (folder / "manifest.json").is_file():
        if name != DEFAULT:
            raise FileNotFoundError(f"no shipped model {name!r}; the shipped ones: {', '.join(shipped())}")
        raise FileNotFoundError(
            f"the embedded model is missing from this installation ({folder}); reinstall motif-video, "
            "or pass --weights DIR"
        )
    return folder


def resolve_weights(weights: str | Path | None) -> Path:
    """--weights: a folder, the name of a shipped model, or None (the embedded default model). A folder
    wins over a shipped model of the same name; neither is an error naming the shipped ones."""
    if weights is None:
        return embedded_weights()
    path = Path(weights)
    if path.exists():
        return path
    if str(weights) in shipped():
        return embedded_weights(str(weights))
    raise FileNotFoundError(f"--weights {weights}: no such folder, and not a shipped model ({', '.join(shipped())})")


def manifest(root: str | Path) -> dict:
    """A weights directory's manifest.json, or {} when it has none (released weights)."""
    file = Path(root) / "manifest.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def embed(
    pipeline_dir: str | Path,
    eval_report: str | Path | None,
    out: str | Path = EMBEDDED,
    command: str = "",
    guidance_scale: float | None = None,
    steps: int | None = None,
    name: str = "",
) -> Path:
    """Copy a trained pipeline into `out` with float16 weights, adding the benchmark scores and
    the training command to its manifest; `guidance_scale` / `steps` replace the sampling
    defaults (the CFG scale of guider/, the manifest's steps). Written beside and renamed."""
    pipeline_dir, out = Path(pipeline_dir), Path(out)
    info = manifest(pipeline_dir)
    if not info:
        raise FileNotFoundError(f"{pipeline_dir} has no manifest.json: is it a run's pipeline/ folder?")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(pipeline_dir, partial)
    for file in partial.rglob("*.safetensors"):
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(file)).items()}
        save_file(tensors, str(file), metadata={"format": "pt"})
    if eval_report is not None:
        report = json.loads(Path(eval_report).read_text())
        info.setdefault("metrics", {})["shapes_benchmark"] = {
            split: report[split]["mean"] for split in ("trained", "held_out")
        }
    if command:
        info["command"] = command
    if name:
        info["name"] = name
    if guidance_scale is not None:
        guider = partial / "guider" / "guider_config.json"
        guider.write_text(json.dumps({**json.loads(guider.read_text()), "guidance_scale": guidance_scale}, indent=2))
    if steps is not None:
        info["defaults"]["steps"] = steps
    info["dtype"] = "float16"
    info = portable(info, Path.cwd())
    (partial / "manifest.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def portable(value, cwd: Path):
    """A manifest without this machine's paths: the package's shipped models by name, paths under `cwd`
    relative to it (a shipped manifest says how it was made, not where)."""
    if isinstance(value, dict):
        return {k: portable(v, cwd) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, cwd) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        for root in (EMBEDDED.parent.resolve(), cwd.resolve()):
            if path == root or root in path.parents:
                return path.relative_to(root).as_posix()
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description="Ship a trained shapes-world pipeline as the embedded default model.")
    parser.add_argument("pipeline", help="the run's pipeline/ folder (written by motif-video train)")
    parser.add_argument("--eval", default=None, help="report.json of `motif-video eval shapes` on that pipeline")
    parser.add_argument("--command", default="", help="replaces the training command recorded in the manifest")
    parser.add_argument("--out", default=str(EMBEDDED), help="where to write it (default: inside the package)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="replaces the CFG scale of guider/")
    parser.add_argument("--steps", type=int, default=None, help="replaces the default number of sampling steps")
    parser.add_argument("--name", default="", help="the model's name in its manifest (default: the run's folder name)")
    parser.add_argument(
        "--figure", default=None, help="also write a PNG of frames of the shipped model's samples of FIGURE_PROMPTS"
    )
    args = parser.parse_args()
    path = embed(args.pipeline, args.eval, args.out, args.command, args.guidance_scale, args.steps, args.name)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"embedded model written to {path} ({size / 2**20:.1f} MiB)")
    if args.figure:
        print(f"wrote {samples_figure(path, args.figure)}")


FIGURE_PROMPTS = (  # the samples figure of docs/shapes-world.md and the README: long, short and truncated captions
    "a red circle moves to the left on a gray background",
    "a blue square moves up on a black background",
    "yellow triangle goes down",
    "white circle moving right",
)


def samples_figure(weights: str | Path, out: str | Path, prompts=FIGURE_PROMPTS, columns: int = 5) -> Path:
    """Frames 0, 4, 8, 12, 16 of each prompt's video (the model's defaults, seed 0), one row a prompt."""
    import numpy as np

    from motif_video.media import contact_sheet, write_contact_sheet
    from motif_video.sampling.pipeline import load_pipeline

    pipe = load_pipeline(weights, device="cpu")
    defaults = manifest(Path(weights)).get("defaults", {})
    size = {k: defaults.get(k, v) for k, v in (("height", 64), ("width", 64), ("frames", 17), ("steps", 20))}
    rows = [contact_sheet(pipe(p, seed=0, progress=False, **size).uint8()[0], columns) for p in prompts]
    return write_contact_sheet(np.concatenate(rows, axis=0)[None], out, columns=1)


if __name__ == "__main__":
    main()
