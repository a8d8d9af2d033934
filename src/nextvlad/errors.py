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
