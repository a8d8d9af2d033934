"""`nextvlad extract`: inputs, records, failures, reruns, kill -9, ranks, --fit-pca."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nextvlad.cli import main
from nextvlad.data import VideoDataset, detect_schema
from nextvlad.data.tfrecord import count_records
from nextvlad.extract.pca import PCA
from tests.extract.factories import write_pca
from tests.extract.stand_ins import CHEAP_MAIN, patch_network
from tests.extract.videos import write_audio_only, write_images, write_video

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    """(an Inception file that exists, a PCA folder): the network is the cheap stand-in."""
    folder = tmp_path_factory.mktemp("weights")
    inception = folder / "inception.pth"
    inception.write_bytes(b"stand-in: load_inception is patched")
    return inception, write_pca(folder / "pca")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("videos")
    return [write_video(folder / f"v{i}.mp4", 25, 30 + 10 * i) for i in range(5)]


@pytest.fixture(autouse=True)
def cheap_network(monkeypatch):
    patch_network(monkeypatch)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)


def extract(weights, *args) -> int:
    inception, pca = weights
    return main(["extract", *map(str, args), "--inception", str(inception), "--pca", str(pca)])


def dataset(files) -> VideoDataset:
    """The project's reader of ``files``, with the schema it detects (rgb alone or with audio,
    frame- or video-level)."""
    files = [str(f) for f in files]
    return VideoDataset(files, schema=detect_schema(files))


def read(out: Path):
    files = sorted(str(p) for p in out.glob("*.tfrecord"))
    videos = []
    for batch in dataset(files).loader(64, num_workers=0):
        videos += [
            (vid, labels.nonzero().flatten().tolist(), int(n))
            for vid, labels, n in zip(batch.ids, batch.labels, batch.num_frames, strict=True)
        ]
    return videos


def test_videos_folder_csv_and_glob(tmp_path, weights, videos, capsys):
    folder = write_images(tmp_path / "frames", 3)
    listing = tmp_path / "list.csv"
    listing.write_text(f"path,labels\n{videos[1]},7;4\n{folder},\n")  # sorted as Google does
    out = tmp_path / "out"
    code = extract(
        weights,
        videos[0],
        listing,
        str(videos[0].parent / "v[34].mp4"),
        "--out",
        out,
        "--labels",
        "2",
        "--zero-audio",
        "--shard-size",
        "2",
    )
    assert code == 0
    got = sorted(read(out))
    assert got == [
        ("frames", [], 3),
        ("v0", [2], 2),
        ("v1", [4, 7], 2),
        ("v3", [2], 3),
        ("v4", [2], 3),
    ]
    assert len(list(out.glob("*.tfrecord"))) == 3
    assert not (out / "failures.csv").exists()
    err = capsys.readouterr().err
    assert "extract: 5/5 videos" in err and "frames/s" in err and "ETA" in err
    assert "wrote 5 videos (13 frames)" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(i for ids in manifest["shards"].values() for i in ids) == [
        "frames",
        "v0",
        "v1",
        "v3",
        "v4",
    ]
    assert main(["inspect", str(out / "*.tfrecord"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_videos"] == 5


def test_broken_inputs_are_named_and_the_rest_written(tmp_path, weights, videos, capsys):
    whole = videos[2].read_bytes()
    broken = {
        "zero.mp4": b"",
        "garbage.mp4": np.random.default_rng(0).bytes(3000),
        "truncated.mp4": whole[: len(whole) // 3],
    }
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
    sound = write_audio_only(tmp_path / "sound.m4a")
    (tmp_path / "empty").mkdir()
    inputs = [videos[0], *(tmp_path / n for n in broken), sound, tmp_path / "empty", videos[1]]
    out = tmp_path / "out"
    assert extract(weights, *inputs, "--out", out, "--no-progress") == 1
    assert sorted(v for v, _, _ in read(out)) == ["v0", "v1"]
    with open(out / "failures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    reasons = {Path(r["path"]).name: r["reason"] for r in rows}
    assert set(reasons) == {"zero.mp4", "garbage.mp4", "truncated.mp4", "sound.m4a", "empty"}
    assert "no video stream" in reasons["sound.m4a"]
    assert "no frames" in reasons["empty"]
    assert all("cannot open" in reasons[n] for n in broken)
    err = capsys.readouterr().err
    assert "5 failed" in err and "failed: " + str(sound) in err
    assert "extract: " not in err.replace("nextvlad extract: ", "")  # --no-progress


def test_audio_with_vggish_and_an_audio_less_video(tmp_path, weights, videos, capsys):
    from tests.extract.audio_factories import write_audio_pca, write_vggish_checkpoint

    ckpt = write_vggish_checkpoint(tmp_path / "vggish_model.ckpt")
    params = write_audio_pca(tmp_path / "vggish_pca_params.npz")
    sound = write_video(tmp_path / "sound.mp4", 25, 60, audio_seconds=2.5)
    out = tmp_path / "out"
    args = ["--audio-model", ckpt, "--audio-pca", params]
    assert extract(weights, videos[0], sound, "--out", out, *args) == 0
    err = capsys.readouterr().err
    assert f"note: {videos[0]}: no audio stream: zero audio written" in err
    assert "sound.mp4: " not in err
    batches = list(dataset(out.glob("*.tfrecord")).loader(2, num_workers=0))
    (batch,) = batches
    assert batch.ids == ["v0", "sound"]
    assert (batch.frames[0, :2, 1024:] == 127).all()
    assert not (batch.frames[1, :3, 1024:] == 127).all()


def test_rerun_skips_what_is_there(tmp_path, weights, videos, capsys):
    out = tmp_path / "out"
    assert extract(weights, *videos[:3], "--out", out, "--shard-size", "2") == 0
    capsys.readouterr()
    assert extract(weights, *videos, "--out", out, "--shard-size", "2") == 0
    assert "skipped 3 already there" in capsys.readouterr().err
    ids = [v for v, _, _ in read(out)]
    assert sorted(ids) == ["v0", "v1", "v2", "v3", "v4"]
    assert extract(weights, *videos, "--out", out) == 0
    assert sorted(v for v, _, _ in read(out)) == sorted(ids)


def test_shard_missing_from_the_manifest_is_read_back(tmp_path, weights, videos):
    out = tmp_path / "out"
    assert extract(weights, *videos[:2], "--out", out, "--shard-size", "1") == 0
    (out / "manifest.json").unlink()  # a kill between a shard's rename and the manifest's
    assert extract(weights, *videos[:3], "--out", out, "--shard-size", "1") == 0
    assert sorted(v for v, _, _ in read(out)) == ["v0", "v1", "v2"]


def test_kill_9_mid_shard_loses_only_that_shard(tmp_path, weights, videos):
    out = tmp_path / "out"
    inception, pca = weights
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    cmd = [
        sys.executable,
        "-c",
        CHEAP_MAIN,
        "1.0",
        "extract",
        *map(str, videos),
        "--out",
        str(out),
        "--inception",
        str(inception),
        "--pca",
        str(pca),
        "--shard-size",
        "2",
        "--no-progress",
        "--decode-workers",
        "0",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 60
        while len(lines) < 3 and time.monotonic() < deadline:  # 2 in shard 0, 1 in shard 1
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert len(lines) == 3, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    shards = sorted(p.name for p in out.glob("*.tfrecord"))
    assert shards == ["features-00000.tfrecord"]
    assert count_records(out / shards[0]) == 2
    assert list(out.glob(".*.tmp"))  # the shard being written, left by the kill
    assert extract(weights, *videos, "--out", out, "--shard-size", "2") == 0
    assert sorted(v for v, _, _ in read(out)) == ["v0", "v1", "v2", "v3", "v4"]
    assert not list(out.glob(".*.tmp"))


def test_video_level_and_id_path(tmp_path, weights, videos):
    out = tmp_path / "out"
    assert extract(weights, videos[0], "--out", out, "--video-level", "--id", "path") == 0
    (batch,) = dataset(out.glob("*.tfrecord")).loader(1, num_workers=0)
    assert batch.ids == [str(videos[0])]
    assert batch.features.shape == (1, 1024)


def test_ranks_split_the_inputs(tmp_path, weights, videos, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        assert extract(weights, *videos, "--out", out) == 0
    names = sorted(p.name for p in out.glob("*.tfrecord"))
    assert names == ["features-r0-00000.tfrecord", "features-r1-00000.tfrecord"]
    assert count_records(out / names[0]) == 3 and count_records(out / names[1]) == 2
    monkeypatch.delenv("WORLD_SIZE")  # the reader would take its rank's share too
    monkeypatch.delenv("RANK")
    assert sorted(v for v, _, _ in read(out)) == ["v0", "v1", "v2", "v3", "v4"]
    assert extract(weights, *videos, "--out", out) == 0  # one process: all there already
    assert len(list(out.glob("*.tfrecord"))) == 2


@pytest.mark.slow
def test_fit_pca(tmp_path, weights, videos):
    folder = tmp_path / "mypca"
    assert (
        main(
            [
                "extract",
                *map(str, videos),
                "--inception",
                str(weights[0]),
                "--fit-pca",
                str(folder),
                "--out",
                str(tmp_path / "unused"),
            ]
        )
        == 0
    )
    pca = PCA.load(folder)
    assert pca.eigenvecs.shape == (2048, 2048)
    assert sorted(p.name for p in folder.iterdir()) == [
        "eigenvals.npy",
        "eigenvecs.npy",
        "mean.npy",
    ]
    out = tmp_path / "out"
    assert (
        main(
            [
                "extract",
                str(videos[0]),
                "--inception",
                str(weights[0]),
                "--pca",
                str(folder),
                "--out",
                str(out),
            ]
        )
        == 0
    )


def test_remote_input_is_copied_first(tmp_path, weights, videos):
    from benchmarks._loopback import http_server

    out = tmp_path / "out"
    with http_server(videos[0].parent) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/{videos[1].name}"
        assert extract(weights, url, "--out", out) == 0
    assert read(out) == [("v1", [], 2)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.mp4"], "no such file"),
        (["nothing*.mp4"], "no files match"),
        (["{v}", "--labels", "x"], "labels must be integers"),
        (["{v}", "--zero-audio", "--audio-model", "{v}", "--audio-pca", "{v}"], "--zero-audio"),
        (["{v}", "--audio-model", "{v}"], "go together"),
    ],
)
def test_usage_errors(tmp_path, weights, videos, capsys, args, message):
    args = [a.format(v=videos[0]) for a in args]
    with pytest.raises(SystemExit) as exit_:
        extract(weights, *args, "--out", tmp_path / "out")
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_pca_is_required_without_fit_pca(tmp_path, weights, videos, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["extract", str(videos[0]), "--inception", str(weights[0]), "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--pca is required" in capsys.readouterr().err


def test_each_torchrun_process_takes_its_own_gpu(monkeypatch):
    from nextvlad.cli.extract import _device

    assert _device("cpu") == "cpu"
    assert _device("cuda:3") == "cuda:3"
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert _device("cuda") == "cuda:2"


def test_bad_weight_files_are_usage_errors(tmp_path, weights, videos, monkeypatch, capsys):
    monkeypatch.undo()  # the real load_inception
    bogus = tmp_path / "classify_image_graph_def.pb"
    bogus.write_bytes(b"\x0a\x03abc")
    for inception, pca in ((bogus, weights[1]), (weights[0], tmp_path)):
        with pytest.raises(SystemExit) as exit_:
            main(["extract", str(videos[0]), "--out", str(tmp_path / "out"),
                  "--inception", str(inception), "--pca", str(pca)])  # fmt: skip
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert str(inception if pca == weights[1] else pca) in err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_under_torchrun(tmp_path, weights, videos):
    """`torchrun --nproc-per-node 2 ... extract`: each rank its share and its own shards."""
    script = tmp_path / "cheap_extract.py"
    script.write_text(CHEAP_MAIN)
    out = tmp_path / "out"
    inception, pca = weights
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += [str(script), "0", "extract", *map(str, videos), "--out", str(out)]
    cmd += ["--inception", str(inception), "--pca", str(pca), "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    names = sorted(p.name for p in out.glob("*.tfrecord"))
    assert names == ["features-r0-00000.tfrecord", "features-r1-00000.tfrecord"]
    assert sorted(p.name for p in out.glob("manifest*.json")) == [
        "manifest-r0.json",
        "manifest-r1.json",
    ]
    assert sorted(v for v, _, _ in read(out)) == ["v0", "v1", "v2", "v3", "v4"]
