"""The documentation's snippets work as written.

- Every ```python block of README.md and docs/*.md runs, on the CPU, in a fresh namespace and
  an empty temporary folder. Files a block reads that only real data would have (Google's PCA
  eigenvalues, an exported model) are made here, tiny, when the block names them. A block may
  opt out only with the marker comment ``# not run by tests/test_docs.py: <why>``; it is still
  compiled.
- Shell blocks are not run, but every `nextvlad SUBCOMMAND` they name (also as
  ``python -m nextvlad`` or under torchrun) is a registered subcommand, each ``--option``
  given to it is one of that subcommand's, and each script they run exists in the repository.
  Subcommands named in inline code (`nextvlad inspect`) exist too.
- JSON blocks parse.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nextvlad.cli import build_parser
from tests.conftest import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
OPT_OUT = "# not run by tests/test_docs.py:"
SHELL = {"bash", "sh", "shell", "console", ""}
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the block's first line of code (1-based)
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    blocks, language, start, lines = [], None, 0, []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(text)
        if language is None:
            if fence:
                language, start, lines = fence.group(1).lower(), number + 1, []
        elif text.strip() == "```":
            blocks.append(Block(path, start, language, "\n".join(lines) + "\n"))
            language = None
        else:
            lines.append(text)
    assert language is None, f"{path}: a code block is not closed"
    return blocks


ALL = [block for path in DOCS for block in _blocks(path)]
PYTHON = [b for b in ALL if b.language in ("python", "py")]
SHELL_BLOCKS = [b for b in ALL if b.language in SHELL]


def test_the_docs_have_snippets() -> None:
    """The extraction finds the blocks (a broken fence pattern would pass every test)."""
    names = {b.name.split(":")[0] for b in PYTHON}
    assert {"README.md", "docs/data.md", "docs/models.md"} <= names
    assert len(SHELL_BLOCKS) >= 10


# Files that snippets read and a test cannot have (the real data), made tiny on request.


def _eigenvalues(folder: Path) -> None:
    path = folder / "yt8m_pca" / "eigenvals.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.random.default_rng(0).uniform(0.1, 4.0, (2048, 1)).astype(np.float32)
    np.save(path, values)  # the shape and dtype of Google's file


def _exported(name: str, format: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        import torch

        from nextvlad.export import ServingModel, export
        from nextvlad.models import InputTransform, create_model

        torch.manual_seed(0)
        small = {"num_clusters": 4, "hidden_size": 16, "num_classes": 25, "expansion": 1}
        model = create_model("nextvlad-8g-128k-2048h", **small)
        export(ServingModel(InputTransform(), model), folder / name, format=format)

    return make


def _segment_classes(folder: Path) -> None:
    """Google's segment_label_ids.csv has an ``Index`` header, then one class a line."""
    (folder / "segment_label_ids.csv").write_text("Index\n" + "".join(f"{c}\n" for c in (3, 7, 8)))


def _segment_rated(folder: Path) -> None:
    from nextvlad.data import write_synthetic

    write_synthetic(folder, videos=8, shards=1, prefix="validate", segment_ratings=3)


PROVIDED: dict[str, Callable[[Path], None]] = {
    "yt8m_pca/eigenvals.npy": _eigenvalues,
    "segment_label_ids.csv": _segment_classes,
    "validate*.tfrecord": _segment_rated,
    "nextvlad-8g.onnx": _exported("nextvlad-8g.onnx", "onnx"),
    "nextvlad-8g.pt": _exported("nextvlad-8g.pt", "torchscript"),
}

# Blocks (by file:line) known to be wrong still, in files that other work is changing: strict,
# so that an entry must go once its block is fixed.
KNOWN_BROKEN: dict[str, str] = {}


def _params(blocks: list[Block]) -> list[object]:
    out: list[object] = []
    for block in blocks:
        marks = []
        if block.name in KNOWN_BROKEN:
            marks.append(pytest.mark.xfail(reason=KNOWN_BROKEN[block.name], strict=True))
        out.append(pytest.param(block, id=block.name, marks=marks))
    return out


