"""The cache of remote shards (``nextvlad.data.remote_cache``) against a loopback HTTP server
that counts requests: filled by a whole read, used instead of the server, checked by CRC,
filled safely by two processes at once."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

import crc32c
from benchmarks._loopback import http_server

from nextvlad.data import CorruptRecordError, ReadStats, read_videos, remote_cache, write_synthetic
from nextvlad.data.remote_cache import cached_path
from nextvlad.data.synth import SynthConfig
from nextvlad.data.tfrecord import iter_records, write_records

SHORT = SynthConfig(25, min_frames=8, max_frames=16, min_run=1, max_run=3)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("cache-local")
    return [str(p) for p in write_synthetic(root, videos=9, shards=3, seed=4, config=SHORT)]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache folder in NEXTVLAD_CACHE_DIR, 4 KiB blocks, and no copy verified yet
    (as in a new process)."""
    monkeypatch.setenv("NEXTVLAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NEXTVLAD_REMOTE_BLOCK_SIZE", "4K")
    monkeypatch.setenv("NEXTVLAD_REMOTE_BACKOFF", "0.01")
    monkeypatch.setattr(remote_cache, "_VERIFIED", set())
    return tmp_path / "cache"


def ids(files: list[str]) -> list[str]:
    return [v.id for v in read_videos(files)]


def assert_valid_copy(cache: Path, url: str, path: str) -> None:
    copy = Path(cached_path(str(cache), url))
    data = Path(path).read_bytes()
    assert copy.read_bytes() == data
    note = json.loads(Path(f"{copy}.json").read_text())
    assert note["url"] == url and note["size"] == len(data)
    assert note["crc32c"] == crc32c.crc32c(data)


def test_first_read_fills_the_cache_second_makes_no_get(local: list[str], cache: Path) -> None:
    with http_server(os.path.dirname(local[0])) as server:
        urls = [server.url(os.path.basename(p)) for p in local]
        assert ids(urls) == ids(local)
        assert server.gets > 0
        for url, path in zip(urls, local, strict=True):
            assert_valid_copy(cache, url, path)
        assert not [p for p in os.listdir(cache) if p.startswith(".")]  # no temporary left
        server.reset()
        assert ids(urls) == ids(local)
        assert server.gets == 0  # the copies were read (HEAD for the size only)
        remote_cache._VERIFIED.clear()  # a new process: the copies are checked again
        assert ids(urls) == ids(local)
        assert server.gets == 0


def test_a_corrupted_copy_is_fetched_again(local: list[str], cache: Path) -> None:
    with http_server(os.path.dirname(local[0])) as server:
        urls = [server.url(os.path.basename(p)) for p in local]
        ids(urls)
        copy = Path(cached_path(str(cache), urls[1]))
        data = bytearray(copy.read_bytes())
        data[len(data) // 2] ^= 0x01  # same size, another CRC
        copy.write_bytes(bytes(data))
        remote_cache._VERIFIED.clear()  # as a new process would
        server.reset()
        assert ids(urls) == ids(local)
        fetched = {r.path for r in server.requests if r.method == "GET"}
        assert fetched == {f"/{os.path.basename(local[1])}"}
        assert_valid_copy(cache, urls[1], local[1])


def test_a_partial_read_leaves_no_copy(local: list[str], cache: Path) -> None:
    with http_server(os.path.dirname(local[0])) as server:
        url = server.url(os.path.basename(local[0]))
        next(iter(read_videos([url])))  # stops after the first video
        list(read_videos([url], shard=0, num_shards=2))  # seeks past records
        assert not os.path.exists(cached_path(str(cache), url))


def _read_all(urls: list[str], queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(ids(urls))


def test_two_processes_fill_the_same_cache(local: list[str], cache: Path) -> None:
    context = multiprocessing.get_context("fork")
    with http_server(os.path.dirname(local[0])) as server:
        urls = [server.url(os.path.basename(p)) for p in local]
        queue = context.Queue()
        workers = [context.Process(target=_read_all, args=(urls, queue)) for _ in range(2)]
        for worker in workers:
            worker.start()
        got = [queue.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
            assert worker.exitcode == 0
        assert got == [ids(local)] * 2
        for url, path in zip(urls, local, strict=True):
            assert_valid_copy(cache, url, path)
        assert not [p for p in os.listdir(cache) if p.startswith(".")]
        server.reset()
        assert ids(urls) == ids(local)
        assert server.gets == 0


def test_a_copy_rotted_on_disk_is_replaced_by_the_object(
    local: list[str], cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A copy whose size and modification time are right but whose bytes changed on disk is
    caught by a record's CRC: removed, and the rest of the shard streamed from the server."""
    root = os.path.dirname(local[0])
    with http_server(root) as server:
        url = server.url(os.path.basename(local[0]))
        expected = [(v.id, v.labels.tolist()) for v in read_videos([url])]
        copy = Path(cached_path(str(cache), url))
        before = copy.stat()
        data = bytearray(copy.read_bytes())
        data[len(data) // 2] ^= 1
        copy.write_bytes(bytes(data))
        os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))
        server.reset()
        assert [(v.id, v.labels.tolist()) for v in read_videos([url])] == expected
        assert server.gets > 0 and "is corrupt at offset" in caplog.text
    assert not copy.exists()  # removed; the next whole read fills it again


def test_a_corrupt_record_in_the_object_keeps_the_copy(
    local: list[str], cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record that fails its CRC in the object itself: the copy is faithful (the record's
    bytes re-read from the object match it), so it is kept and the record reported, epoch
    after epoch, instead of the copy being removed every other epoch."""
    from tests.data.test_remote import flipped

    served = tmp_path / "served"
    served.mkdir()
    (served / "bad.tfrecord").write_bytes(flipped(local[0], 1))
    expected = [v.id for v in read_videos([str(served / "bad.tfrecord")], skip_corrupt=True)]
    with http_server(served) as server:
        url = server.url("bad.tfrecord")
        copy = Path(cached_path(str(cache), url))
        for epoch in range(3):
            server.reset()
            stats = ReadStats()
            got = [v.id for v in read_videos([url], skip_corrupt=True, stats=stats)]
            assert got == expected and stats.num_corrupt == 1
            assert stats.corrupt[0].index == 1 and stats.corrupt[0].path == url
            assert copy.exists(), f"epoch {epoch}: the copy was removed"
            if epoch:
                gets = [r for r in server.requests if r.method == "GET"]
                assert len(gets) == 1 and gets[0].range  # the bad record's bytes only
        with pytest.raises(CorruptRecordError, match="record 1"):
            list(read_videos([url]))
    assert "removed" not in caplog.text


def test_a_replaced_object_of_the_same_size_is_fetched_again(cache: Path, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    path = served / "x.tfrecord"
    write_records(path, [b"a" * 100, b"b" * 50])
    with http_server(served) as server:
        url = server.url("x.tfrecord")
        assert [bytes(r.data) for r in iter_records(url)] == [b"a" * 100, b"b" * 50]
        assert os.path.exists(cached_path(str(cache), url))
        before = path.stat()
        write_records(path, [b"c" * 100, b"d" * 50])  # same size, other contents
        later = before.st_mtime_ns + 10**10
        os.utime(path, ns=(later, later))
        assert path.stat().st_size == before.st_size
        server.reset()
        assert [bytes(r.data) for r in iter_records(url)] == [b"c" * 100, b"d" * 50]
        assert server.gets > 0
        server.reset()
        assert [bytes(r.data) for r in iter_records(url)] == [b"c" * 100, b"d" * 50]
        assert server.gets == 0  # the new copy
