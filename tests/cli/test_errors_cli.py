"""The same mistake gives the same one-line error and exit code in every subcommand.

The codes are those of ``nextvlad.cli.main``'s docstring: 2 for a usage error (an option value,
a path that does not exist, an option's file that is not what it should be), 1 for a failure
on well-formed input (the content of data files and checkpoints, data that does not fit the
model or the mode).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nextvlad.checkpoint import save_model
from nextvlad.cli import build_parser
from nextvlad.data import write_synthetic
from nextvlad.data.synth import SynthConfig
from nextvlad.models import build_model, get_config
from tests.cli.conftest import run_cli

MODEL = ["--preset", "nextvlad-8g-128k-2048h", "--set", "num_clusters=4", "--set"]
MODEL += ["hidden_size=16", "--set", "num_classes=25", "--set", "expansion=1"]


@dataclass(frozen=True)
class Files:
    root: Path
    rated: str  # segment-rated frame-level TFRecords
    video_level: str  # video-level TFRecords
    checkpoint: str  # a tiny frame-level model
    junk: str  # a file that is no TFRecord
    text: str  # a text file that is no CSV of the expected columns, no .npz, no JSON object
    npz: str  # an .npz of arrays

    def missing(self, name: str = "nope") -> str:
        return str(self.root / name)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("errors")
    short = SynthConfig(num_classes=25, min_frames=8, max_frames=16, min_run=1, max_run=3)
    write_synthetic(root / "rated", videos=6, shards=1, num_classes=25, seed=1, config=short,
                    segment_ratings=3)  # fmt: skip
    write_synthetic(root / "vl", videos=4, shards=1, num_classes=25, seed=2, frame_level=False)
    config = get_config(
        "nextvlad-8g-128k-2048h", num_clusters=4, hidden_size=16, num_classes=25, expansion=1
    )
    save_model(root / "ckpt", build_model(config), config)
    (root / "junk.tfrecord").write_bytes(b"no tfrecord " * 8)
    (root / "text.txt").write_text("hello, world\n")
    np.savez(root / "vars.npz", a=np.ones(3, np.float32))
    return Files(
        root,
        str(root / "rated" / "*.tfrecord"),
        str(root / "vl" / "*.tfrecord"),
        str(root / "ckpt"),
        str(root / "junk.tfrecord"),
        str(root / "text.txt"),
        str(root / "vars.npz"),
    )


def assert_one_line(argv: list[str], code: int, *needles: str) -> str:
    """``main(argv)`` exits ``code`` with one stderr line `nextvlad CMD: error: ...` holding
    every needle; returns that line."""
    got, _, err = run_cli(argv)
    lines = err.strip().splitlines()
    assert got == code and len(lines) == 1, (argv, got, err)
    assert lines[0].startswith(f"nextvlad {argv[0]}: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


# --- N6: argument errors are one line and a hint, no usage block --------------------------


@pytest.mark.parametrize("command", _subcommands())
def test_an_unknown_option_is_one_line_naming_the_subcommand(command: str) -> None:
    line = assert_one_line([command, "--no-such-option"], 2)
    assert line.endswith(f"(see nextvlad {command} --help)"), line


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--lr", "x"],
        ["eval", "--data", "x"],  # --checkpoint missing
        ["predict", "--checkpoint", "c", "--data", "d", "--out", "o", "--top-k", "0"],
        ["export", "--checkpoint", "c", "--out", "o", "--format", "tflite"],
        ["score-segments", "--submission", "s", "--data", "d", "--top-n", "-1"],
        ["synth"],
    ],
)
def test_a_bad_argument_is_one_line_and_a_hint(argv: list[str]) -> None:
    line = assert_one_line(argv, 2)
    assert line.endswith(f"(see nextvlad {argv[0]} --help)"), line
    assert "usage:" not in line


def test_no_subcommand_is_one_line() -> None:
    code, _, err = run_cli([])
    assert code == 2 and err.strip().count("\n") == 0 and "nextvlad: error: " in err, err


# --- defect 5 and the shared loader options ------------------------------------------------


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
@pytest.mark.parametrize(
    ("option", "value"), [("--num-workers", "-1"), ("--num-workers", "x"), ("--batch-size", "0")]
)
def test_loader_options_are_checked_alike(
    files: Files, command: str, option: str, value: str
) -> None:
    argv = [command, "--checkpoint", files.checkpoint, "--out", files.missing("o.onnx")]
    argv += ["--format", "onnx", "--eval-data"] if command == "export" else ["--data"]
    argv += [files.rated, option, value]
    if command == "eval":
        argv.remove("--out")
        argv.remove(files.missing("o.onnx"))
    assert_one_line(argv, 2, f"argument {option}: ")


def test_loader_options_have_one_definition() -> None:
    """--batch-size, --num-workers, --skip-corrupt: the same type, default and help wherever
    a command reads records after a model (eval, predict, export --eval-data)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    seen: dict[str, set[tuple[object, object]]] = {}
    for name in ("eval", "predict", "export"):
        for action in commands[name]._actions:
            if action.dest in ("batch_size", "num_workers", "skip_corrupt"):
                seen.setdefault(action.dest, set()).add((action.type, action.default))
    assert {k: len(v) for k, v in seen.items()} == {
        "batch_size": 1,
        "num_workers": 1,
        "skip_corrupt": 1,
    }, seen


