"""Remote shards (``nextvlad.data.remote``) against loopback S3 (moto) and HTTP servers:
globs and lists, byte-identical reading in small blocks, retries, errors, order."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
pytest.importorskip("aiohttp")
pytest.importorskip("moto")
pytest.importorskip("boto3")

import fsspec
import s3fs
from benchmarks._loopback import http_server, s3_environ, s3_server, upload

from nextvlad.data import (
    CorruptRecordError,
    DataError,
    NoDataFilesError,
    ReadStats,
    VideoDataset,
    read_videos,
    remote,
    resolve_files,
    write_synthetic,
)
from nextvlad.data.remote import RemoteReadError, RemoteSettings, RemoteShard
from nextvlad.data.synth import SynthConfig
from nextvlad.data.tfrecord import HEADER_SIZE, iter_records
from nextvlad.errors import ConfigError

BUCKET = "yt8m"
SHORT = SynthConfig(25, min_frames=8, max_frames=16, min_run=1, max_run=3)


def video_tuples(files: list[str], **kwargs: object) -> list[tuple]:
    """(id, labels, number of frames, feature bytes) of every video read from ``files``."""
    return [
        (
            v.id,
            tuple(v.labels.tolist()),
            v.num_frames,
            {k: a.tobytes() for k, a in v.features.items()},
        )
        for v in read_videos(files, **kwargs)  # type: ignore[arg-type]
    ]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """12 short frame-level videos in 3 local shards."""
    root = tmp_path_factory.mktemp("remote-local")
    return [str(p) for p in write_synthetic(root, videos=12, shards=3, seed=1, config=SHORT)]


@pytest.fixture(scope="module")
def s3(local: list[str]) -> Iterator[list[str]]:
    """The local shards uploaded to ``s3://yt8m/train/``, with s3fs pointed at the server for
    the module; yields their URLs."""
    with s3_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        for name, value in s3_environ(endpoint).items():
            mp.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        yield upload(endpoint, BUCKET, local, "train/")
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """4 KiB blocks (many blocks a shard, read ahead), quick retries."""
    monkeypatch.setenv("NEXTVLAD_REMOTE_BLOCK_SIZE", "4K")
    monkeypatch.setenv("NEXTVLAD_REMOTE_READAHEAD", "3")
    monkeypatch.setenv("NEXTVLAD_REMOTE_RETRIES", "5")
    monkeypatch.setenv("NEXTVLAD_REMOTE_BACKOFF", "0.01")
    monkeypatch.setenv("NEXTVLAD_CACHE_DIR", "")  # so that delenv's undo unsets it
    monkeypatch.delenv("NEXTVLAD_CACHE_DIR")


def urls(server, files: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    return [server.url(os.path.basename(p)) for p in files]


# Settings


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTVLAD_REMOTE_BLOCK_SIZE", "64K")
    assert RemoteSettings.from_env().block_size == 64 << 10
    monkeypatch.setenv("NEXTVLAD_REMOTE_BLOCK_SIZE", "2MB")
    assert RemoteSettings.from_env().block_size == 2 << 20
    monkeypatch.setenv("NEXTVLAD_REMOTE_BLOCK_SIZE", "many")
    with pytest.raises(ConfigError, match="NEXTVLAD_REMOTE"):
        RemoteSettings.from_env()


def test_configure_checks_names_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match="unknown remote setting"):
        remote.configure(blocksize=1)
    monkeypatch.setenv("NEXTVLAD_REMOTE_RETRIES", "5")  # restored after the test
    with pytest.raises(ConfigError):
        remote.configure(retries=-1)


# resolve_files


def test_s3_glob_sorted_like_local(s3: list[str], local: list[str]) -> None:
    found = resolve_files(f"s3://{BUCKET}/train/*.tfrecord")
    assert found == sorted(found) == s3
    assert [os.path.basename(u) for u in found] == [os.path.basename(p) for p in local]
    assert resolve_files(f"s3://{BUCKET}/train/*-00001-*.tfrecord") == [s3[1]]


def test_s3_missing_errors_name_the_pattern(s3: list[str]) -> None:
    pattern = f"s3://{BUCKET}/train/nothing-*.tfrecord"
    with pytest.raises(NoDataFilesError, match="nothing-"):
        resolve_files(pattern)
    missing = f"s3://{BUCKET}/train/missing.tfrecord"
    with pytest.raises(NoDataFilesError, match=r"missing\.tfrecord"):
        resolve_files([s3[0], missing])


def test_https_list_literal_and_file_urls(local: list[str]) -> None:
    root = os.path.dirname(local[0])
    with http_server(root) as server:
        given = urls(server, local)[::-1]
        assert resolve_files(given) == given  # kept in the order given, never globbed
        star = server.url("*.tfrecord")
        with pytest.raises(NoDataFilesError, match=r"\*\.tfrecord"):
            resolve_files(star)
    assert resolve_files([f"file://{p}" for p in local]) == local
    assert resolve_files(f"file://{root}/*.tfrecord") == local


# Reading


def test_s3_reads_the_local_videos(s3: list[str], local: list[str]) -> None:
    expected = video_tuples(local)
    assert len(expected) == 12
    assert video_tuples(s3) == expected
    assert video_tuples(resolve_files(f"s3://{BUCKET}/train/*.tfrecord")) == expected


def test_http_reads_the_local_videos(local: list[str]) -> None:
    with http_server(os.path.dirname(local[0])) as server:
        assert video_tuples(urls(server, local)) == video_tuples(local)
        ranged = [r for r in server.requests if r.method == "GET"]
        sizes = [os.path.getsize(p) for p in local]
        assert len(ranged) >= sum(-(-s // 4096) for s in sizes)  # one GET a 4 KiB block
        assert all(r.range and r.status == 206 for r in ranged)


def test_record_sharding_over_s3(s3: list[str], local: list[str]) -> None:
    for shard in range(4):  # more shards than files: records are dealt
        got = video_tuples(s3, shard=shard, num_shards=4)
        assert got == video_tuples(local, shard=shard, num_shards=4)


# Faults


def test_http_transient_failures_are_retried(local: list[str]) -> None:
    with http_server(os.path.dirname(local[0]), fail_first=2) as server:
        assert video_tuples(urls(server, local)) == video_tuples(local)
        assert [r.status for r in server.requests if r.method == "GET"][:3] == [500, 500, 206]


@pytest.mark.parametrize("status", [503, 429, 408])
def test_http_retryable_statuses(local: list[str], status: int) -> None:
    with http_server(os.path.dirname(local[0]), fail_first=1, fail_status=status) as server:
        assert video_tuples(urls(server, local[:1])) == video_tuples(local[:1])


def test_http_failures_beyond_retries_name_url_record_offset(
    local: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXTVLAD_REMOTE_RETRIES", "2")
    with http_server(os.path.dirname(local[0]), fail_first=1000) as server:
        url = urls(server, local)[0]
        with pytest.raises(RemoteReadError) as info:
            list(read_videos([url]))
        gets = server.gets
    assert isinstance(info.value, DataError)
    message = str(info.value)
    assert url in message and "record 0" in message and "offset 0" in message
    assert "3 times" in message and "bytes 0-" in message
    assert gets >= 3  # the first block and its read-ahead, each tried 3 times


def test_http_connection_closed_mid_body_is_retried(local: list[str]) -> None:
    with http_server(os.path.dirname(local[0]), close_mid=2) as server:
        assert video_tuples(urls(server, local)) == video_tuples(local)
        assert server.gets > sum(-(-os.path.getsize(p) // 4096) for p in local)


def test_a_server_that_ignores_range_is_read_whole_once(
    local: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``python -m http.server`` answers a Range request with 200 and the whole file."""
    monkeypatch.setenv("NEXTVLAD_REMOTE_RETRIES", "1")
    blocks = -(-os.path.getsize(local[0]) // 4096)
    assert blocks > 4
    with http_server(os.path.dirname(local[0]), ranges=False) as server:
        assert video_tuples(urls(server, local[:1])) == video_tuples(local[:1])
        statuses = [r.status for r in server.requests if r.method == "GET"]
    assert set(statuses) == {200} and len(statuses) <= 1 + 3  # not one a block
    assert "ignores Range" in caplog.text


def test_http_missing_url_in_a_list(local: list[str]) -> None:
    with http_server(os.path.dirname(local[0])) as server:
        given = [*urls(server, local), server.url("gone.tfrecord")]
        with pytest.raises(NoDataFilesError, match=r"gone\.tfrecord"):
            resolve_files(given)


def test_http_glob_says_http_has_no_glob(local: list[str]) -> None:
    with (
        http_server(os.path.dirname(local[0])) as server,
        pytest.raises(NoDataFilesError, match="HTTP has no listing"),
    ):
        resolve_files(server.url("synth-*.tfrecord"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_listening_is_retried_not_no_such_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTVLAD_REMOTE_RETRIES", "2")
    url = f"http://127.0.0.1:{free_port()}/train.tfrecord"
    with pytest.raises(RemoteReadError) as info:
        resolve_files(url)
    message = str(info.value)
    assert url in message and "3 times" in message and "connect" in message.lower()


def test_https_against_plain_http_says_so(local: list[str]) -> None:
    with http_server(os.path.dirname(local[0])) as server:
        url = server.url(os.path.basename(local[0])).replace("http://", "https://")
        with pytest.raises(RemoteReadError, match="plain HTTP") as info:
            resolve_files(url)
        assert "times" not in str(info.value)  # not retried


def test_http_forbidden_is_not_retried(local: list[str]) -> None:
    name = os.path.basename(local[0])
    with http_server(os.path.dirname(local[0]), status_of={f"/{name}": 403}) as server:
        url = server.url(name)
        with pytest.raises(RemoteReadError, match="403") as info:
            list(read_videos([url]))
        blocks = min(1 + 3, -(-os.path.getsize(local[0]) // 4096))  # first block + read-ahead
        assert server.gets <= blocks  # each block tried once
    assert url in str(info.value)


def test_short_reads_are_retried() -> None:
    data = bytes(range(256)) * 40
    calls: list[tuple[int, int]] = []

    def fetch(start: int, end: int) -> bytes:
        calls.append((start, end))
        short = len(calls) == 1
        return data[start : end - 1] if short else data[start:end]

    settings = RemoteSettings(block_size=1000, readahead=0, retries=1, backoff=0.0)
    with RemoteShard("mem://x", settings, fetch=fetch, size=len(data)) as shard:
        assert shard.read() == data
        assert shard.retried == 1
    assert calls[:2] == [(0, 1000), (0, 1000)]


def test_seek_and_read_within_and_across_blocks() -> None:
    data = os.urandom(10_000)
    settings = RemoteSettings(block_size=512, readahead=2, retries=0, backoff=0.0)
    fetch = lambda start, end: data[start:end]  # noqa: E731
    with RemoteShard("mem://x", settings, fetch=fetch, size=len(data)) as shard:
        assert shard.read(700) == data[:700]
        shard.seek(9_000)
        assert shard.read(5_000) == data[9_000:]
        shard.seek(-100, os.SEEK_END)
        assert shard.read() == data[-100:]
        shard.seek(10)
        assert shard.read(1030) == data[10:1040]


# Corrupt records


def flipped(path: str, index: int) -> bytes:
    """The bytes of ``path`` with one byte of record ``index``'s data flipped."""
    offset = next(r.offset for r in iter_records(path) if r.index == index)  # type: ignore[union-attr]
    data = bytearray(Path(path).read_bytes())
    data[offset + HEADER_SIZE + 5] ^= 0xFF
    return bytes(data)


def test_skip_corrupt_on_a_remote_shard(s3: list[str], local: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(flipped(local[0], 1))
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    (url,) = upload(endpoint, BUCKET, [bad], "corrupt/")
    local_stats, remote_stats = ReadStats(), ReadStats()
    expected = video_tuples([str(bad)], skip_corrupt=True, stats=local_stats)
    assert video_tuples([url], skip_corrupt=True, stats=remote_stats) == expected
    assert local_stats.num_corrupt == remote_stats.num_corrupt == 1
    assert remote_stats.num_records == local_stats.num_records == len(expected)
    err = remote_stats.corrupt[0]
    assert err.path == url and err.index == 1
    with pytest.raises(CorruptRecordError, match="record 1") as info:
        list(read_videos([url]))
    assert url in str(info.value)


# Order


@pytest.mark.parametrize("rank", [None, 0, 1])
def test_same_order_for_the_same_seed(s3: list[str], local: list[str], rank: int | None) -> None:
    def batch_ids(files: list[str]) -> list[list[str]]:
        sharding = {} if rank is None else {"rank": rank, "world_size": 2}
        dataset = VideoDataset(files, num_classes=25, shuffle=True, seed=3, **sharding)  # type: ignore[arg-type]
        return [batch.ids for batch in dataset.loader(4, num_workers=2)]

    expected = batch_ids(local)
    assert sorted(i for ids in expected for i in ids)  # not empty
    assert batch_ids(s3) == expected


# Refusals and missing packages


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:secret@127.0.0.1:9/train.tfrecord", "https://127.0.0.1:9/train.tfrecord"),
        ("s3://user:secret@yt8m/train.tfrecord", "s3://yt8m/train.tfrecord"),
    ],
)
def test_a_user_or_password_in_a_url_is_refused(url: str, shown: str) -> None:
    with pytest.raises(ConfigError, match="user or password") as info:
        resolve_files(url)
    assert "secret" not in str(info.value)
    assert shown in str(info.value)  # the port kept


SECRET_QUERIES = [
    "key=SECRET",
    "apikey=SECRET",
    "token=SECRET",
    "access_token=SECRET",
    "sv=2020-08-04&sig=SECRET",
    "signature=SECRET",
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=SECRET&X-Amz-Signature=SECRET",
    "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=SECRET&X-Goog-Signature=SECRET",
    "GoogleAccessId=SECRET&Expires=1&Signature=SECRET",
]


@pytest.mark.parametrize("query", SECRET_QUERIES)
def test_redact_url_drops_every_credential_query(query: str) -> None:
    url = f"https://127.0.0.1:8443/bucket/train.tfrecord?{query}"
    assert remote.redact_url(url) == "https://127.0.0.1:8443/bucket/train.tfrecord?REDACTED"
    plain = "https://127.0.0.1:8443/train.tfrecord?alt=media"
    assert remote.redact_url(plain) == plain
    assert remote.redact_url("/data/train?x.tfrecord") == "/data/train?x.tfrecord"


@pytest.mark.parametrize("query", SECRET_QUERIES[:1] + SECRET_QUERIES[-3:])
def test_signed_urls_are_read_but_their_query_is_never_written(
    local: list[str], query: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("NEXTVLAD_CACHE_DIR", str(cache))
    name = os.path.basename(local[0])
    with http_server(os.path.dirname(local[0])) as server:
        url = f"{server.url(name)}?{query}"
        assert resolve_files(url) == [url]  # read with its signature
        assert video_tuples([url]) == video_tuples(local[:1])
        assert video_tuples([url]) == video_tuples(local[:1])  # from the copy
        with pytest.raises(DataError, match="class") as wrong:
            list(read_videos([url], num_classes=1))  # a SchemaError located in the file
        errors = [str(wrong.value)]
        for missing in (f"{server.url('gone.tfrecord')}?{query}", f"{server.url('*.tf')}?{query}"):
            with pytest.raises(NoDataFilesError) as info:
                resolve_files(missing)
            errors.append(str(info.value))
    with http_server(os.path.dirname(local[0]), status_of={f"/{name}": 403}) as server:
        monkeypatch.delenv("NEXTVLAD_CACHE_DIR")
        with pytest.raises(RemoteReadError) as failed:
            list(read_videos([f"{server.url(name)}?{query}"]))
        errors.append(str(failed.value))
    assert "gone.tfrecord" in errors[1] and "403" in errors[3]
    assert not [e for e in errors if "SECRET" in e]
    written = sorted(cache.iterdir())
    assert [p.name for p in written if p.suffix == ".json"]  # the copy and its note
    for path in written:
        assert "SECRET" not in path.name
    notes = [p.read_text() for p in written if p.suffix == ".json"]
    assert notes and not [n for n in notes if "SECRET" in n]


@pytest.mark.parametrize(
    ("url", "extra"),
    [("s3://yt8m/x.tfrecord", "s3"), ("gs://yt8m/x.tfrecord", "gcs"), ("https://h/x", "http")],
)
def test_missing_filesystem_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, extra: str
) -> None:
    def no_package(*_args: object, **_kwargs: object) -> None:
        raise ImportError("No module named 'thefs'")

    monkeypatch.setattr(fsspec.core, "url_to_fs", no_package)
    with pytest.raises(ConfigError, match=rf"pip install -e '\.\[{extra}\]'") as info:
        resolve_files(url)
    assert "nextvlad[" not in str(info.value)  # not on the package index
