"""The data commands on ``s3://`` (a loopback moto server) beyond the train round trip of
test_remote_cli.py: predict with workers, eval, inspect of a corrupt remote shard, --cache-dir."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")
pytest.importorskip("boto3")

import s3fs
from benchmarks._loopback import s3_environ, s3_server, upload

from nextvlad.data import write_synthetic
from nextvlad.data.synth import SynthConfig
from tests.cli.conftest import NUM_CLASSES, TINY, run_cli
from tests.data.test_remote import flipped

BUCKET = "yt8m-cli"
SHORT = SynthConfig(NUM_CLASSES, min_frames=8, max_frames=16, min_run=1, max_run=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A trained tiny run and eval shards, local and on S3: {"run", "eval", "s3_eval"}."""
    root = tmp_path_factory.mktemp("remote-data-cli")
    write_synthetic(root / "train", videos=16, shards=1, seed=1, config=SHORT)
    evals = write_synthetic(root / "eval", videos=12, shards=2, seed=2, config=SHORT)
    argv = ["train", "--preset", "nextvlad-8g-16k-256h", *TINY, "--out", str(root / "run")]
    argv += ["--train-data", str(root / "train" / "*.tfrecord")]
    argv += ["--eval-data", str(root / "eval" / "*.tfrecord")]
    argv += ["--max-steps", "2", "--eval-every", "0", "--batch-size", "8"]
    argv += ["--num-workers", "0", "--no-progress", "--eigenvals", "none"]
    code, _out, err = run_cli(argv)
    assert code == 0, err
    with s3_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        for name, value in s3_environ(endpoint).items():
            mp.setenv(name, value)
        mp.setenv("NEXTVLAD_REMOTE_BLOCK_SIZE", "8K")
        s3fs.S3FileSystem.clear_instance_cache()
        upload(endpoint, BUCKET, evals, "eval/")
        yield {
            "run": str(root / "run"),
            "eval": str(root / "eval" / "*.tfrecord"),
            "s3_eval": f"s3://{BUCKET}/eval/*.tfrecord",
        }
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(autouse=True)
def no_cache_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--cache-dir`` sets NEXTVLAD_CACHE_DIR for the whole process: undo it after each test
    (``delenv`` of an unset variable records nothing to undo; ``setenv`` first does)."""
    monkeypatch.setenv("NEXTVLAD_CACHE_DIR", "")
    monkeypatch.delenv("NEXTVLAD_CACHE_DIR")


def test_predict_and_eval_from_s3_equal_local(data: dict[str, str], tmp_path: Path) -> None:
    csvs = {}
    for name, glob, workers in [
        ("local", data["eval"], "0"),
        ("s3", data["s3_eval"], "0"),
        ("s3-workers", data["s3_eval"], "2"),
    ]:
        out = tmp_path / f"{name}.csv"
        argv = ["predict", "--checkpoint", data["run"], "--data", glob, "--out", str(out)]
        code, _out, err = run_cli([*argv, "--num-workers", workers, "--device", "cpu"])
        assert code == 0, err
        csvs[name] = out.read_bytes()
    assert csvs["s3"] == csvs["local"] == csvs["s3-workers"]
    assert csvs["local"].count(b"\n") == 1 + 12  # a header and every video
    reports = []
    for glob in (data["s3_eval"], data["eval"]):
        argv = ["eval", "--checkpoint", data["run"], "--data", glob, "--json"]
        code, out, err = run_cli([*argv, "--num-workers", "0", "--device", "cpu"])
        assert code == 0, err
        reports.append(json.loads(out))
    assert reports[0] == reports[1]


def test_inspect_skip_corrupt_names_the_remote_shard(data: dict[str, str], tmp_path: Path) -> None:
    (path, _) = sorted(Path(data["eval"]).parent.glob("*.tfrecord"))
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(flipped(str(path), 2))
    (url,) = upload(os.environ["AWS_ENDPOINT_URL"], BUCKET, [bad], "corrupt/")
    summaries = []
    for where in (url, str(bad)):
        code, out, err = run_cli(["inspect", "--json", "--skip-corrupt", where])
        assert code == 0, err
        summaries.append(json.loads(out))
    assert summaries[0]["num_corrupt"] == summaries[1]["num_corrupt"] == 1
    assert summaries[0]["num_videos"] == summaries[1]["num_videos"] == 5
    assert url in json.dumps(summaries[0]["corrupt"])
    code, _out, err = run_cli(["inspect", url])
    assert code == 1 and url in err and "record 2" in err


def test_predict_twice_with_cache_dir(data: dict[str, str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    outs = []
    for i in range(2):
        out = tmp_path / f"p{i}.csv"
        argv = ["predict", "--checkpoint", data["run"], "--data", data["s3_eval"]]
        argv += ["--out", str(out), "--num-workers", "0", "--cache-dir", str(cache)]
        code, _out, err = run_cli(argv)
        assert code == 0, err
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert len(list(cache.glob("*-synth-*.tfrecord.json"))) == 2
