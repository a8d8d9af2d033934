"""Data subcommands (`synth`, `inspect`)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # filled in by the data work
    return None
