"""Reading S3 notifications out of SQS records (SPEC "Events"): the four shapes, the
key's encoding, bad bodies, and the discovery rule over a batch. Pure: no server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from async_discovery.notifications import (
    OTHER_BUCKET,
    OTHER_EVENT,
    TEST_EVENT,
    CreatedObject,
    SqsRecord,
    failures_response,
    parse_body,
    parse_record,
    select,
    sqs_records,
)

from .events_support import s3_body


def eventbridge(key: str, detail_type: str = "Object Created", **extra: Any) -> str:
    return json.dumps(
        {
            "version": "0",
            "detail-type": detail_type,
            "source": "aws.s3",
            "time": "2026-01-02T03:04:05Z",
            "detail": {
                "bucket": {"name": "bkt"},
                "object": {"key": key, "size": 3, "etag": "abc", "sequencer": "0B"},
                **extra,
            },
        }
    )


def sns(message: str) -> str:
    return json.dumps({"Type": "Notification", "TopicArn": "arn:aws:sns:x", "Message": message})


def test_an_s3_notification_key_is_url_decoded_with_plus_for_space() -> None:
    body = s3_body("bkt", "incoming/a/q3+report%2Bfinal+100%25+caf%C3%A9.csv", etag='"e1"')
    created, ignored = parse_body(body)
    assert created == [
        CreatedObject(
            "bkt",
            "incoming/a/q3 report+final 100% café.csv",
            "e1",
            datetime(2026, 1, 1, tzinfo=UTC),
        )
    ]
    assert ignored == []


def test_an_sns_wrapped_notification_is_unwrapped() -> None:
    created, _ = parse_body(sns(s3_body("bkt", "incoming%2Fa%2Fx+y.csv")))
    assert [c.key for c in created] == ["incoming/a/x y.csv"]
    assert parse_body(sns(json.dumps({"Event": "s3:TestEvent"}))) == ([], [TEST_EVENT])


def test_an_eventbridge_key_is_taken_as_it_is() -> None:
    created, _ = parse_body(eventbridge("incoming/a/x+y %41.csv"))
    assert [(c.key, c.etag) for c in created] == [("incoming/a/x+y %41.csv", "abc")]
    assert created[0].time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_body(eventbridge("k", "Object Deleted")) == ([], [OTHER_EVENT])


def test_the_test_event_and_other_s3_events_are_ignored() -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "bkt"}
    assert parse_body(json.dumps(test_event)) == ([], [TEST_EVENT])
    removed = s3_body("bkt", "incoming/a/1.csv", name="ObjectRemoved:Delete")
    assert parse_body(removed) == ([], [OTHER_EVENT])


def test_event_times_in_either_form_and_none() -> None:
    epoch = json.loads(eventbridge("k"))
    epoch["time"] = 1767323045.5  # some emulators write epoch seconds
    (obj,), _ = parse_body(json.dumps(epoch))
    assert obj.time == datetime.fromtimestamp(1767323045.5, UTC)
    epoch["time"] = "yesterday"
    (obj,), _ = parse_body(json.dumps(epoch))
    assert obj.time is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{oops", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"hello": "world"}), "not an S3 event notification"),
        (json.dumps({"Records": "x"}), "Records is not a list"),
        (json.dumps({"Records": [{"eventSource": "aws:sqs"}]}), "not an aws:s3 event"),
        (json.dumps({"Records": [{"eventSource": "aws:s3"}]}), "without an eventName"),
        (s3_body("bkt", ""), "s3.object.key is not a non-empty string"),
        (s3_body("bkt", "incoming/a/%FF.csv"), "not URL-encoded UTF-8"),
        (json.dumps({"Type": "Notification", "Message": 3}), "without a Message string"),
        (sns(sns(s3_body("bkt", "k"))), "not an S3 event notification"),
        (json.dumps({"source": "aws.s3", "detail-type": "Object Created"}), "detail is not"),
    ],
)
def test_a_body_that_is_no_notification_is_a_problem(body: str, says: str) -> None:
    parsed = parse_record(SqsRecord("m-1", body))
    assert parsed.problem is not None and says in parsed.problem
    assert parsed.problem.startswith("message m-1: ")
    assert parsed.created == ()


def test_a_record_without_a_body_is_a_problem() -> None:
    assert parse_record({"messageId": "m", "eventSource": "aws:sqs"}).problem is not None


def test_select_applies_the_discovery_rule_and_merges_a_keys_events() -> None:
    records = [
        parse_record(SqsRecord("m1", s3_body("bkt", "incoming%2Fa%2F1.csv", etag="v1"))),
        parse_record(SqsRecord("m2", s3_body("bkt", "incoming%2Fa%2F1.csv", etag="v2"))),
        parse_record(SqsRecord("m3", s3_body("bkt", "incoming%2Flogs%2F1.csv"))),
        parse_record(SqsRecord("m4", s3_body("other", "incoming%2Fa%2F2.csv"))),
        parse_record(SqsRecord("m5", s3_body("bkt", "incoming%2Fa%2Fb%2F3.csv"))),
        parse_record(SqsRecord("m6", json.dumps({"Event": "s3:TestEvent"}))),
    ]
    found, ignored = select(
        records, bucket="bkt", prefix="incoming/", skip_folders=frozenset({"logs"})
    )
    assert list(found) == ["incoming/a/1.csv"]
    one = found["incoming/a/1.csv"]
    assert (one.folder, one.records, one.etags) == ("a", ["m1", "m2"], {"v1", "v2"})
    assert ignored == {"skipped-folder": 1, OTHER_BUCKET: 1, "deep": 1, TEST_EVENT: 1}


def test_only_sqs_events_are_event_batches() -> None:
    record = {"eventSource": "aws:sqs", "messageId": "m", "body": "{}"}
    assert sqs_records({"Records": [record]}) == [record]
    assert sqs_records({"Records": [{**record, "eventSource": "aws:s3"}]}) is None
    assert sqs_records({"Records": []}) is None
    assert sqs_records({"action": "plan"}) is None
    assert sqs_records([record]) is None


def test_the_partial_batch_response() -> None:
    assert failures_response(["a", "b"]) == {
        "batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]
    }
    assert failures_response([]) == {"batchItemFailures": []}
