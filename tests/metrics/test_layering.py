"""The metrics stand apart from the data and the models; the segment metric is NumPy only."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def test_metrics_import_neither_data_nor_models() -> None:
    code = (
        "import sys, nextvlad.metrics;"
        "print(sorted(m for m in sys.modules"
        " if m.startswith(('nextvlad.nn', 'nextvlad.models', 'nextvlad.data'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["segments.py", "submission.py"])
def test_segment_modules_need_only_numpy(name: str) -> None:
    tree = ast.parse((REPO_ROOT / "src" / "nextvlad" / "metrics" / name).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(
                node.module if node.module.startswith("nextvlad") else node.module.split(".")[0]
            )
    allowed = {"__future__", "collections", "itertools", "math", "os", "re", "typing", "numpy"}
    assert imported - allowed <= {"nextvlad.errors"}, imported
