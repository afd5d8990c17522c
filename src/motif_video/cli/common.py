"""What every command group shares: the error type, the help layout, the weights / device / dtype options."""

from __future__ import annotations

import argparse
from pathlib import Path


def silence_libraries() -> None:
    """Library notices that say nothing to a user of this command (set before those libraries load):
    torchao's optional kernels that this machine lacks, torch's pytree deprecations raised while
    torchao registers its types, transformers' torchvision fallback notice, diffusers' "guiders are
    experimental". Real errors still reach stderr; a user who set the libraries' verbosity keeps it."""
    import logging
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_libraries() -> None:
    """--quiet: the libraries' own progress bars (weight loading, shard writing) go too."""
    import os

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default once: appended only where the help text does not already speak of it,
    and never for defaults that mean "unset" (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or action.option_strings == []
        ):
            return text
        return f"{text} (default: %(default)s)"


def add_parser(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser with the house help layout."""
    return sub.add_parser(name, formatter_class=HelpFormatter, **kwargs)


def add_weights_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        default=None,
        help="a pipeline directory in the official layout, or a shipped model's name: shapes-tiny (the "
        "embedded shapes-world model, the default) or shapes-tiny-4step (its 4-step distilled student)",
    )


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """--device and --dtype, the same on every command that runs a model."""
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="weights dtype (default: bfloat16 on CUDA, float32 on the CPU)",
    )


def weights_path(args: argparse.Namespace) -> Path:
    """--weights, or the embedded model; the directory is checked before anything loads."""
    from motif_video.embedded import resolve_weights
    from motif_video.sampling.pipeline import check_weights_dir

    weights = resolve_weights(args.weights)
    check_weights_dir(weights)
    return weights


def fill_defaults(args: argparse.Namespace, weights: Path | None, fallback: dict) -> None:
    """Options left unset take the weights' own defaults (their manifest.json), else `fallback`."""
    from motif_video.embedded import manifest

    values = dict(fallback)
    if weights is not None:
        values.update({k: v for k, v in manifest(weights).get("defaults", {}).items() if k in fallback})
    for name, value in values.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def load_pipeline(args: argparse.Namespace, weights: Path, **options):
    """The pipeline of `weights` on the command's --device / --dtype (the one loading path of every command)."""
    from motif_video.sampling.pipeline import load_pipeline as load

    return load(weights, device=args.device, dtype=args.dtype, **options)
