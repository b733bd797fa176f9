"""The state object's schema at its edges: unknown fields kept exactly, cursors checked,
every malformed state a :class:`StateCorrupt`, and decoding that stays linear.

Codec-level checks run without a server; what a user sees (a 500 naming the object,
nothing sent, the object unchanged; unknown fields surviving a run's rewrite) runs
through ``run_scan`` against the moto server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from async_discovery.errors import StateCorrupt
from async_discovery.state import FileEntry, State, StateChanges, apply
from async_discovery.state_codec import StateDecoder, decode, encode

from .helpers import MotoEnv, scan
from .operator_support import scan_with_budget, seed_folders

STATE_KEY = "state/processed_files.json"
ENTRY = {
    "status": "queued",
    "etag": "abc",
    "size": 10,
    "folder": "a",
    "queued_at": "2026-11-25T18:05:58Z",
}
# Unknown fields a newer writer might add, shaped like a file entry on purpose.
AUDIT = {"last": dict(ENTRY), "history": [dict(ENTRY, status="marked")], "ratio": 0.25}


def doc(**fields: Any) -> dict[str, Any]:
    return {"version": 1, "updated_at": "t", "files": {"incoming/a/1.csv": ENTRY}, **fields}


def raw(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- unknown fields --------------------------------------------------------------------


def test_unknown_fields_shaped_like_entries_are_rewritten_unchanged() -> None:
    cursors = {"other/": {"strategy": "flat", "start_after": "other/a/1.csv", "audit": AUDIT}}
    state = decode(raw(doc(audit=AUDIT, cursors=cursors)), name="n")
    again = json.loads(encode(state, "t2"))
    assert again["audit"] == AUDIT
    assert again["cursors"] == cursors
    assert again["files"] == {"incoming/a/1.csv": ENTRY}


def test_a_rewritten_cursor_keeps_its_unknown_fields() -> None:
    state = State(cursors={"in/": {"strategy": "flat", "start_after": "k1", "audit": AUDIT}})
    apply(state, StateChanges("in/", "b", cursor={"strategy": "flat", "start_after": "k2"}))
    assert state.cursors["in/"] == {"strategy": "flat", "start_after": "k2", "audit": AUDIT}
    apply(state, StateChanges("in/", "b", cursor={}))  # the pass finished: cursor gone
    assert state.cursors == {}


def test_fractions_and_exponents_in_unknown_fields_are_kept() -> None:
    state = decode(raw(doc(stats={"ratio": 0.5, "big": 1e300, "n": -2})), name="n")
    assert json.loads(encode(state, "t"))["stats"] == {"ratio": 0.5, "big": 1e300, "n": -2}


# -- malformed states ------------------------------------------------------------------

CORRUPT_CURSORS = {
    "pending list": {"strategy": "folders", "pending": ["a"]},
    "pending value": {"strategy": "folders", "pending": {"a": 5}},
    "no strategy": {"start_after": "k"},
    "unknown strategy": {"strategy": "sideways"},
    "after_folder": {"strategy": "folders", "after_folder": 3},
    "start_after": {"strategy": "flat", "start_after": ["k"]},
    "initial_scan text": {"strategy": "flat", "initial_scan": "mark-everything"},
    "initial_scan date": {"strategy": "flat", "initial_scan": "since:yesterday"},
    "initial_scan null": {"strategy": "flat", "initial_scan": None},
    "cursor list": ["flat"],
}


@pytest.mark.parametrize("cursor", CORRUPT_CURSORS.values(), ids=CORRUPT_CURSORS.keys())
def test_a_cursor_of_the_wrong_shape_is_corrupt(cursor: Any) -> None:
    with pytest.raises(StateCorrupt, match=r"s3://b/k: the cursor of 'incoming/'"):
        decode(raw(doc(cursors={"incoming/": cursor})), name="s3://b/k")


@pytest.mark.parametrize(
    "body",
    [
        b'{"version": 1.0, "files": {}}',
        b'{"version": "1", "files": {}}',
        b'{"version": true, "files": {}}',
        b'{"version": 1, "files": {}, "x": NaN}',
        b'{"version": 1, "files": {}, "x": [Infinity]}',
        b'{"version": 1, "files": {}, "x": {"y": -Infinity}}',
        b'{"version": 1, "files": {}, "x": 1e400}',
        b'{"version": 1, "files": {"k": {"status": "queued", "etag": "e", "size": 1.0}}}',
        b'{"version": 1, "files": {}, "deep": ' + nested(100_000).encode() + b"}",
        b'{"version": 1, "files": {}, "deep": ' + nested(200).encode() + b"}",
        b'{"version": 1, "files": {}, "cursors": {"p/": {"strategy": "flat", "x": '
        + nested(200).encode()
        + b"}}}",
    ],
    ids=[
        "version float",
        "version string",
        "version bool",
        "NaN",
        "Infinity",
        "-Infinity",
        "float overflow",
        "size float",
        "nested 100000",
        "nested 200",
        "cursor nested 200",
    ],
)
@pytest.mark.parametrize("chunk", [None, 7])
def test_json_outside_the_schema_is_corrupt(body: bytes, chunk: int | None) -> None:
    if chunk is None:
        with pytest.raises(StateCorrupt, match="s3://b/k"):
            decode(body, name="s3://b/k")
        return
    decoder = StateDecoder(name="s3://b/k")
    with pytest.raises(StateCorrupt, match="s3://b/k"):
        for start in range(0, len(body), chunk):
            decoder.feed(body[start : start + chunk])
        decoder.close()


def test_utf16_state_is_checked_the_same_way() -> None:
    body = json.dumps(doc(cursors={"incoming/": {"strategy": "folders", "pending": ["a"]}}))
    with pytest.raises(StateCorrupt, match="cursor of 'incoming/'"):
        decode(body.encode("utf-16"), name="n")
    with pytest.raises(StateCorrupt, match="nested too deep"):
        decode(('{"version": 1, "x": ' + nested(100_000) + "}").encode("utf-16"), name="n")


# -- decoding stays linear -------------------------------------------------------------


def entries(count: int) -> str:
    return ",\n ".join(f'"incoming/a/{i}.csv": {json.dumps(ENTRY)}' for i in range(count))


def test_a_syntax_error_stops_decoding_at_once() -> None:
    """The chunk holding the error raises: the rest of the object is not read."""
    body = b'{"version": 1, "files": {"bad": {"status" "queued"}, ' + entries(50_000).encode()
    chunk = 1 << 16
    decoder = StateDecoder(name="s3://b/k")
    with pytest.raises(StateCorrupt, match=r"s3://b/k.*Expecting ':'"):
        for start in range(0, len(body), chunk):
            decoder.feed(body[start : start + chunk])
    assert len(body) > 50 * chunk
    assert decoder.received == chunk  # the first chunk holds the error: no other is read


def test_a_wrong_shape_entry_stops_decoding_once_the_version_is_known() -> None:
    head = b'{"version": 1, "files": {"bad": {"status": "queued", "etag": 5}, '
    body = head + entries(1000).encode()
    decoder = StateDecoder(name="s3://b/k")
    with pytest.raises(StateCorrupt, match="s3://b/k: entry 'bad' is not a file record"):
        for start in range(0, len(body), len(head)):
            decoder.feed(body[start : start + len(head)])
    assert decoder.received == len(head)


class CountingScanner:
    """Wraps a decoder's JSON scanner to count its parse attempts."""

    def __init__(self, inner: json.JSONDecoder) -> None:
        self.inner = inner
        self.calls = 0

    def raw_decode(self, text: str, pos: int) -> tuple[Any, int]:
        self.calls += 1
        return self.inner.raw_decode(text, pos)


