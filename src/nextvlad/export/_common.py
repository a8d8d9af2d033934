"""What every exporter shares: the options, the error type, the exporters' silencer."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from nextvlad.errors import NextVLADError, UsageError

FORMATS = ("onnx", "torchscript")
DTYPES = ("fp32", "fp16")
QUANTIZATIONS = ("none", "int8")
BUDGET_BYTES = 10**9  # the 2018 challenge's model size limit, 1 GB
INSTALL_HINT = "pip install -e '.[export]'"


class ExportError(NextVLADError):
    """An export that failed, or an exported file that cannot be read."""


def check_options(dtype: str, quantize: str) -> None:
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if quantize not in QUANTIZATIONS:
        raise UsageError(f"quantize {quantize!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if dtype == "fp16" and quantize == "int8":
        raise UsageError("fp16 weights and int8 quantisation are alternatives: choose one of them")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' progress prints, deprecation warnings and log chatter."""
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "root")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ExportError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from None
    return onnx
