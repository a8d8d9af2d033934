"""The `nextvlad` command line: one parser per subcommand module, dispatched here.

Every subcommand module defines ``register(subparsers)``, which adds its parsers and sets
``func`` (``Callable[[argparse.Namespace], int]``) as the parser default. Entry points are
``main(argv=None)`` so tests call them in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from nextvlad._cpu_env import apply_cpu_defaults
from nextvlad.errors import NextVLADError, UsageError, error_message

# Subcommand modules, in the order their commands appear in `nextvlad --help`.
_COMMAND_MODULES = (
    "nextvlad.cli.demo",
    "nextvlad.cli.train",
    "nextvlad.cli.evaluate",
    "nextvlad.cli.predict",
    "nextvlad.cli.segments",
    "nextvlad.cli.models",
    "nextvlad.cli.data",
    "nextvlad.cli.export",
    "nextvlad.cli.extract",
    "nextvlad.cli.serve",
)


class _Parser(argparse.ArgumentParser):
    """A parser whose errors are one line, ``nextvlad CMD: error: ... (see nextvlad CMD
    --help)``, exit code 2: the usage block is what ``--help`` is for."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from nextvlad import __version__

    parser = _Parser(
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


def run() -> int:
    """The `nextvlad` command (and `python -m nextvlad`): the CPU process settings of
    :mod:`nextvlad._cpu_env` where the user has not set them (before torch loads), then
    :func:`main` on ``sys.argv``."""
    apply_cpu_defaults()
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Exit codes: 0 done; 2 a usage error (an option value, a path that
    does not exist or a glob that matches nothing, an option's file such as --eigenvals,
    --vocabulary, --segment-classes or --submission that is not what it should be); 1 a
    failure on well-formed input (corrupt records, records or a checkpoint that do not fit the
    model or the mode, e.g. --segments on video-level records or records without ratings, a
    non-finite loss, a full disk); 128 + N when signal N stopped training (130 Ctrl-C, 143
    SIGTERM). Errors are one line, `nextvlad CMD: error: ...`, no traceback; argument errors
    end with a hint, ``(see nextvlad CMD --help)``."""
    parser = build_parser()
    args = _parse(parser, argv)
    command = f"nextvlad {args.command}"
    try:
        with _cache_dir(getattr(args, "cache_dir", None)):
            return int(args.func(args) or 0)
    except UsageError as err:
        parser.exit(2, f"{command}: error: {error_message(err)}\n")
    except NextVLADError as err:
        from nextvlad.data.errors import NoDataFilesError  # loaded already if it was raised

        if isinstance(err, NoDataFilesError):  # paths from the command line
            parser.exit(2, f"{command}: error: {error_message(err)}\n")
        print(f"{command}: error: {error_message(err)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `nextvlad ... | head`
        return 0
    except OSError as err:  # the environment: a full disk, a file that cannot be written
        print(f"{command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C while training stops, or Ctrl-C elsewhere
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with the arguments no subcommand takes reported by the
    subcommand's parser (`nextvlad eval: error: unrecognized arguments: ...`)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        action.choices[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _cache_dir(folder: str | None) -> contextlib.AbstractContextManager[None]:
    """``--cache-dir`` for the command (and the workers it starts), then as it was."""
    if not folder:
        return contextlib.nullcontext()
    from nextvlad.data.remote import cache_dir_applied

    return cache_dir_applied(folder)
