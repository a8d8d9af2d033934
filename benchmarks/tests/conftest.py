"""Tests of the benchmark scripts. ``benchmarks/`` goes on sys.path, as
``python benchmarks/reproduce`` puts it there, so that ``import reproduce`` finds the package.

This folder has no ``__init__.py`` on purpose: as a package it would be named ``tests`` (the
folder above it is not a package) and clash with the repository's own ``tests`` package."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
