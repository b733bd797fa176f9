"""State decode, encode and merge (SPEC "State object"), without a server."""

from __future__ import annotations

import json

import pytest

from async_discovery.errors import StateBucketMismatch, StateCorrupt, StateTooLarge
from async_discovery.state import FileEntry, State, StateChanges, apply, check_source
from async_discovery.state_codec import decode, encode

GOOD = {
    "version": 1,
    "updated_at": "2026-11-25T18:05:58Z",
    "files": {
        "incoming/a/1.csv": {
            "status": "queued",
            "etag": "e1",
            "size": 123,
            "folder": "a",
            "queued_at": "2026-11-25T18:05:58Z",
        }
    },
}


def test_decode_spec_example() -> None:
    state = decode(json.dumps(GOOD).encode(), name="s3://b/k")
    assert state.files == {
        "incoming/a/1.csv": FileEntry("e1", 123, "a", "2026-11-25T18:05:58Z", "queued")
    }
    assert state.source_bucket is None and state.cursors == {}


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"",
        b"[1, 2]",
        b'{"version": 2, "files": {}}',
        b'{"version": true, "files": {}}',
        b'{"version": 1}',
        b'{"version": 1, "files": []}',
        b'{"version": 1, "files": {"k": {"status": "queued"}}}',
        b'{"version": 1, "files": {"k": {"status": "queued", "etag": 5, "size": 1,'
        b' "folder": "a", "queued_at": "t"}}}',
        b'{"version": 1, "files": {"k": {"status": "gone", "etag": "e", "size": 1,'
        b' "folder": "a", "queued_at": "t"}}}',
        b'{"version": 1, "files": {"k": {"status": "queued", "etag": "e", "size": true,'
        b' "folder": "a", "queued_at": "t"}}}',
        b'{"version": 1, "files": {}, "cursors": []}',
        b"\xff\xfe",
    ],
)
def test_decode_rejects_corrupt_or_wrong_shape_naming_the_object(raw: bytes) -> None:
    with pytest.raises(StateCorrupt, match="s3://b/k"):
        decode(raw, name="s3://b/k")


def test_decode_size_cap() -> None:
    raw = json.dumps(GOOD).encode()
    with pytest.raises(StateTooLarge, match="STATE_MAX_BYTES"):
        decode(raw, name="s3://b/k", max_bytes=len(raw) - 1)
    assert decode(raw, name="s3://b/k", max_bytes=len(raw)).files


def test_encode_round_trip_keeps_awkward_keys_and_extra_fields() -> None:
    doc = dict(GOOD, future_field={"x": 1})
    doc["files"] = {
        'p/a b/é+%"q".csv': {
            "status": "queued",
            "etag": "e",
            "size": 1,
            "folder": "a b",
            "queued_at": "t",
        }
    }
    state = decode(json.dumps(doc).encode(), name="n")
    raw = encode(state, "2026-11-25T19:00:00Z")
    again = json.loads(raw)
    assert again["version"] == 1
    assert again["updated_at"] == "2026-11-25T19:00:00Z"
    assert again["files"] == doc["files"]
    assert again["future_field"] == {"x": 1}
    assert decode(raw, name="n").files == state.files


def test_encode_empty_state_is_valid_json() -> None:
    assert json.loads(encode(State(), "t")) == {"version": 1, "updated_at": "t", "files": {}}


def test_apply_merges_upserts_and_prunes_only_unchanged_entries() -> None:
    fresh = State(
        files={
            "in/a/1.csv": FileEntry("old", 1, "a", "t0"),
            "in/a/gone.csv": FileEntry("g1", 1, "a", "t0"),
            "in/a/rewritten.csv": FileEntry("r2", 1, "a", "t0"),  # changed by another run
            "other/a/1.csv": FileEntry("o", 1, "a", "t0"),
        }
    )
    changes = StateChanges(
        prefix="in/",
        source_bucket="b",
        upserts={"in/a/1.csv": FileEntry("new", 2, "a", "t1")},
        removed={"in/a/gone.csv": "g1", "in/a/rewritten.csv": "r1"},
    )
    merged = apply(fresh, changes)
    assert merged.files == {
        "in/a/1.csv": FileEntry("new", 2, "a", "t1"),
        "in/a/rewritten.csv": FileEntry("r2", 1, "a", "t0"),
        "other/a/1.csv": FileEntry("o", 1, "a", "t0"),
    }
    assert merged.source_bucket == "b"


def test_apply_sets_and_clears_the_prefix_cursor_only() -> None:
    state = State(cursors={"other/": {"strategy": "flat", "start_after": "x"}})
    apply(state, StateChanges(prefix="in/", source_bucket="b", cursor={"strategy": "flat"}))
    assert state.cursors == {
        "other/": {"strategy": "flat", "start_after": "x"},
        "in/": {"strategy": "flat"},
    }
    apply(state, StateChanges(prefix="in/", source_bucket="b", cursor={}))
    assert state.cursors == {"other/": {"strategy": "flat", "start_after": "x"}}


def test_check_source() -> None:
    check_source(State(), "b", name="n", force_rebind=False)
    check_source(State(source_bucket="b"), "b", name="n", force_rebind=False)
    with pytest.raises(StateBucketMismatch, match="'a'"):
        check_source(State(source_bucket="a"), "b", name="n", force_rebind=False)
    check_source(State(source_bucket="a"), "b", name="n", force_rebind=True)


def test_changes_is_empty() -> None:
    assert StateChanges(prefix="p/", source_bucket="b").is_empty()
    assert not StateChanges(prefix="p/", source_bucket="b", cursor={}).is_empty()


@pytest.mark.parametrize("window", [1, 3, 64])
def test_windowed_decode_matches_json_loads(monkeypatch: pytest.MonkeyPatch, window: int) -> None:
    # The state is decoded a window of bytes at a time: values cut by a window's edge
    # (numbers, multi-byte characters, escapes) must parse as a whole-document parse does.
    monkeypatch.setattr("async_discovery.state_codec._WINDOW", window)
    entry = {"status": "queued", "etag": "e1", "size": 123, "folder": "a", "queued_at": "t"}
    doc = {
        "updated_at": "t",
        "files": {"in/é/😀 +%.csv": {**entry, "size": 12345678901}, 'in/a/"q".csv': entry},
        "version": 1,
        "cursors": {"in/": {"strategy": "flat", "start_after": "k"}},
        "later": 1234567,
    }
    for text in (json.dumps(doc), json.dumps(doc, indent=2, ensure_ascii=False)):
        raw = f" {text}\n".encode()
        state = decode(raw, name="n")
        assert {k: v._asdict() for k, v in state.files.items()} == doc["files"]
        assert state.extra == {"later": 1234567} and state.cursors == doc["cursors"]
        for cut in (1, len(raw) // 2, len(raw) - 3):
            with pytest.raises(StateCorrupt, match="not valid JSON"):
                decode(raw[:cut], name="n")
    with pytest.raises(StateCorrupt, match="not valid JSON"):
        decode(json.dumps(doc).encode() + b" {}", name="n")