def test_top_k_is_twenty_in_eval_and_predict() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    helps = {}
    for name in ("eval", "predict"):
        action = next(a for a in commands[name]._actions if a.dest == "top_k")
        helps[name] = action.help
        assert "(20)" in str(action.help)
    assert len({commands[n]._option_string_actions["--top-k"].type for n in helps}) == 1


# --- N1: import-tf ----------------------------------------------------------------------


def test_import_tf_refuses_a_text_file_named_npz(files: Files, tmp_path: Path) -> None:
    bad = tmp_path / "vars.npz"
    bad.write_text("not an archive\n")
    assert_one_line(["import-tf", str(bad), "--out", str(tmp_path / "o")], 1, str(bad))


def test_import_tf_refuses_a_half_written_npz(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez(good, a=np.ones((64, 64), np.float32), b=np.zeros(8, np.float32))
    half = tmp_path / "half.npz"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert not zipfile.is_zipfile(half)
    assert_one_line(["import-tf", str(half), "--out", str(tmp_path / "o")], 1, str(half))


def test_import_tf_refuses_pickled_arrays(tmp_path: Path) -> None:
    bad = tmp_path / "objects.npz"
    np.savez(bad, a=np.array([{"x": 1}], dtype=object))
    assert_one_line(["import-tf", str(bad), "--out", str(tmp_path / "o")], 1, str(bad))


def test_import_tf_missing_source_is_no_such_file(files: Files, tmp_path: Path) -> None:
    source = files.missing("model.ckpt-310001")
    line = assert_one_line(["import-tf", source, "--out", str(tmp_path / "o")], 2, source)
    assert "TensorFlow" not in line and "no such" in line, line


def test_import_tf_reads_a_prefix_with_an_index_as_a_tf_checkpoint(tmp_path: Path) -> None:
    prefix = tmp_path / "model.ckpt-10"
    Path(f"{prefix}.index").write_bytes(b"not an index")
    code, _, err = run_cli(["import-tf", str(prefix), "--out", str(tmp_path / "o")])
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        assert code == 2 and "needs TensorFlow" in err, err
    else:
        assert code == 1 and "not a readable TensorFlow checkpoint" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_import_tf_config_must_be_a_json_object(files: Files, tmp_path: Path) -> None:
    variables = tmp_path / "v.npz"
    np.savez(variables, a=np.ones(3, np.float32))
    config = tmp_path / "config.json"
    config.write_text("[1, 2]")
    argv = ["import-tf", str(variables), "--out", str(tmp_path / "o"), "--config", str(config)]
    assert_one_line(argv, 2, "--config", str(config))


# --- N8: the same mistake, the same exit code --------------------------------------------


def _train(files: Files, *extra: str) -> list[str]:
    argv = ["train", *MODEL, "--out", files.missing(f"run-{len(extra)}-{hash(extra)}")]
    argv += ["--max-steps", "1", "--batch-size", "4", "--num-workers", "0", "--no-progress"]
    return [*argv, "--eigenvals", "none", *extra]


def _eval(files: Files, *extra: str, data: str | None = None) -> list[str]:
    argv = ["eval", "--checkpoint", files.checkpoint, "--data", data or files.rated]
    return [*argv, "--num-workers", "0", *extra]


def _predict(files: Files, *extra: str, data: str | None = None) -> list[str]:
    argv = ["predict", "--checkpoint", files.checkpoint, "--data", data or files.rated]
    return [*argv, "--num-workers", "0", "--out", files.missing("p.csv"), *extra]


def _mistakes(files: Files) -> dict[str, tuple[int, list[list[str]]]]:
    """A mistake -> (its exit code, the command lines that make it)."""
    text, missing = files.text, files.missing()
    return {
        "a --segment-classes file that is no whitelist": (2, [
            _train(files, "--task", "segments", "--train-data", files.rated,
                   "--segment-classes", text),
            _eval(files, "--segments", "--segment-classes", text),
            _predict(files, "--segments", "--segment-classes", text),
        ]),
        "a missing --segment-classes file": (2, [
            _train(files, "--task", "segments", "--train-data", files.rated,
                   "--segment-classes", missing),
            _eval(files, "--segments", "--segment-classes", missing),
            _predict(files, "--segments", "--segment-classes", missing),
        ]),
        "a missing checkpoint": (2, [
            ["eval", "--checkpoint", missing, "--data", files.rated],
            ["predict", "--checkpoint", missing, "--data", files.rated, "--out", missing],
            ["export", "--checkpoint", missing, "--format", "onnx", "--out", missing],
            _train(files, "--train-data", files.rated, "--init-from", missing),
        ]),
        "a missing data file": (2, [
            _train(files, "--train-data", missing),
            _eval(files, data=missing),
            _predict(files, data=missing),
            ["export", "--checkpoint", files.checkpoint, "--format", "onnx", "--out",
             files.missing("x.onnx"), "--eval-data", missing],
            ["score-segments", "--submission", text, "--data", missing],
            ["inspect", missing],
        ]),
        "a data file that is no TFRecord": (1, [
            _train(files, "--train-data", files.junk),
            _eval(files, data=files.junk),
            _predict(files, data=files.junk),
            ["score-segments", "--submission", text, "--data", files.junk],
        ]),
        "segment scoring of records without ratings": (1, [
            _train(files, "--task", "segments", "--train-data", files.rated, "--eval-data",
                   files.video_level),
            _eval(files, "--segments", data=files.video_level),
            ["score-segments", "--submission", text, "--data", files.video_level],
        ]),
        "the segment task on video-level records": (1, [
            _train(files, "--task", "segments", "--train-data", files.video_level),
            _eval(files, "--segments", data=files.video_level),
            _predict(files, "--segments", data=files.video_level),
        ]),
        "an option file that is not what the option takes": (2, [
            _predict(files, "--vocabulary", text),
            _train(files, "--train-data", files.rated, "--eigenvals", text),
            _predict(files, "--segments", "--segment-classes", text),
            ["score-segments", "--submission", text, "--data", files.rated],
            ["import-tf", files.npz, "--out", missing, "--config", text],
        ]),
        "an option file that is a folder": (2, [
            _predict(files, "--vocabulary", str(files.root)),
            _train(files, "--train-data", files.rated, "--eigenvals", str(files.root)),
            _eval(files, "--segments", "--segment-classes", str(files.root)),
            ["score-segments", "--submission", str(files.root), "--data", files.rated],
            ["import-tf", files.npz, "--out", missing, "--config", str(files.root)],
        ]),
        "an --out below a file": (2, [
            _predict(files, "--out", f"{text}/p.csv"),
            ["export", "--checkpoint", files.checkpoint, "--format", "onnx", "--out",
             f"{text}/m.onnx"],
            ["import-tf", files.npz, "--out", f"{text}/ckpt"],
            _train(files, "--train-data", files.rated, "--out", f"{text}/run"),
            ["synth", "--out", f"{text}/synth", "--videos", "2", "--shards", "1"],
        ]),
        "an option file that is missing": (2, [
            _predict(files, "--vocabulary", missing),
            _train(files, "--train-data", files.rated, "--eigenvals", missing),
            ["score-segments", "--submission", missing, "--data", files.rated],
            ["import-tf", files.missing("v.npz"), "--out", missing],
        ]),
    }  # fmt: skip


def test_the_same_mistake_exits_with_the_same_code(files: Files) -> None:
    wrong = []
    for mistake, (code, commands) in _mistakes(files).items():
        for argv in commands:
            got, _, err = run_cli(argv)
            lines = err.strip().splitlines()
            clean = len(lines) == 1 and lines[0].startswith(f"nextvlad {argv[0]}: error: ")
            if got != code or not clean:
                wrong.append(f"{mistake}: {argv[0]} exits {got} ({err.strip()!r})")
    assert not wrong, "\n".join(wrong)


# --- N8: a 2018 submission given to score-segments ----------------------------------------


@pytest.mark.parametrize("header", [True, False])
def test_score_segments_names_a_2018_submission(files: Files, tmp_path: Path, header: bool) -> None:
    submission = tmp_path / "sub.csv"
    lines = ["VideoId,LabelConfidencePairs"] if header else []
    submission.write_text("\n".join([*lines, "abcd,3 0.9 17 0.25", "efgh,1 0.5"]) + "\n")
    argv = ["score-segments", "--submission", str(submission), "--data", files.rated]
    line = assert_one_line(argv, 2, str(submission), "2018 video-level submission")
    assert "VideoId,LabelConfidencePairs" in line and "Class,Segments" in line
    assert "class 'VideoId'" not in line
