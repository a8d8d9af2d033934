"""The `nextvlad` command line: one parser per subcommand module, dispatched here.

Every subcommand module defines ``register(subparsers)``, which adds its parsers and sets
``func`` (``Callable[[argparse.Namespace], int]``) as the parser default. Entry points are
``main(argv=None)`` so tests call them in-process.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from nextvlad.errors import NextVLADError, UsageError

# Subcommand modules, in the order their commands appear in `nextvlad --help`.
_COMMAND_MODULES = (
    "nextvlad.cli.demo",
    "nextvlad.cli.train",
    "nextvlad.cli.models",
    "nextvlad.cli.data",
)


def build_parser() -> argparse.ArgumentParser:
    from nextvlad import __version__

    parser = argparse.ArgumentParser(
        prog="nextvlad",
        description=(
            "NeXtVLAD (Lin et al., ECCV 2018 workshops) and baselines for video classification "
            "from frame-level features such as YouTube-8M's."
        ),
    )
    parser.add_argument("--version", action="version", version=f"nextvlad {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        parser.exit(2, f"nextvlad {args.command}: error: {err}\n")
    except NextVLADError as err:
        print(f"nextvlad {args.command}: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `nextvlad ... | head`
        return 0