@pytest.mark.parametrize("closed", [True, False], ids=["long value", "unterminated value"])
def test_a_value_spanning_many_chunks_is_parsed_a_few_times_not_once_a_chunk(
    closed: bool,
) -> None:
    """A value cut by the end of the input so far is parsed again only once the input
    has doubled: parse attempts grow with the log of the chunk count, so decoding stays
    linear (a retry per chunk re-reads the whole value each time: quadratic)."""
    long = "x" * (1 << 20)
    body = f'{{"version": 1, "note": "{long}{chr(34) if closed else ""}'.encode()
    if closed:
        body += b', "files": {}}'
    decoder = StateDecoder(name="n")
    scanner = decoder._scanner
    counter = scanner._json = CountingScanner(scanner._json)  # type: ignore[assignment]
    chunk = 1 << 10  # 1,024 chunks
    if closed:
        for start in range(0, len(body), chunk):
            decoder.feed(body[start : start + chunk])
        assert decoder.close().extra == {"note": long}
    else:
        with pytest.raises(StateCorrupt, match="Unterminated string"):
            for start in range(0, len(body), chunk):
                decoder.feed(body[start : start + chunk])
            decoder.close()
    assert counter.calls < 30, counter.calls


# -- through a run ---------------------------------------------------------------------


async def test_unknown_fields_survive_a_run_that_rewrites_the_state(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    env.put(bucket, "incoming/a/2.csv")  # new: the run sends it and rewrites the state
    cursors = {"other/": {"strategy": "flat", "start_after": "other/x.csv", "audit": AUDIT}}
    etag = env.s3.head_object(Bucket=bucket, Key="incoming/a/1.csv")["ETag"].strip('"')
    files = {"incoming/a/1.csv": dict(ENTRY, etag=etag, size=8)}
    env.s3.put_object(
        Bucket=bucket, Key=STATE_KEY, Body=raw(doc(files=files, audit=AUDIT, cursors=cursors))
    )
    summary = await scan(env.config(bucket, queue_url))
    assert (summary["statusCode"], summary["queued"]) == (200, 1)
    state = env.state(bucket)
    assert state is not None and set(state["files"]) == {"incoming/a/1.csv", "incoming/a/2.csv"}
    assert state["audit"] == AUDIT
    assert state["cursors"] == cursors


async def test_unknown_cursor_fields_survive_a_resumed_run(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    seed_folders(env, bucket, folders=1, files=30)
    cursor = {"strategy": "flat", "start_after": "incoming/f00/k004.csv", "audit": AUDIT}
    env.s3.put_object(Bucket=bucket, Key=STATE_KEY, Body=raw(doc(cursors={"incoming/": cursor})))
    config = env.config(bucket, queue_url, list_page_size=5, workers=1, list_concurrency=1)
    summary = await scan_with_budget(config, candidates=10)
    assert (summary["statusCode"], summary["truncated"]) == (200, True)
    state = env.state(bucket)
    assert state is not None
    saved = state["cursors"]["incoming/"]
    assert saved["audit"] == AUDIT
    assert saved["strategy"] == "flat" and saved["start_after"] > cursor["start_after"]


CORRUPT_STATES = {
    "initial_scan unparsable": raw(
        doc(cursors={"incoming/": {"strategy": "flat", "initial_scan": "mark-old"}})
    ),
    "pending list": raw(doc(cursors={"incoming/": {"strategy": "folders", "pending": ["a"]}})),
    "nested 100000": b'{"version": 1, "files": {}, "deep": ' + nested(100_000).encode() + b"}",
    "NaN": b'{"version": 1, "files": {}, "x": NaN}',
    "version 1.0": b'{"version": 1.0, "files": {}}',
}


@pytest.mark.parametrize("body", CORRUPT_STATES.values(), ids=CORRUPT_STATES.keys())
async def test_a_malformed_state_is_500_naming_it_nothing_sent_object_unchanged(
    env: MotoEnv, bucket: str, queue_url: str, body: bytes
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    env.put(bucket, "incoming/a/2.csv")
    env.s3.put_object(Bucket=bucket, Key=STATE_KEY, Body=body)
    summary = await scan(env.config(bucket, queue_url))
    assert summary["statusCode"] == 500
    assert f"s3://{bucket}/{STATE_KEY}" in summary["error"]
    assert env.bodies(queue_url) == []
    assert env.state_bytes(bucket) == body
    assert summary["api_calls"].get("ListObjectsV2", 0) == 0


def test_entries_keep_their_defaults() -> None:
    """Only status and etag are required in an entry; a last_modified is dropped."""
    body = raw(doc(files={"in/a/1.csv": {"status": "marked", "etag": "e", "last_modified": "t"}}))
    assert dict(decode(body, name="n").files) == {"in/a/1.csv": FileEntry("e", 0, "", "", "marked")}
