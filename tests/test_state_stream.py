"""Streaming state I/O: the incremental decoder, the re-readable encoded body, and the
S3 store's streaming methods against moto (the stored bytes are exactly the encoding)."""

from __future__ import annotations

import gc
import io
import json
import random
import sys

import pytest

from async_discovery.aws.clients import open_clients
from async_discovery.aws.s3 import S3StateStore
from async_discovery.config import DEFAULT_STATE_KEY
from async_discovery.errors import StateCorrupt, StateTooLarge
from async_discovery.ports import StreamingStateStore
from async_discovery.state import FileEntry, Files, State
from async_discovery.state_codec import EncodedBody, StateDecoder, decode, encode

from .helpers import MotoEnv


def sample_state(n: int = 50) -> State:
    files = {
        f"in/f{i % 4}/é {i} +%.csv": FileEntry(f"e{i:032x}", i * 1000, f"f{i % 4}", f"t{i % 3}")
        for i in range(n)
    }
    files["in/other/x.csv"] = FileEntry('"q"\x1f', 7, "not-the-key's", "t", "marked")
    # MD5-style ETags are held as 16 bytes: only exact lowercase hex takes that form.
    files["in/f0/md5.csv"] = FileEntry("d41d8cd98f00b204e9800998ecf8427e", 1, "f0", "t")
    files["in/f0/MD5.csv"] = FileEntry("D41D8CD98F00B204E9800998ECF8427E", 1, "f0", "t")
    files["in/f0/mp.csv"] = FileEntry("d41d8cd98f00b204e9800998ecf8427e-12", 1, "f0", "t")
    files["top.csv"] = FileEntry("e", 0, "", "t")
    return State(
        files=files,
        source_bucket="b",
        cursors={"in/": {"strategy": "flat", "start_after": "k"}},
        extra={"later": [1, 2.5, None]},
    )


def feed_all(raw: bytes, sizes: list[int] | int, max_bytes: int | None = None) -> State:
    decoder = StateDecoder(name="s3://b/k", max_bytes=max_bytes)
    pos, i = 0, 0
    while pos < len(raw):
        size = sizes if isinstance(sizes, int) else sizes[i % len(sizes)]
        decoder.feed(raw[pos : pos + size])
        pos, i = pos + size, i + 1
    return decoder.close()


def assert_same(a: State, b: State) -> None:
    assert dict(a.files.items()) == dict(b.files.items())
    assert (a.source_bucket, a.updated_at, a.cursors, a.extra) == (
        b.source_bucket,
        b.updated_at,
        b.cursors,
        b.extra,
    )


def test_files_mapping_round_trips_entries_compactly() -> None:
    files = Files(sample_state().files)
    for key, entry in sample_state().files.items():
        assert files[key] == entry
    assert files == sample_state().files and len(files) == 55
    del files["top.csv"]
    assert "top.csv" not in files and files.get("top.csv") is None


@pytest.mark.parametrize("indent", [None, 2])
def test_one_byte_and_random_chunks_decode_like_one_shot(indent: int | None) -> None:
    state = sample_state()
    doc = json.loads(encode(state, "u"))
    raw = f" {json.dumps(doc, indent=indent, ensure_ascii=False)}\n".encode()
    whole = decode(raw, name="s3://b/k")
    assert_same(feed_all(raw, 1), whole)
    rng = random.Random(7)
    for _ in range(20):
        assert_same(feed_all(raw, [rng.randint(1, 200) for _ in range(50)]), whole)
    assert_same(whole, decode(encode(state, "u"), name="n"))
    assert whole.updated_at == "u" and dict(whole.files.items()) == dict(state.files.items())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"not json",
        b"[1, 2]",
        b'{"version": 1, "files": {}} x',
        b'{"version": 1, "files": {"k": 1}}',
        b'{"version": 2, "files": {}}',
        b'{"version": 1, "files": {"k": {"status": "queued", "etag": "e", "size": 1,'
        b' "folder": "a", "queued_at": "t"}',
        b'{"version": 1, "files": {}}\xff',
        b"\xff\xfe",
    ],
)
@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_corrupt_input_raises_state_corrupt_naming_the_object(raw: bytes, chunk: int) -> None:
    with pytest.raises(StateCorrupt, match="s3://b/k"):
        feed_all(raw, chunk)


def test_decoder_enforces_the_cap_on_bytes_fed() -> None:
    raw = encode(sample_state(), "u")
    assert feed_all(raw, 100, max_bytes=len(raw)).files
    with pytest.raises(StateTooLarge, match="STATE_MAX_BYTES"):
        feed_all(raw, 100, max_bytes=len(raw) - 1)


def test_encoded_body_reads_exactly_the_encoding_and_rereads_after_seek() -> None:
    state = sample_state(5000)  # several iter_encoded chunks
    expected = encode(state, "u")
    body = EncodedBody(state, "u")
    assert len(body) == len(expected) and body.tell() == 0
    assert body.read() == expected and body.read(10) == b""
    assert body.seek(0) == 0
    parts = []
    while part := body.read(4096):
        assert len(part) <= 4096
        parts.append(part)
    assert b"".join(parts) == expected
    assert body.seek(0, io.SEEK_END) == len(expected) and body.read(1) == b""
    assert body.seek(100) == 100 and body.read(50) == expected[100:150]
    assert body.seek(-10, io.SEEK_END) == len(expected) - 10
    assert body.read() == expected[-10:]
    body.seek(0)
    buffer = bytearray(1000)
    read = body.readinto(buffer)  # a raw read may be short (a chunk's end), never empty
    assert 0 < read <= 1000 and bytes(buffer[:read]) == expected[:read]
    assert not hasattr(body, "name")  # aiohttp would send it as Content-Disposition


async def test_s3_store_streams_the_state_both_ways(env: MotoEnv, bucket: str) -> None:
    state = sample_state(5000)
    config = env.config(bucket, None, dry_run=True)
    async with open_clients(config) as clients:
        store = S3StateStore(clients.s3, bucket, DEFAULT_STATE_KEY, 10 << 20)
        assert isinstance(store, StreamingStateStore)
        decoder = StateDecoder(name=store.name)
        assert await store.load_into(decoder) == (False, None)
        etag = await store.save_stream(EncodedBody(state, "u"), if_match=None)
        assert env.state_bytes(bucket) == encode(state, "u")
        decoder = StateDecoder(name=store.name)
        found, loaded_etag = await store.load_into(decoder)
        assert found and loaded_etag == etag
        assert_same(decoder.close(), decode(encode(state, "u"), name="n"))
        raw, _ = await store.load()
        assert raw == encode(state, "u")
        small = S3StateStore(clients.s3, bucket, DEFAULT_STATE_KEY, 100)
        with pytest.raises(StateTooLarge, match="STATE_MAX_BYTES=100"):
            await small.load_into(StateDecoder(name=store.name))


def test_a_decoded_state_is_freed_once_dropped_without_the_cycle_collector() -> None:
    """A run that reads shard after shard drops each decoded shard as it goes: the
    decoder must not keep its entries in a reference cycle that only the cycle collector
    frees (peak memory would then follow every shard read, not the shards in flight)."""
    raw = encode(sample_state(), "2026-11-25T00:00:00Z")
    gc.collect()
    gc.disable()
    try:
        decoder = StateDecoder(name="s3://b/k")
        decoder.feed(raw)
        files = decoder.close().files
        del decoder
        # Only this frame's name refers to the entries (getrefcount adds its argument).
        assert sys.getrefcount(files) == 2
        files = decode(raw, name="s3://b/k").files
        assert sys.getrefcount(files) == 2
    finally:
        gc.enable()
