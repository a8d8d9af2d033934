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
    assert imported - allowed <= {"nextvlad.errors", "nextvlad._yt8m"}, imported


def test_dataset_facts_have_one_home() -> None:
    """Segment ids and the Kaggle 100,000 are defined in nextvlad._yt8m only (the data and the
    metrics both import them from there)."""
    import io
    import tokenize

    from nextvlad import _yt8m
    from nextvlad.data import segments as data_segments
    from nextvlad.metrics import segments as metric_segments

    assert data_segments.segment_id is metric_segments.segment_id is _yt8m.segment_id
    written = []
    for path in sorted((REPO_ROOT / "src" / "nextvlad").rglob("*.py")):
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        for token in tokens:
            if token.type == tokenize.NUMBER and token.string.replace("_", "") == "100000":
                written.append(f"{path.relative_to(REPO_ROOT)}:{token.start[0]}")
    assert written == ["src/nextvlad/_yt8m.py:22"], written
