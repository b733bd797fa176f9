"""S3 Event Notifications through SQS (SPEC "Events"), against moto's real notifications:
moto delivers each bucket's notifications to an events queue (directly, through SNS or
through EventBridge) as S3 would, and the records handed to the function are what
arrived there."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from async_discovery.layout import ranges_prefix, shard_key
from async_discovery.messages import message_id
from async_discovery.testing.fault_proxy import FailEntries, FaultProxy, S3Error, SqsError

from .events_support import (
    FakeContext,
    Notified,
    boto,
    configure,
    invoke,
    notified_bucket,
    queue_arn,
    s3_body,
    sqs_record,
)
from .helpers import MotoEnv, scan

LAYOUTS = ("single", "folders")
SP = "state/processed_files/"


@pytest.fixture
def setup(env: MotoEnv) -> Notified:
    return notified_bucket(env)


def logged(capsys: pytest.CaptureFixture[str], event: str) -> list[dict[str, Any]]:
    """The JSON log lines on stderr with ``"event": event``."""
    lines = capsys.readouterr().err.splitlines()
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    return [doc for doc in docs if doc.get("event") == event]


def record_of(records: list[dict[str, Any]], key: str) -> str:
    """The message id of the record that notified ``key`` (moto encodes "/" as %2F)."""
    (found,) = [str(r["messageId"]) for r in records if key.replace("/", "%2F") in r["body"]]
    return found


def state_keys(setup: Notified, layout: str) -> dict[str, Any]:
    """The files recorded in state, either layout."""
    env = setup.env
    if layout == "single":
        doc = env.state(setup.bucket)
        return dict(doc["files"]) if doc else {}
    files: dict[str, Any] = {}
    listed = env.s3.list_objects_v2(Bucket=setup.bucket, Prefix=f"{SP}folders/")
    for item in listed.get("Contents", []):
        doc = env.state(setup.bucket, item["Key"])
        assert doc is not None
        files.update(doc.get("files", {}))  # a split folder's index has none
    return files


# -- the shapes --------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_notified_file_is_sent_and_recorded(
    monkeypatch: pytest.MonkeyPatch, setup: Notified, layout: str
) -> None:
    """The S3 shape as moto delivers it (key URL-encoded, space as "+"): awkward keys
    arrive exactly; the test event is handled and ignored; state records the file."""
    keys = ["incoming/a/q3 report+final 100%.csv", "incoming/café/données été.csv"]
    etags = {key: setup.put(key) for key in keys}
    records = setup.records(drop_test_event=False)
    assert any("s3:TestEvent" in r["body"] for r in records)
    configure(monkeypatch, setup, layout)
    assert invoke(records) == []
    sent = {b["key"]: b for b in setup.sent()}
    assert set(sent) == set(keys)
    for key, body in sent.items():
        assert body["id"] == message_id(setup.bucket, key, etags[key])
        assert body["event"] == "new" and body["etag"] == etags[key]
    assert set(state_keys(setup, layout)) == set(keys)


def test_the_message_is_the_one_a_scan_sends(
    monkeypatch: pytest.MonkeyPatch, env: MotoEnv, setup: Notified
) -> None:
    """Same body, same id, as a scan of the same object."""
    setup.put("incoming/a/1.csv", b"x,y\n")
    configure(monkeypatch, setup)
    assert invoke(setup.records()) == []
    (from_event,) = setup.env.receive_all(setup.target_url)
    env.s3.delete_object(Bucket=setup.bucket, Key="state/processed_files.json")
    config = env.config(setup.bucket, setup.target_url)
    assert anyio.run(scan, config)["queued"] == 1
    (from_scan,) = setup.env.receive_all(setup.target_url)
    assert from_event["Body"] == from_scan["Body"]
    assert from_event["MessageAttributes"] == from_scan["MessageAttributes"]


def test_sns_wrapped_notifications(monkeypatch: pytest.MonkeyPatch, env: MotoEnv) -> None:
    """S3 → SNS topic → SQS (the envelope moto's SNS writes, with the test event in it)."""
    bucket, events_url = env.new_bucket(), env.new_queue()
    sns = boto(env, "sns")
    topic = sns.create_topic(Name=f"t-{bucket}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(env, events_url))
    env.s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    setup = Notified(env, bucket, events_url, "", env.new_queue())
    setup.put("incoming/a/x y.csv")
    records = setup.records(drop_test_event=False)
    assert all(json.loads(r["body"])["Type"] == "Notification" for r in records)
    assert len(records) == 2  # the test event and the object
    configure(monkeypatch, setup)
    assert invoke(records) == []
    assert [b["key"] for b in setup.sent()] == ["incoming/a/x y.csv"]


def test_eventbridge_object_created(monkeypatch: pytest.MonkeyPatch, env: MotoEnv) -> None:
    """S3 → EventBridge rule → SQS: the key is not URL-encoded; other detail types
    (moto also emits "Object Tags Added") are ignored."""
    bucket, events_url = env.new_bucket(), env.new_queue()
    events = boto(env, "events")
    rule = f"r-{bucket}"
    pattern = {"source": ["aws.s3"], "detail": {"bucket": {"name": [bucket]}}}
    events.put_rule(Name=rule, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": queue_arn(env, events_url)}])
    env.s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    setup = Notified(env, bucket, events_url, "", env.new_queue())
    setup.put("incoming/a/x+y %41.csv")
    records = setup.records()
    assert {json.loads(r["body"])["detail-type"] for r in records} >= {"Object Created"}
    configure(monkeypatch, setup)
    assert invoke(records) == []
    try:
        assert [b["key"] for b in setup.sent()] == ["incoming/a/x+y %41.csv"]
    finally:
        events.remove_targets(Rule=rule, Ids=["q"])
        events.delete_rule(Name=rule)


def test_the_discovery_rule_and_other_buckets(
    monkeypatch: pytest.MonkeyPatch, env: MotoEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only candidates of S3_SOURCE_BUCKET under the prefix are sent; every other event
    (here the notification has no prefix filter) is counted as ignored, its record
    handled."""
    setup = notified_bucket(env, prefix=None)
    ignored = [
        "incoming/logs/a.csv",  # skipped folder
        "incoming/a/deeper/b.csv",
        "incoming/a/readme.txt",
        "incoming/top.csv",
        "incoming/a/",  # folder marker
        "elsewhere/a/x.csv",
    ]
    for key in [*ignored, "incoming/a/ok.csv"]:
        setup.put(key)
    other = env.new_bucket()
    env.s3.put_bucket_notification_configuration(
        Bucket=other,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": setup.events_arn, "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    env.put(other, "incoming/a/other-bucket.csv")
    records = setup.records()
    configure(monkeypatch, setup)
    assert invoke(records) == []
    assert [b["key"] for b in setup.sent()] == ["incoming/a/ok.csv"]
    (line,) = logged(capsys, "events_summary")
    assert line["ignored"] == len(ignored) + 1
    assert line["ignored_by_reason"]["other-bucket"] == 1
    # The state object is in the bucket: its write was notified too, and is ignored.
    (state_write,) = setup.records()
    assert invoke([state_write]) == []
    (line,) = logged(capsys, "events_summary")
    assert line["ignored_by_reason"] == {"outside-prefix": 1}


def test_other_s3_events_are_ignored(monkeypatch: pytest.MonkeyPatch, setup: Notified) -> None:
    """A deletion (or any event but ObjectCreated) sends nothing and is handled."""
    body = s3_body(setup.bucket, "incoming/a/1.csv", name="ObjectRemoved:Delete")
    configure(monkeypatch, setup)
    assert invoke([sqs_record("m-del", body)]) == []
    assert setup.sent() == []


# -- the object's current version ----------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_event_for_an_overwritten_version_sends_the_current_one(
    monkeypatch: pytest.MonkeyPatch, setup: Notified, layout: str
) -> None:
    key = "incoming/a/1.csv"
    setup.put(key, b"v1")
    first = setup.records()
    v2 = setup.put(key, b"v2")
    second = setup.records()
    configure(monkeypatch, setup, layout)
    assert invoke(first) == []  # the event of v1, read after v2 was written
    (body,) = setup.sent()
    assert (body["etag"], body["id"]) == (v2, message_id(setup.bucket, key, v2))
    assert invoke(second) == []  # v2's own event: already sent
    assert setup.sent() == []
    assert state_keys(setup, layout)[key]["etag"] == v2


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_event_for_a_deleted_object_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, env: MotoEnv, setup: Notified, layout: str
) -> None:
    setup.put("incoming/a/gone.csv")
    setup.put("incoming/a/kept.csv")
    env.s3.delete_object(Bucket=setup.bucket, Key="incoming/a/gone.csv")
    configure(monkeypatch, setup, layout)
    assert invoke(setup.records()) == []  # handled: nothing to deliver again
    assert [b["key"] for b in setup.sent()] == ["incoming/a/kept.csv"]
    assert "incoming/a/gone.csv" not in state_keys(setup, layout)


# -- sent once ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_duplicate_record_is_sent_once(
    monkeypatch: pytest.MonkeyPatch, setup: Notified, layout: str
) -> None:
    """The same notification twice in one batch (S3 delivers at least once), and a
    record delivered again in a later batch: one message."""
    setup.put("incoming/a/1.csv")
    (record,) = setup.records()
    twin = {**record, "messageId": "another-delivery"}
    configure(monkeypatch, setup, layout)
    assert invoke([record, twin]) == []
    assert len(setup.sent()) == 1
    assert invoke([record]) == []  # redelivered
    assert setup.sent() == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_event_and_a_scan_send_a_file_once(
    monkeypatch: pytest.MonkeyPatch, env: MotoEnv, setup: Notified, layout: str
) -> None:
    setup.put("incoming/a/event-first.csv")
    configure(monkeypatch, setup, layout)
    assert invoke(setup.records()) == []
    config = env.config(setup.bucket, setup.target_url, state_layout=layout)
    summary = anyio.run(scan, config)
    assert (summary["queued"], summary["skipped"]) == (0, 1)
    setup.put("incoming/b/scan-first.csv")
    records = setup.records()
    assert anyio.run(scan, config)["queued"] == 1  # before the event is handled
    assert invoke(records) == []
    assert sorted(b["key"] for b in setup.sent()) == [
        "incoming/a/event-first.csv",
        "incoming/b/scan-first.csv",
    ]


# -- batchItemFailures --------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batch_item_failures_list_exactly_the_records_to_deliver_again(
    monkeypatch: pytest.MonkeyPatch, threaded_proxy: FaultProxy, setup: Notified, layout: str
) -> None:
    """Bad bodies and a failed send fail their own records; the others are handled."""
    for key in ("incoming/a/ok.csv", "incoming/b/refused.csv", "incoming/b/ok.csv"):
        setup.put(key)
    records = setup.records()
    refused = record_of(records, "incoming/b/refused.csv")
    bad = [
        sqs_record("not-json", "{oops"),
        sqs_record("not-a-shape", json.dumps({"hello": "world"})),
        sqs_record("no-key", s3_body(setup.bucket, "")),
    ]
    threaded_proxy.inject(
        FailEntries(lambda entry: "refused.csv" in entry["MessageBody"]), "SendMessageBatch"
    )
    configure(monkeypatch, setup, layout, endpoint=threaded_proxy.url, SEND_ATTEMPTS="2")
    failed = invoke([bad[0], *records, bad[1], bad[2]])
    assert failed == ["not-json", refused, "not-a-shape", "no-key"]
    assert sorted(b["key"] for b in setup.sent()) == ["incoming/a/ok.csv", "incoming/b/ok.csv"]
    assert "incoming/b/refused.csv" not in state_keys(setup, layout)


def test_a_failed_state_write_fails_the_records_of_its_folder_only(
    monkeypatch: pytest.MonkeyPatch, threaded_proxy: FaultProxy, setup: Notified
) -> None:
    """Folders layout: the shard of ``b`` cannot be written; ``a``'s records are handled,
    ``b``'s are delivered again (their messages went out; the redelivery sends them
    again with the same id and records them)."""
    for key in ("incoming/a/1.csv", "incoming/b/1.csv", "incoming/b/2.csv"):
        setup.put(key)
    records = setup.records()
    b_records = [r["messageId"] for r in records if "%2Fb%2F" in r["body"]]
    b_shard = shard_key(SP, "incoming/", "b")
    threaded_proxy.inject(
        S3Error("InternalError", 500), "PutObject", when=lambda r: r.key == b_shard
    )
    configure(monkeypatch, setup, "folders", endpoint=threaded_proxy.url)
    assert invoke(records) == b_records
    assert set(state_keys(setup, "folders")) == {"incoming/a/1.csv"}
    threaded_proxy.clear()
    assert invoke([r for r in records if r["messageId"] in b_records]) == []
    assert set(state_keys(setup, "folders")) == {
        "incoming/a/1.csv",
        "incoming/b/1.csv",
        "incoming/b/2.csv",
    }


def test_a_failed_state_write_fails_every_sent_record_in_single_layout(
    monkeypatch: pytest.MonkeyPatch, threaded_proxy: FaultProxy, setup: Notified
) -> None:
    setup.put("incoming/a/1.csv")
    setup.put("incoming/b/1.csv")
    records = setup.records()
    threaded_proxy.inject(S3Error("InternalError", 500), "PutObject")
    configure(monkeypatch, setup, "single", endpoint=threaded_proxy.url)
    assert invoke(records) == [r["messageId"] for r in records]
    assert setup.env.state(setup.bucket) is None


def test_an_unreadable_object_fails_its_record(
    monkeypatch: pytest.MonkeyPatch, threaded_proxy: FaultProxy, setup: Notified
) -> None:
    setup.put("incoming/a/1.csv")
    setup.put("incoming/a/2.csv")
    records = setup.records()
    threaded_proxy.inject(
        S3Error("InternalError", 500), "HeadObject", when=lambda r: r.key == "incoming/a/2.csv"
    )
    configure(monkeypatch, setup, endpoint=threaded_proxy.url)
    assert invoke(records) == [record_of(records, "incoming/a/2.csv")]
    assert [b["key"] for b in setup.sent()] == ["incoming/a/1.csv"]


def test_an_unreadable_shard_fails_its_folder_only(
    monkeypatch: pytest.MonkeyPatch, env: MotoEnv, setup: Notified
) -> None:
    env.s3.put_object(Bucket=setup.bucket, Key=shard_key(SP, "incoming/", "b"), Body=b"not json")
    setup.put("incoming/a/1.csv")
    setup.put("incoming/b/1.csv")
    records = setup.records()
    configure(monkeypatch, setup, "folders")
    assert invoke(records) == [record_of(records, "incoming/b/1.csv")]
    assert [b["key"] for b in setup.sent()] == ["incoming/a/1.csv"]
    assert env.state_bytes(setup.bucket, shard_key(SP, "incoming/", "b")) == b"not json"


def test_a_queue_that_refuses_fails_every_record_with_a_file(
    monkeypatch: pytest.MonkeyPatch, threaded_proxy: FaultProxy, setup: Notified
) -> None:
    setup.put("incoming/a/1.csv")
    junk = sqs_record("junk-only", s3_body(setup.bucket, "incoming%2Fx.txt"))
    records = [*setup.records(), junk]
    threaded_proxy.inject(SqsError.queue_does_not_exist(), "SendMessageBatch")
    configure(monkeypatch, setup, endpoint=threaded_proxy.url)
    assert invoke(records) == [records[0]["messageId"]]


def test_a_configuration_error_fails_every_record(
    monkeypatch: pytest.MonkeyPatch, setup: Notified, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every record is listed (none is lost), and the log says why."""
    setup.put("incoming/a/1.csv")
    records = [*setup.records(), sqs_record("bad", "{")]
    configure(monkeypatch, setup)
    monkeypatch.delenv("S3_SOURCE_BUCKET")
    monkeypatch.setenv("WORKERS", "zero")
    assert invoke(records) == [r["messageId"] for r in records]
    (line,) = logged(capsys, "config_error")
    problems = " ".join(line["problems"])
    assert "S3_SOURCE_BUCKET" in problems and "WORKERS" in problems
    assert line["records"] == 2
    assert setup.sent() == []


def test_past_the_deadline_the_files_records_are_delivered_again(
    monkeypatch: pytest.MonkeyPatch, setup: Notified
) -> None:
    setup.put("incoming/a/1.csv")
    records = [*setup.records(), sqs_record("junk", s3_body(setup.bucket, "incoming%2Fx.txt"))]
    configure(monkeypatch, setup)
    # 1.5 s left is under the 2 s margin: nothing is decided, nothing sent.
    assert invoke(records, FakeContext(1_500)) == [records[0]["messageId"]]
    assert setup.sent() == []


# -- writes: one per state unit per batch -------------------------------------------------


@pytest.mark.parametrize(("layout", "writes"), [("single", 1), ("folders", 3)])
def test_a_batch_writes_each_state_unit_at_most_once(
    monkeypatch: pytest.MonkeyPatch,
    threaded_proxy: FaultProxy,
    setup: Notified,
    layout: str,
    writes: int,
) -> None:
    """30 events over 3 folders: one conditional write per folder (one object under
    ``single``); a batch that changes nothing writes nothing."""
    keys = [f"incoming/{f}/{i:02d}.csv" for f in "abc" for i in range(10)]
    setup.env.put_many(setup.bucket, keys)
    records = setup.records()
    assert len(records) == 30
    configure(monkeypatch, setup, layout, endpoint=threaded_proxy.url)
    threaded_proxy.reset_counts()
    assert invoke(records) == []
    puts = [r for r in threaded_proxy.requests if r.operation == "PutObject"]
    assert len(puts) == writes
    assert all(r.headers.get("If-None-Match") == "*" for r in puts)
    assert len(setup.sent()) == 30
    threaded_proxy.reset_counts()
    assert invoke(records) == []  # all delivered again: nothing changes, nothing written
    assert threaded_proxy.counts["PutObject"] == 0


def test_an_event_in_a_split_folder_writes_the_range_holding_its_key(
    monkeypatch: pytest.MonkeyPatch, threaded_proxy: FaultProxy, env: MotoEnv, setup: Notified
) -> None:
    """A folder split into key ranges: each event decides against the range shard whose
    keys hold it (the scan's lookup) and the batch writes those ranges once each, never
    the index; the next scan finds every file recorded where it lists it."""
    keys = [f"incoming/a/{i:02d}.csv" for i in range(30)]
    env.put_many(setup.bucket, keys)
    config = env.config(setup.bucket, setup.target_url, state_layout="folders", shard_max_files=10)
    assert anyio.run(scan, config)["queued"] == 30
    ranges = ranges_prefix(f"{SP}", "incoming/", "a")
    listed = env.s3.list_objects_v2(Bucket=setup.bucket, Prefix=ranges).get("Contents", [])
    assert len(listed) >= 3  # split: 30 files at 10 a shard at most
    setup.records()
    setup.sent()
    new = ["incoming/a/03x.csv", "incoming/a/27x.csv"]
    for key in new:
        setup.put(key)
    records = setup.records()
    configure(monkeypatch, setup, "folders", endpoint=threaded_proxy.url, SHARD_MAX_FILES="10")
    threaded_proxy.reset_counts()
    assert invoke(records) == []
    assert sorted(b["key"] for b in setup.sent()) == new
    puts = [r for r in threaded_proxy.requests if r.operation == "PutObject"]
    assert len(puts) == 2
    assert all(r.path.startswith(f"/{setup.bucket}/{ranges}") for r in puts), puts
    assert all("If-Match" in r.headers for r in puts)
    assert len({r.path for r in puts}) == 2  # two ranges, one write each
    summary = anyio.run(scan, config)
    assert (summary["queued"], summary["skipped"]) == (0, 32)
    assert set(state_keys(setup, "folders")) == set(keys) | set(new)


def test_a_conflicting_write_is_reloaded_and_merged(
    monkeypatch: pytest.MonkeyPatch, threaded_proxy: FaultProxy, env: MotoEnv, setup: Notified
) -> None:
    """Another writer changed the state between the batch's read and write (412): the
    batch reloads, merges its entries and writes again; both runs' entries survive."""
    env.put(setup.bucket, "incoming/a/old.csv")
    config = env.config(setup.bucket, setup.target_url)
    assert anyio.run(scan, config)["queued"] == 1
    setup.records()
    setup.sent()
    setup.put("incoming/a/new.csv")
    records = setup.records()
    threaded_proxy.inject(S3Error("PreconditionFailed", 412), "PutObject", times=1)
    configure(monkeypatch, setup, endpoint=threaded_proxy.url)
    assert invoke(records) == []
    assert threaded_proxy.injected["PutObject"] == 1
    assert set(state_keys(setup, "single")) == {"incoming/a/old.csv", "incoming/a/new.csv"}


# -- settle time, first-run policy, FIFO --------------------------------------------------


def test_min_object_age_leaves_young_files_to_the_scan(
    monkeypatch: pytest.MonkeyPatch, env: MotoEnv, setup: Notified
) -> None:
    setup.put("incoming/a/young.csv")
    configure(monkeypatch, setup, MIN_OBJECT_AGE_SECONDS="3600")
    assert invoke(setup.records()) == []  # handled: deferred, not delivered again
    assert setup.sent() == []
    config = env.config(setup.bucket, setup.target_url)
    assert anyio.run(scan, config)["queued"] == 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_first_event_batch_keeps_the_first_run_policy_for_the_scan(
    monkeypatch: pytest.MonkeyPatch, env: MotoEnv, layout: str
) -> None:
    """INITIAL_SCAN=mark-existing: files that existed before the first event are marked
    by the next scan, not sent, even though the event batch wrote state first."""
    bucket = env.new_bucket()
    env.put(bucket, "incoming/a/existing.csv")
    env.put(bucket, "incoming/z/existing.csv")
    setup = notified_bucket(env, bucket=bucket)  # notifications from now on
    anyio.run(anyio.sleep, 1.1)  # a new second: LastModified has whole seconds
    setup.put("incoming/a/arrived.csv")
    configure(monkeypatch, setup, layout, INITIAL_SCAN="mark-existing")
    assert invoke(setup.records()) == []
    assert [b["key"] for b in setup.sent()] == ["incoming/a/arrived.csv"]
    config = env.config(
        bucket, setup.target_url, state_layout=layout, initial_scan=_mark_existing()
    )
    summary = anyio.run(scan, config)
    assert (summary["queued"], summary["marked"]) == (0, 2)
    assert setup.sent() == []


def _mark_existing() -> Any:
    from async_discovery.config import InitialScan

    return InitialScan(mode="mark-existing")


def test_fifo_target_keeps_a_folders_event_order_within_a_batch(
    monkeypatch: pytest.MonkeyPatch, env: MotoEnv
) -> None:
    setup = notified_bucket(env, fifo_target=True)
    order = ["incoming/a/c.csv", "incoming/a/a.csv", "incoming/a/b.csv"]
    for key in order:
        setup.put(key)
        anyio.run(anyio.sleep, 0.01)
    configure(monkeypatch, setup)
    assert invoke(setup.records()) == []
    messages = env.receive_all(setup.target_url)
    assert [json.loads(m["Body"])["key"] for m in messages] == order
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {"a"}


# -- observability ------------------------------------------------------------------------


def test_one_log_line_and_one_emf_record_per_batch(
    monkeypatch: pytest.MonkeyPatch, setup: Notified, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.put("incoming/a/1.csv")
    setup.put("incoming/a/2.csv")
    records = [*setup.records(drop_test_event=False), sqs_record("bad", "[]")]
    configure(monkeypatch, setup)
    assert invoke(records) == ["bad"]
    assert invoke(records[1:]) == ["bad"]  # delivered again: skipped
    err = capsys.readouterr().err.splitlines()
    docs = [json.loads(line) for line in err if line.startswith("{")]
    summaries = [d for d in docs if d.get("event") == "events_summary"]
    emf = [d for d in docs if "_aws" in d]
    assert len(summaries) == 2 and len(emf) == 2
    first, again = summaries
    assert (first["records"], first["queued"], first["failed_records"]) == (4, 2, 1)
    assert first["ignored"] == 1 and first["statusCode"] == 207
    assert 0 <= first["lag_p50_seconds"] <= first["lag_max_seconds"] < 60
    assert (again["records"], again["skipped"], again["queued"]) == (3, 2, 0)
    assert again["lag_p50_seconds"] is None
    record = emf[0]
    names = {m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"records", "queued", "skipped", "ignored", "failed_records"} <= names
    assert {"lag_p50", "lag_max"} <= names
    assert record["Path"] == "events" and record["failed_records"] == 1.0
    assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["Service"],
        ["Service", "Path"],
    ]


# -- reconciliation -----------------------------------------------------------------------


def test_a_scan_counts_the_files_the_events_missed(env: MotoEnv, setup: Notified) -> None:
    """``found_by_reconciliation``: files a scan sends that were modified more than
    RECONCILIATION_WINDOW_SECONDS before it started (0 turns it off)."""
    setup.put("incoming/a/missed.csv")
    anyio.run(anyio.sleep, 3.1)
    setup.put("incoming/a/fresh.csv")
    config = env.config(setup.bucket, setup.target_url, reconciliation_window_seconds=2)
    summary = anyio.run(scan, config)
    assert (summary["queued"], summary["found_by_reconciliation"]) == (2, 1)
    setup.put("incoming/b/off.csv")
    env.s3.delete_object(Bucket=setup.bucket, Key="state/processed_files.json")
    off = env.config(setup.bucket, setup.target_url, reconciliation_window_seconds=0)
    summary = anyio.run(scan, off)
    assert (summary["queued"], summary["found_by_reconciliation"]) == (3, 0)


def test_an_unexpected_error_fails_the_whole_batch(
    monkeypatch: pytest.MonkeyPatch, setup: Notified, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug, or an answer nothing foresaw, never escapes: every record is listed."""
    from async_discovery import events

    async def broken(self: Any, records: Any) -> list[str]:
        raise RuntimeError("boom")

    setup.put("incoming/a/1.csv")
    records = setup.records()
    configure(monkeypatch, setup)
    monkeypatch.setattr(events.EventBatch, "run", broken)
    assert invoke(records) == [r["messageId"] for r in records]
    (line,) = logged(capsys, "events_summary")
    assert line["statusCode"] == 500 and "RuntimeError: boom" in line["error"]
