"""Change detection and message building (SPEC "Change detection", "SQS message")."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

from async_discovery.changes import Change, detect, strip_etag
from async_discovery.messages import (
    batch_entries,
    build_outgoing,
    fifo_group_id,
    iso_utc,
    message_id,
)
from async_discovery.models import ListedObject


def test_strip_etag_removes_surrounding_quotes_only() -> None:
    assert strip_etag('"abc"') == "abc"
    assert strip_etag("abc") == "abc"
    assert strip_etag('"abc-3"') == "abc-3"
    assert strip_etag('"') == '"'


def test_detect_new_updated_unchanged_ignoring_quotes() -> None:
    assert detect("abc", None) is Change.NEW
    assert detect('"abc"', "abc") is Change.UNCHANGED
    assert detect("abc", '"abc"') is Change.UNCHANGED
    assert detect("abd", "abc") is Change.UPDATED


def test_message_id_is_sha256_of_bucket_key_etag() -> None:
    expected = hashlib.sha256(b"b/incoming/a/1.csv@e1").hexdigest()
    assert message_id("b", "incoming/a/1.csv", "e1") == expected
    assert message_id("b", "incoming/a/1.csv", "e2") != expected


def test_body_has_exactly_the_spec_fields() -> None:
    when = datetime(2026, 11, 25, 18, 5, 58, tzinfo=timezone(timedelta(hours=2)))
    obj = ListedObject("incoming/a b/é+%.csv", "e1", 123, when)
    out = build_outgoing("bkt", obj, "a b", "updated", previous_etag="e0")
    body = json.loads(out.body)
    assert body == {
        "id": message_id("bkt", "incoming/a b/é+%.csv", "e1"),
        "bucket": "bkt",
        "key": "incoming/a b/é+%.csv",
        "folder": "a b",
        "etag": "e1",
        "size": 123,
        "last_modified": "2026-11-25T16:05:58Z",
        "event": "updated",
    }
    assert out.message_id == body["id"]


def test_iso_utc_treats_naive_as_utc() -> None:
    assert iso_utc(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
    assert iso_utc(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"


def test_fifo_group_id_rules() -> None:
    assert fifo_group_id("sales") == "sales"
    assert fifo_group_id("x" * 128) == "x" * 128
    for bad in ("a b", "café", "", "x" * 129, "tab\t"):
        gid = fifo_group_id(bad)
        digest = hashlib.sha256(bad.encode()).hexdigest()[:64]
        assert gid == "h-" + digest, bad


def test_batch_entries_standard_and_fifo() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    outs = [
        build_outgoing("b", ListedObject(f"p/f g/{i}.csv", f"e{i}", i, when), "f g", "new")
        for i in range(3)
    ]
    std = batch_entries(outs, fifo=False)
    assert [e["Id"] for e in std] == ["0", "1", "2"]
    assert all("MessageGroupId" not in e for e in std)
    assert std[1]["MessageAttributes"]["id"]["StringValue"] == outs[1].message_id
    fifo = batch_entries(outs, fifo=True)
    assert {e["MessageGroupId"] for e in fifo} == {fifo_group_id("f g")}
    assert [e["MessageDeduplicationId"] for e in fifo] == [o.message_id for o in outs]
