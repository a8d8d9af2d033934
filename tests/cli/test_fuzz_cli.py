"""Fuzzing the command line's inputs: every mistake ends in one `nextvlad CMD: error: ...`
line and the documented exit code, never in a traceback.

The rule (``nextvlad.cli.main``):

- exit 2, a usage error: what argparse or the option checks reject (non-numeric, negative,
  zero, non-finite values, unknown presets and --set keys, devices this machine lacks), paths
  that do not exist, globs that match nothing, folders where files are wanted, and option files
  that are not what the option takes (--eigenvals, --vocabulary);
- exit 1, a failure on well-formed input: the content of data files and checkpoints (junk or
  corrupt records, no known schema, a checkpoint folder without or with a broken checkpoint).

Each example runs ``main([...])`` in-process with one fault among valid arguments, so no
example trains or evaluates for long: a fault that slipped through would show as exit 0.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextvlad.checkpoint import save_model
from nextvlad.cli import main
from nextvlad.data import write_synthetic
from nextvlad.data.synth import SynthConfig
from nextvlad.data.tfrecord import encode_record
from nextvlad.models import build_model, get_config

TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", "num_classes=25"]
TINY += ["--set", "expansion=1"]
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_names = itertools.count()


@dataclass(frozen=True)
class Env:
    root: Path  # scratch space
    data: str  # a glob of good frame-level TFRecords
    checkpoint: Path  # a good checkpoint folder of a tiny model

    def file(self, content: bytes, suffix: str = ".tfrecord") -> str:
        path = self.root / f"file-{next(_names)}{suffix}"
        path.write_bytes(content)
        return str(path)

    def npy(self, array: np.ndarray) -> str:
        path = self.root / f"array-{next(_names)}.npy"
        np.save(path, array, allow_pickle=True)
        return str(path)

    def out(self) -> str:
        return str(self.root / f"out-{next(_names)}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("fuzz")
    config = SynthConfig(num_classes=25, min_frames=8, max_frames=16, min_run=1, max_run=3)
    write_synthetic(root / "data", videos=8, shards=1, num_classes=25, seed=1, config=config)
    model_config = get_config(
        "nextvlad-8g-128k-2048h", num_clusters=4, hidden_size=16, num_classes=25, expansion=1
    )
    save_model(root / "checkpoint", build_model(model_config), model_config)
    (root / "scratch").mkdir()
    (root / "a-folder").mkdir()
    return Env(root / "scratch", str(root / "data" / "*.tfrecord"), root / "checkpoint")


def run_cli(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of ``main(argv)``; any other exception fails the test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, err.getvalue()


def assert_clean_error(argv: list[str], expected: int) -> None:
    code, err = run_cli(argv)
    assert "Traceback" not in err, (argv, err)
    # argparse names the top-level parser for arguments that no subcommand takes
    prefixes = (f"nextvlad {argv[0]}: error: ", "nextvlad: error: unrecognized arguments: ")
    errors = [line for line in err.splitlines() if line.startswith(prefixes)]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), (argv, err)
    assert code == expected, (argv, code, err)


# Values that are never numbers (no digits, nor the letters of nan/inf/e), and numbers that
# are out of range for every option they are given to.
NOT_A_NUMBER = st.one_of(
    st.just(""),
    st.text(alphabet="abcdghjkmoprsuvwxyz!@#%^&*()[]{}<>?/|~ ", min_size=1, max_size=8),
    st.sampled_from(["1.2.3", "0x10", "1e", "--", "five", "1,5"]),
)
NON_FINITE = st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity"])
NEGATIVE = st.integers(max_value=-1).map(str)
POSITIVE_INT_OPTIONS = [
    "--epochs",
    "--max-steps",
    "--batch-size",
    "--lr-decay-examples",
    "--checkpoint-every",
    "--shuffle-buffer",
]
NON_NEGATIVE_INT_OPTIONS = ["--eval-every", "--num-workers", "--seed"]
POSITIVE_FLOAT_OPTIONS = ["--lr", "--temperature"]
NON_NEGATIVE_FLOAT_OPTIONS = ["--clip-norm", "--l2", "--distill-weight"]


@st.composite
def bad_train_option(draw: st.DrawFn) -> list[str]:
    """One numeric option of `train` with a value it must refuse."""
    option = draw(
        st.sampled_from(
            [
                *POSITIVE_INT_OPTIONS,
                *NON_NEGATIVE_INT_OPTIONS,
                *POSITIVE_FLOAT_OPTIONS,
                *NON_NEGATIVE_FLOAT_OPTIONS,
                "--lr-decay",
            ]
        )
    )
    bad = [NOT_A_NUMBER, NEGATIVE]
    if option in POSITIVE_INT_OPTIONS:
        bad += [st.just("0"), st.sampled_from(["1.5", "2e3"])]
    elif option in NON_NEGATIVE_INT_OPTIONS:
        bad += [st.sampled_from(["0.5", "1e3"])]
    else:
        bad += [NON_FINITE]
    if option in POSITIVE_FLOAT_OPTIONS:
        bad += [st.sampled_from(["0", "0.0", "-0"])]
    if option == "--lr-decay":
        bad += [st.floats(min_value=1.0001, max_value=1e6).map(repr), st.just("0")]
    if option == "--seed":
        bad += [st.integers(min_value=2**63, max_value=2**80).map(str)]
    return [option, draw(st.one_of(*bad))]


@st.composite
def bad_data_file(draw: st.DrawFn, env: Env) -> tuple[str, int]:
    """A data path: (path, exit code)."""
    kind = draw(st.sampled_from(["missing", "no-match", "folder", "junk", "empty", "payload"]))
    if kind == "missing":
        return str(env.root / "no-such-file.tfrecord"), 2
    if kind == "no-match":
        pattern = draw(st.sampled_from(["nothing-*.tfrecord", "[x-a]*", "*.nope", "?[!*"]))
        return str(env.root / pattern), 2
    if kind == "folder":
        return str(env.root.parent / "a-folder"), 2
    if kind == "junk":
        return env.file(draw(st.binary(min_size=1, max_size=300))), 1
    if kind == "empty":
        return env.file(b""), 1
    # Well-framed records whose payloads are not YouTube-8M examples.
    payloads = draw(st.lists(st.binary(max_size=60), min_size=1, max_size=3))
    return env.file(b"".join(encode_record(p) for p in payloads)), 1


@st.composite
def bad_eigenvalues(draw: st.DrawFn, env: Env) -> str:
    kind = draw(
        st.sampled_from(["missing", "folder", "junk", "shape", "dtype", "values", "pickle"])
    )
    if kind == "missing":
        return str(env.root / "no-eigenvals.npy")
    if kind == "folder":
        return str(env.root)
    if kind == "junk":
        return env.file(draw(st.binary(max_size=200)), ".npy")
    if kind == "shape":
        shape = draw(
            st.one_of(
                st.tuples(st.integers(0, 1023)),
                st.tuples(st.integers(1, 40), st.integers(2, 40)),
                st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
                st.just(()),
            )
        )
        return env.npy(np.ones(shape, dtype=np.float32))
    if kind == "dtype":
        return env.npy(np.array(["a"] * 1024) if draw(st.booleans()) else np.ones(1024, bool))
    if kind == "values":
        values = np.ones(1024, dtype=np.float32)
        values[draw(st.integers(0, 1023))] = draw(st.sampled_from([np.nan, np.inf, -1.0]))
        return env.npy(values)
    return env.npy(np.array([{"a": 1}, None], dtype=object))


BAD_OVERRIDES = st.sampled_from(
    [
        "dropout=abc",
        "dropout=1.5",
        "num_clusters=-1",
        "num_clusters=0",
        "num_clusters=abc",
        "hidden_size=1.5",
        "hidden_size=true",
        "groups=3",
        "no_such_option=1",
        "num_classes=[1,2]",
        "=5",
        "noequals",
        "gating_reduction=0",
    ]
)


@SETTINGS
@given(data=st.data())
def test_train_refuses_bad_input_cleanly(env: Env, data: st.DataObject) -> None:
    train_data, eval_data, eigenvals = env.data, None, "none"
    extra: list[str] = []
    preset = "nextvlad-8g-128k-2048h"
    overrides = list(TINY)
    expected = 2
    length_missing = False
    fault = data.draw(
        st.sampled_from(["option", "train-data", "eval-data", "eigenvals", "set", "other"])
    )
    if fault == "option":
        extra = data.draw(bad_train_option())
    elif fault == "train-data":
        train_data, expected = data.draw(bad_data_file(env))
    elif fault == "eval-data":
        eval_data, expected = data.draw(bad_data_file(env))
    elif fault == "eigenvals":
        eigenvals = data.draw(bad_eigenvalues(env))
    elif fault == "set":
        overrides += ["--set", data.draw(BAD_OVERRIDES)]
    else:
        choice = data.draw(
            st.sampled_from(["preset", "device", "precision", "unknown", "no-length"])
        )
        if choice == "preset":
            preset = data.draw(st.sampled_from(["nope", "nextvlad", "", "NEXTVLAD-8G-128K-2048H"]))
        elif choice == "device":  # cuda:99: absent on CPU machines and on GPU machines
            extra = ["--device", data.draw(st.sampled_from(["gpu", "cuda:x", "tpu", "cuda:99"]))]
        elif choice == "precision":
            extra = ["--precision", "fp8"]
        elif choice == "unknown":
            extra = ["--no-such-option"]
        length_missing = choice == "no-length"  # neither --epochs nor --max-steps
    argv = ["train", "--preset", preset, *overrides, "--train-data", train_data]
    argv += ["--out", env.out(), "--num-workers", "0", "--no-progress", "--eigenvals", eigenvals]
    if eval_data is not None:
        argv += ["--eval-data", eval_data]
    if not length_missing:
        argv += ["--max-steps", "1", "--batch-size", "4"]
    assert_clean_error([*argv, *extra], expected)


@st.composite
def bad_checkpoint(draw: st.DrawFn, env: Env) -> tuple[str, int]:
    kind = draw(st.sampled_from(["missing", "empty-folder", "file", "junk-config", "junk-weights"]))
    if kind == "missing":
        return str(env.root / "no-such-run"), 2
    if kind == "file":
        return env.file(draw(st.binary(max_size=100)), ".safetensors"), 1
    folder = env.root / f"ckpt-{next(_names)}"
    folder.mkdir()
    if kind == "junk-config":
        (folder / "config.json").write_bytes(draw(st.binary(max_size=100)))
    elif kind == "junk-weights":
        (folder / "config.json").write_text((env.checkpoint / "config.json").read_text())
        (folder / "model.safetensors").write_bytes(draw(st.binary(max_size=100)))
    return str(folder), 1


@st.composite
def bad_vocabulary(draw: st.DrawFn, env: Env) -> str:
    kind = draw(st.sampled_from(["missing", "junk", "columns", "index", "empty"]))
    if kind == "missing":
        return str(env.root / "no-vocabulary.csv")
    if kind == "junk":
        return env.file(b"\xff\xfe" + draw(st.binary(max_size=100)), ".csv")
    if kind == "columns":
        header = draw(st.sampled_from(["a,b", "Index", "Name,Other", "index,name"]))
        return env.file(f"{header}\n1,2\n".encode(), ".csv")
    if kind == "index":
        bad = draw(st.sampled_from(["x", "1.5", "", "one"]))
        return env.file(f"Index,Name\n0,zero\n{bad},bad\n".encode(), ".csv")
    return env.file(b"", ".csv")


@SETTINGS
@given(data=st.data())
def test_eval_and_predict_refuse_bad_input_cleanly(env: Env, data: st.DataObject) -> None:
    command = data.draw(st.sampled_from(["eval", "predict"]))
    checkpoint, files, extra, expected = str(env.checkpoint), env.data, [], 2
    faults = ["checkpoint", "data", "option", "branch", "device"]
    fault = data.draw(st.sampled_from([*faults, "vocabulary"] if command == "predict" else faults))
    if fault == "checkpoint":
        checkpoint, expected = data.draw(bad_checkpoint(env))
    elif fault == "data":
        files, expected = data.draw(bad_data_file(env))
    elif fault == "option":
        options = ["--batch-size", "--num-workers"] + (["--top-k"] if command == "predict" else [])
        option = data.draw(st.sampled_from(options))
        bad = [NOT_A_NUMBER, NEGATIVE, st.sampled_from(["1.5", "nan"])]
        if option != "--num-workers":
            bad.append(st.just("0"))
        extra = [option, data.draw(st.one_of(*bad))]
    elif fault == "branch":  # not a mixture, or not a number
        extra = ["--branch", data.draw(st.one_of(st.integers(-3, 5).map(str), NOT_A_NUMBER))]
    elif fault == "device":
        extra = ["--device", data.draw(st.sampled_from(["gpu", "cuda:99", "mps:0", "cpu:x"]))]
    else:
        extra = ["--vocabulary", data.draw(bad_vocabulary(env))]
    argv = [command, "--checkpoint", checkpoint, "--data", files, "--num-workers", "0", *extra]
    if command == "predict":
        argv += ["--out", str(env.root / f"predictions-{next(_names)}.csv")]
    assert_clean_error(argv, expected)


@SETTINGS
@given(data=st.data())
def test_inspect_and_params_refuse_bad_input_cleanly(env: Env, data: st.DataObject) -> None:
    command = data.draw(st.sampled_from(["inspect", "params"]))
    if command == "params":
        name = data.draw(st.text(min_size=1, max_size=12).filter(lambda s: not s.startswith("-")))
        assert_clean_error(["params", "--preset", name], 2)  # a usage error
        return
    if data.draw(st.booleans()):
        files, expected = data.draw(bad_data_file(env))
        if expected == 2:
            assert_clean_error(["inspect", files], 2)
        else:  # inspect reports what it can: records it cannot tell apart are 0 videos
            code, err = run_cli(["inspect", files])
            assert "Traceback" not in err and code in (0, 1), (files, code, err)
            if code == 1:
                assert_clean_error(["inspect", files], 1)
    else:
        classes = data.draw(st.one_of(NOT_A_NUMBER, NEGATIVE, st.just("0")))
        assert_clean_error(["inspect", env.data, "--classes", classes], 2)


def test_missing_and_unknown_arguments_are_usage_errors(env: Env) -> None:
    for argv in (
        ["train", "--preset", "nextvlad-8g-16k-256h"],
        ["eval", "--data", env.data],
        ["predict", "--checkpoint", str(env.checkpoint), "--data", env.data],
        ["inspect"],
        ["params", "--bogus"],
        ["eval", "--checkpoint", str(env.checkpoint), "--data", env.data, "--json", "extra"],
    ):
        assert_clean_error(argv, 2)
    assert json.loads(json.dumps(run_cli(["params", "--preset", "video-logistic"])))[0] == 0
