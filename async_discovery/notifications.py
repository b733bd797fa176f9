"""S3 Event Notifications delivered through SQS: records in, created objects out.

SPEC "Events". A Lambda SQS event (``{"Records": [{"eventSource": "aws:sqs",
"messageId": …, "body": …}, …]}``) carries one notification per record body, in one of
four shapes:

- an S3 event notification: ``{"Records": [{"eventSource": "aws:s3", "eventName":
  "ObjectCreated:Put", "s3": {"bucket": {"name": …}, "object": {"key": …}}}]}``; the
  key is URL-encoded with ``+`` for a space, so it is decoded with ``unquote_plus``;
- the same wrapped by SNS: ``{"Type": "Notification", "Message": "<the JSON above>"}``;
- an EventBridge event: ``{"source": "aws.s3", "detail-type": "Object Created",
  "detail": {"bucket": {"name": …}, "object": {"key": …}}}``; the key is NOT encoded;
- ``s3:TestEvent``, which S3 sends once when a notification is configured (ignored).

Only object-created events name a file to send; other S3 events (deletions, restores,
tags, …) are counted as ignored. A body that is not JSON, or not one of these shapes,
is a *problem*: its record is listed in ``batchItemFailures``, so SQS delivers it again
and, after the queue's ``maxReceiveCount``, moves it to the dead-letter queue.

:func:`select` then applies the discovery rule with the configured prefix and skip
folders. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from .changes import strip_etag
from .discovery import Verdict, classify

# Why an event names no file to send, beyond the discovery rule's verdicts.
OTHER_EVENT = "other-event"  # not an object-created event (a deletion, a restore, …)
TEST_EVENT = "test-event"  # s3:TestEvent
OTHER_BUCKET = "other-bucket"  # an object of another bucket than S3_SOURCE_BUCKET

_MAX_SHOWN = 80


class BadBody(ValueError):
    """A record body that is not JSON or not one of the notification shapes."""


@dataclasses.dataclass(frozen=True, slots=True)
class SqsRecord:
    """One SQS message of an events batch: its id (``itemIdentifier`` in
    ``batchItemFailures``) and body."""

    message_id: str
    body: str


@dataclasses.dataclass(frozen=True, slots=True)
class CreatedObject:
    """One object-created event: what S3 said about the object at the time."""

    bucket: str
    key: str
    etag: str | None
    time: datetime | None  # the event's time (S3 ``eventTime``, EventBridge ``time``)


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedRecord:
    """One record's body: the objects it says were created, the events it ignores (by
    reason), or the ``problem`` that makes it a failed record."""

    message_id: str
    created: tuple[CreatedObject, ...] = ()
    ignored: tuple[str, ...] = ()
    problem: str | None = None


@dataclasses.dataclass(slots=True)
class Candidate:
    """A key the batch's events name that the discovery rule keeps, with every record
    that named it (one file, however many events), the ETags they named and the
    earliest event time."""

    key: str
    folder: str
    records: list[str]
    etags: set[str]
    event_time: datetime | None


def sqs_records(event: Any) -> list[Mapping[str, Any]] | None:
    """The records of a Lambda SQS event, or None when ``event`` is not one (every
    record has ``eventSource`` ``aws:sqs``)."""
    if not isinstance(event, dict):
        return None
    records = event.get("Records")
    if not isinstance(records, list) or not records:
        return None
    if all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records):
        return records
    return None


def parse_record(record: Mapping[str, Any] | SqsRecord) -> ParsedRecord:
    """One SQS record (Lambda's dict or a :class:`SqsRecord`), parsed; never raises."""
    body: Any
    if isinstance(record, SqsRecord):
        message_id, body = record.message_id, record.body
    else:
        message_id, body = str(record.get("messageId", "")), record.get("body")
    try:
        if not isinstance(body, str):
            raise BadBody("the record has no body")
        created, ignored = parse_body(body)
    except BadBody as exc:
        return ParsedRecord(message_id, problem=f"message {message_id}: {exc}")
    return ParsedRecord(message_id, tuple(created), tuple(ignored))


def parse_body(body: str, *, wrapped: bool = False) -> tuple[list[CreatedObject], list[str]]:
    """The created objects and the ignored events of one body; raises :class:`BadBody`.
    ``wrapped``: the body came out of an SNS notification (which cannot wrap another)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise BadBody(f"the body is not JSON: {_shown(body)}") from None
    if not isinstance(doc, dict):
        raise BadBody(f"the body is not a JSON object: {_shown(body)}")
    if "Records" in doc:
        return _s3_records(doc["Records"])
    if doc.get("Event") == "s3:TestEvent":
        return [], [TEST_EVENT]
    if doc.get("Type") == "Notification" and not wrapped:
        message = doc.get("Message")
        if not isinstance(message, str):
            raise BadBody("an SNS notification without a Message string")
        return parse_body(message, wrapped=True)
    if doc.get("source") == "aws.s3" and "detail-type" in doc:
        return _eventbridge(doc)
    raise BadBody(
        "not an S3 event notification, an SNS-wrapped one, an EventBridge aws.s3 event "
        f"or an s3:TestEvent: {_shown(body)}"
    )


def _s3_records(records: Any) -> tuple[list[CreatedObject], list[str]]:
    if not isinstance(records, list):
        raise BadBody("Records is not a list")
    created: list[CreatedObject] = []
    ignored: list[str] = []
    for record in records:
        if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
            raise BadBody(f"a record that is not an aws:s3 event: {_shown(record)}")
        name = record.get("eventName")
        if not isinstance(name, str):
            raise BadBody("an aws:s3 record without an eventName")
        if not name.startswith("ObjectCreated:"):
            ignored.append(OTHER_EVENT)
            continue
        s3 = _object(record.get("s3"), "s3")
        key = _text(_object(s3.get("object"), "s3.object"), "key", "s3.object")
        try:
            # S3 URL-encodes the key in notifications, with "+" for a space.
            key = unquote_plus(key, errors="strict")
        except UnicodeDecodeError:
            raise BadBody(f"s3.object.key {_shown(key)} is not URL-encoded UTF-8") from None
        bucket = _text(_object(s3.get("bucket"), "s3.bucket"), "name", "s3.bucket")
        obj = s3["object"]
        created.append(CreatedObject(bucket, key, _etag(obj), _time(record.get("eventTime"))))
    return created, ignored


def _eventbridge(doc: dict[str, Any]) -> tuple[list[CreatedObject], list[str]]:
    if doc.get("detail-type") != "Object Created":
        return [], [OTHER_EVENT]
    detail = _object(doc.get("detail"), "detail")
    obj = _object(detail.get("object"), "detail.object")
    key = _text(obj, "key", "detail.object")  # EventBridge sends the key as it is
    bucket = _text(_object(detail.get("bucket"), "detail.bucket"), "name", "detail.bucket")
    return [CreatedObject(bucket, key, _etag(obj), _time(doc.get("time")))], []


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadBody(f"{where} is not an object")
    return value


def _text(doc: dict[str, Any], field: str, where: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not value:
        raise BadBody(f"{where}.{field} is not a non-empty string")
    return value


def _etag(obj: dict[str, Any]) -> str | None:
    etag = obj.get("eTag", obj.get("etag"))
    return strip_etag(etag) if isinstance(etag, str) and etag else None


def _time(value: Any) -> datetime | None:
    """An event time: ISO 8601 (AWS), or epoch seconds (some emulators); None when
    absent or unreadable (only the lag figure needs it)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return None


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return repr(text) if len(text) <= _MAX_SHOWN else f"{text[:60]!r}... ({len(text)} characters)"


def select(
    parsed: Iterable[ParsedRecord], *, bucket: str, prefix: str, skip_folders: frozenset[str]
) -> tuple[dict[str, Candidate], Counter[str]]:
    """The candidates of a batch by key, and the ignored events by reason.

    Objects of other buckets are ignored, the rest go through the discovery rule
    (``prefix`` normalised); events of one key (a file written twice, a record
    delivered twice) make one candidate listing all their records.
    """
    found: dict[str, Candidate] = {}
    ignored: Counter[str] = Counter()
    for record in parsed:
        ignored.update(record.ignored)
        for obj in record.created:
            if obj.bucket != bucket:
                ignored[OTHER_BUCKET] += 1
                continue
            verdict, folder = classify(obj.key, prefix, skip_folders)
            if verdict is not Verdict.CANDIDATE:
                ignored[verdict.value] += 1
                continue
            candidate = found.get(obj.key)
            if candidate is None:
                candidate = found[obj.key] = Candidate(obj.key, folder, [], set(), obj.time)
            if record.message_id not in candidate.records:
                candidate.records.append(record.message_id)
            if obj.etag is not None:
                candidate.etags.add(obj.etag)
            if obj.time is not None and (
                candidate.event_time is None or obj.time < candidate.event_time
            ):
                candidate.event_time = obj.time
    return found, ignored


def failures_response(failed: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    """The SQS partial batch response: the records to deliver again."""
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failed]}