@pytest.mark.parametrize("block", _params(PYTHON))
def test_python_snippet_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Line numbers of the document in tracebacks: the code starts at its line in the file.
    code = compile("\n" * (block.line - 1) + block.code, str(block.path), "exec")
    marker = next((line for line in block.code.splitlines() if OPT_OUT in line), None)
    if marker is not None:
        reason = marker.split(OPT_OUT, 1)[1].strip()
        assert reason, f"{block.name}: say why the block is not run"
        pytest.skip(f"{block.name}: {reason}")
    monkeypatch.chdir(tmp_path)
    for name, make in PROVIDED.items():
        if name in block.code:
            make(tmp_path)
    exec(code, {"__name__": "__docs__"})


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


def _commands(block: Block) -> list[list[str]]:
    """The block's command lines (continuations joined, comments dropped), as tokens, split
    at ``&&``, ``||``, ``|`` and ``;``."""
    text = block.code.replace("\\\n", " ")
    out, pending = [], ""
    for line in text.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            tokens = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the string goes on on the next line
            if not block.language:  # an untyped block may hold other text (a folder tree)
                pending = ""
            continue
        pending = ""
        command: list[str] = []
        for token in tokens:
            if token in ("&&", "||", "|", ";"):
                out.append(command)
                command = []
            else:
                command.append(token)
        out.append(command)
    assert not pending, f"{block.name}: a quote is not closed: {pending!r}"
    return [c for c in out if c]


def _nextvlad_invocation(tokens: list[str]) -> list[str] | None:
    """The tokens after `nextvlad` (as a command or `-m nextvlad`), or None."""
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):  # VAR=value prefix
        tokens = tokens[1:]
    if tokens and tokens[0] == "nextvlad":
        return tokens[1:]
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] == "nextvlad":
            return tokens[i + 2 :]
    return None


def _option_names(tokens: list[str]) -> list[str]:
    """``--options`` among the tokens, placeholders such as ``[--a|--b]`` opened up."""
    names = []
    for token in tokens:
        for part in token.strip("[]").split("|"):
            if part.startswith("--"):
                names.append(part.split("=", 1)[0])
    return names


@pytest.mark.parametrize("block", _params(SHELL_BLOCKS))
def test_shell_snippet_names_commands_that_exist(block: Block) -> None:
    subcommands = _subcommands()
    for tokens in _commands(block):
        rest = _nextvlad_invocation(tokens)
        if rest is not None:
            assert rest, f"{block.name}: `nextvlad` without a subcommand"
            sub = rest[0]
            assert sub in subcommands, f"{block.name}: no subcommand `nextvlad {sub}`"
            known = set(subcommands[sub]._option_string_actions)
            unknown = [o for o in _option_names(rest[1:]) if o not in known]
            assert not unknown, f"{block.name}: `nextvlad {sub}` has no option {unknown}"
            continue
        program = Path(tokens[0]).name
        if program.startswith("python") and tokens[1:2] == ["-c"]:  # inline code: compiles
            compile(tokens[2], f"{block.name} (python -c)", "exec")
        elif program.startswith("python") or program == "bash":
            scripts = [t for t in tokens[1:2] if not t.startswith("-")]
            for script in scripts:  # a file, or a folder with a __main__.py
                path = REPO_ROOT / script
                runnable = path.is_file() or (path / "__main__.py").is_file()
                assert runnable, f"{block.name}: no {script} here"


def test_subcommands_named_in_the_prose_exist() -> None:
    subcommands = _subcommands()
    for path in DOCS:
        for match in re.finditer(r"`nextvlad ([a-z][a-z-]*)", path.read_text(encoding="utf-8")):
            name = match.group(1)
            assert name in subcommands, f"{path.name}: `nextvlad {name}` is not a subcommand"


@pytest.mark.parametrize("block", [b for b in ALL if b.language == "json"], ids=lambda b: b.name)
def test_json_snippet_parses(block: Block) -> None:
    json.loads(block.code)
