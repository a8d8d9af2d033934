"""Exception types of the project (standard library only, so every layer may import them)."""

from __future__ import annotations


class NextVLADError(Exception):
    """Base class of every error this project raises on purpose.

    The command line prints these as one line (no traceback) and exits non-zero.
    """


class ConfigError(NextVLADError, ValueError):
    """An invalid model or run configuration (sizes, presets, options)."""


class UsageError(NextVLADError):
    """A mistake on the command line (bad option values, missing files). Exit code 2."""


class CheckpointError(NextVLADError):
    """A checkpoint that cannot be read, or that does not fit the model it is loaded into."""


def error_message(err: BaseException) -> str:
    """The message of ``err`` as one line for the user.

    An error raised in a torch DataLoader worker process comes back to the main process
    re-created from a message that holds the worker's whole traceback ("Caught X in DataLoader
    worker process N. Original Traceback ..."); this returns the original message instead.
    """
    text = str(err)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
        for line in reversed(text.rstrip().splitlines()):
            if line.startswith(prefix):
                return line[len(prefix) :]
    return text
