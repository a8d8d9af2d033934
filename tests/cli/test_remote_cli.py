"""The commands on data in an S3 bucket (moto's server on loopback, the endpoint set the way a
user sets it: AWS_ENDPOINT_URL): the same results as from the local files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import fsspec
from benchmarks._loopback import s3_environ, s3_server, upload

from nextvlad.data.synth import SynthConfig, write_synthetic
from tests.cli.conftest import TINY, run_cli

SMALL = SynthConfig(25, min_frames=8, max_frames=16, min_run=1, max_run=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("remote-cli")
    write_synthetic(root / "train", videos=24, shards=3, seed=1, config=SMALL)
    write_synthetic(root / "eval", videos=12, shards=2, seed=2, config=SMALL)
    with s3_server() as endpoint, pytest.MonkeyPatch.context() as patch:
        for name, value in s3_environ(endpoint).items():
            patch.setenv(name, value)
        fsspec.filesystem("s3").clear_instance_cache()
        for part in ("train", "eval"):
            upload(endpoint, "yt8m", sorted((root / part).glob("*.tfrecord")), prefix=f"{part}/")
        yield {
            "root": str(root),
            "local_train": str(root / "train" / "*.tfrecord"),
            "local_eval": str(root / "eval" / "*.tfrecord"),
            "s3_train": "s3://yt8m/train/*.tfrecord",
            "s3_eval": "s3://yt8m/eval/*.tfrecord",
        }
        fsspec.filesystem("s3").clear_instance_cache()


def _ok(argv: list[str]) -> str:
    code, out, err = run_cli(argv)
    assert code == 0, err
    return out


def test_inspect_train_eval_and_predict_from_s3_as_from_local(
    data: dict[str, str], tmp_path: Path
) -> None:
    remote = json.loads(_ok(["inspect", data["s3_train"], "--json"]))
    local = json.loads(_ok(["inspect", data["local_train"], "--json"]))
    assert remote["num_videos"] == local["num_videos"] == 24
    predictions = {}
    for where in ("local", "s3"):
        run = tmp_path / f"run-{where}"
        argv = ["train", "--preset", "nextvlad-8g-16k-256h", *TINY, "--out", str(run)]
        argv += ["--train-data", data[f"{where}_train"], "--eval-data", data[f"{where}_eval"]]
        argv += ["--max-steps", "3", "--eval-every", "0", "--batch-size", "8", "--seed", "4"]
        argv += ["--num-workers", "2", "--no-progress", "--eigenvals", "none"]
        if where == "s3":
            argv += ["--cache-dir", str(tmp_path / "cache")]
        trained = json.loads(_ok(argv))
        evaluated = json.loads(_ok(["eval", "--checkpoint", str(run), "--data",
                                    data[f"{where}_eval"], "--json", "--num-workers", "0"]))  # fmt: skip
        assert evaluated["gap"] == pytest.approx(trained["gap"], abs=1e-12)
        out = tmp_path / f"{where}.csv"
        _ok(["predict", "--checkpoint", str(run), "--data", data[f"{where}_eval"], "--out",
             str(out), "--num-workers", "0"])  # fmt: skip
        predictions[where] = (out.read_text(), evaluated)
    assert predictions["s3"] == predictions["local"]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3 + 2  # every shard read whole
    run_json = (tmp_path / "run-s3" / "run.json").read_text()
    assert "testing" not in run_json  # the credentials live in the environment only


def test_a_missing_bucket_object_is_a_usage_error(data: dict[str, str], tmp_path: Path) -> None:
    code, _, err = run_cli(["inspect", "s3://yt8m/train/none*.tfrecord"])
    assert code == 2 and "no files match 's3://yt8m/train/none*.tfrecord'" in err


def test_run_json_never_records_a_signed_urls_query(tmp_path: Path) -> None:
    from nextvlad.training.options import TrainOptions

    signed = "https://127.0.0.1:8443/yt8m/train.tfrecord?X-Amz-Signature=SECRET&key=SECRET"
    options = TrainOptions(
        preset="nextvlad-8g-16k-256h", train_data=[signed], eval_data=[signed], out="run",
        epochs=1,
    )  # fmt: skip
    options.save(tmp_path / "run.json")
    text = (tmp_path / "run.json").read_text()
    assert "SECRET" not in text
    assert "https://127.0.0.1:8443/yt8m/train.tfrecord?REDACTED" in text
    assert options.train_data == [signed]  # still read with its signature


def test_the_resume_command_never_prints_a_signed_urls_query() -> None:
    from nextvlad.training.options import TrainOptions, resume_command

    signed = "https://127.0.0.1:8443/yt8m/train.tfrecord?X-Goog-Signature=SECRET"
    options = TrainOptions(preset="nextvlad-8g-16k-256h", train_data=[signed], out="run", epochs=1)
    command = resume_command(options)
    assert "SECRET" not in command
    assert "https://127.0.0.1:8443/yt8m/train.tfrecord?REDACTED" in command


def test_train_applies_cache_dir_once_and_restores_it(
    data: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--cache-dir`` is applied in one place (``nextvlad.data.remote.cache_dir_applied``):
    ``train()`` from Python sets it for the run (the cache fills) and leaves the process as it
    was, as the command line does."""
    from nextvlad.training import loop
    from nextvlad.training.options import TrainOptions

    monkeypatch.setenv("NEXTVLAD_CACHE_DIR", "")
    monkeypatch.delenv("NEXTVLAD_CACHE_DIR")
    cache = tmp_path / "cache"
    options = TrainOptions(
        preset="nextvlad-8g-16k-256h", train_data=[data["s3_train"]], out=str(tmp_path / "run"),
        model_overrides={"num_clusters": 4, "hidden_size": 16, "num_classes": 25},
        max_steps=2, batch_size=8, num_workers=0, progress=False, eigenvals="none",
        cache_dir=str(cache), eval_every=0,
    )  # fmt: skip
    loop.train(options)
    assert "NEXTVLAD_CACHE_DIR" not in os.environ  # as it was before
    assert list(cache.glob("*.json"))  # the run used the cache
