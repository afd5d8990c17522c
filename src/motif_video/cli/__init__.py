"""`motif-video`: one subcommand per job, one module per command group. Parsing and display only:
each command calls the package's Python API, which holds the work.

    generate.py   generate, serve
    data.py       curate, caption, select, prepare, precompute
    train.py      train, distill, export, curriculum, plan
    evaluate.py   eval, analyze
    model.py      info, convert

Every failure the user can fix (bad options, missing or broken files) ends in one line on stderr
and exit status 2; an interrupt exits 130, also one that comes while the libraries load (the parser
needs no torch, so `--help` answers at once; each command imports the heavy libraries when it runs,
inside `main`'s handler).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from motif_video.cli.common import UsageError, quiet_libraries, silence_libraries

__all__ = ["UsageError", "build_parser", "main"]

RESUMABLE = ("train", "distill", "curriculum", "curate", "caption", "prepare", "precompute")


def build_parser() -> argparse.ArgumentParser:
    from motif_video import __version__
    from motif_video.cli import data, evaluate, generate, model, train

    parser = argparse.ArgumentParser(
        prog="motif-video",
        description="Motif-Video 2B: text-to-video and image-to-video diffusion transformer.",
    )
    parser.add_argument("--version", action="version", version=f"motif-video {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (generate, data, train, evaluate, model):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    silence_libraries()
    name = "motif-video"  # then "motif-video COMMAND", once parsed
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        name = f"motif-video {args.command}"
        if args.command in (
            "train",
            "distill",
            "curriculum",
            "curate",
        ):  # overrides may come after options: `train cfg.toml --quiet a.b=1`
            args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
            extra = [e for e in extra if e not in args.overrides]
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if getattr(args, "quiet", False):
            quiet_libraries()
        return args.run(args)
    except KeyboardInterrupt:
        if name.removeprefix("motif-video ") in RESUMABLE:
            kept = "finished work (checkpoints, parts, shards) is kept: run the same command again to resume"
        elif name == "motif-video":
            kept = "nothing had started"
        else:
            kept = "no partial output was kept"
        print(f"{name}: interrupted; {kept}", file=sys.stderr)
        return 130
    except (UsageError, ValueError, OSError, FloatingPointError) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
