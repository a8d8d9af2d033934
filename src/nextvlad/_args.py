"""Kinds of option values: each parses command-line text and checks a value given in Python.

One definition serves ``argparse`` (``type=KIND``: a bad value is a usage error naming the
flag) and the option dataclasses' validation (``KIND.check(value)``, which raises
``ValueError``), so that a value is accepted or refused the same way from either side.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any


class Kind:
    """A kind of value: ``convert`` turns text into a value, ``check`` refuses bad values
    (``ValueError`` with a message that starts with the value, e.g. "-1 is negative")."""

    def __init__(
        self, name: str, convert: Callable[[str], Any], check: Callable[[Any], None]
    ) -> None:
        self.__name__ = name  # argparse names the type in some of its messages
        self.convert = convert
        self.check = check

    def __call__(self, text: str) -> Any:
        try:
            value = self.convert(text)
            self.check(value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    def __repr__(self) -> str:
        return self.__name__


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _is_int(value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")


def _is_finite(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")


def _positive_int(value: Any) -> None:
    _is_int(value)
    if value <= 0:
        raise ValueError(f"{value} is not positive")


def _non_negative_int(value: Any) -> None:
    _is_int(value)
    if value < 0:
        raise ValueError(f"{value} is negative")


def _seed(value: Any) -> None:
    _non_negative_int(value)
    if value >= 2**63:
        raise ValueError(f"{value} is not below 2**63")


def _positive_float(value: Any) -> None:
    _is_finite(value)
    if value <= 0:
        raise ValueError(f"{value} is not positive")


def _non_negative_float(value: Any) -> None:
    _is_finite(value)
    if value < 0:
        raise ValueError(f"{value} is negative")


def _decay_factor(value: Any) -> None:
    _is_finite(value)
    if not 0 < value <= 1:
        raise ValueError(f"{value} is not in (0, 1]")


def _device(value: Any) -> None:
    """auto, cpu, cuda or cuda:N, checked against the devices this machine has."""
    import torch

    if value == "auto":
        return
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{value!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{value}: this machine has no CUDA device")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{value}: this machine has {count} CUDA devices")
    elif device.type != "cpu":
        raise ValueError(f"{value!r}: expected auto, cpu, cuda or cuda:N")


def _override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r}: expected KEY=VALUE, e.g. num_classes=25")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.replace("-", "_"), value


def _nothing(value: Any) -> None:
    return None


POSITIVE_INT = Kind("positive_int", _integer, _positive_int)
NON_NEGATIVE_INT = Kind("non_negative_int", _integer, _non_negative_int)
SEED = Kind("seed", _integer, _seed)
POSITIVE_FLOAT = Kind("positive_float", _number, _positive_float)
NON_NEGATIVE_FLOAT = Kind("non_negative_float", _number, _non_negative_float)
DECAY_FACTOR = Kind("decay_factor", _number, _decay_factor)
DEVICE = Kind("device", str, _device)
OVERRIDE = Kind("override", _override, _nothing)


def positive_int(text: str) -> int:
    """argparse ``type=`` for a positive integer option."""
    return POSITIVE_INT(text)


def non_negative_int(text: str) -> int:
    """argparse ``type=`` for a non-negative integer option."""
    return NON_NEGATIVE_INT(text)


CACHE_DIR_HELP = (
    "remote data (gs://, s3://, https://): keep a copy of each shard read whole in this folder "
    "and read it from there afterwards (checked by size and CRC; several workers and ranks "
    "may share the folder); local files are never copied"
)
