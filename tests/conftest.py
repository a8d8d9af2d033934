"""Shared test helpers: locating `../shared` beside the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def shared_path(relative: str) -> Path:
    """Path of a file in `../shared`; fails under CI=true when missing, skips otherwise."""
    path = SHARED / relative
    if not path.exists():
        message = f"shared file missing: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
