"""SQS message building (SPEC "SQS message"): body, id, FIFO attributes, batch entries."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .models import ListedObject, Outgoing

MAX_BATCH = 10  # SendMessageBatch accepts at most 10 entries.
# What SQS accepts in a message body: #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD |
# #x10000-#x10FFFF. Anything else (U+FFFE, U+FFFF, a lone surrogate) is legal in an S3
# key but would make SQS refuse the whole call, failing the other nine files with it.
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escape_for_sqs(text: str) -> str:
    """JSON text with each character SQS refuses written as a ``\\uXXXX`` escape.

    Such characters can only occur inside JSON strings, where the escape decodes back to
    the same character: the body's ``key`` is still the exact key.
    """
    return _NOT_SQS_TEXT.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def message_id(bucket: str, key: str, etag: str) -> str:
    """Hex SHA-256 of ``bucket/key@etag``: one file version, one id, for consumer dedup."""
    return hashlib.sha256(f"{bucket}/{key}@{etag}".encode("utf-8", "surrogatepass")).hexdigest()


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_outgoing(
    bucket: str, obj: ListedObject, folder: str, event: str, previous_etag: str | None = None
) -> Outgoing:
    """The message for one candidate; the body holds exactly the SPEC's eight fields."""
    mid = message_id(bucket, obj.key, obj.etag)
    body = json.dumps(
        {
            "id": mid,
            "bucket": bucket,
            "key": obj.key,
            "folder": folder,
            "etag": obj.etag,
            "size": int(obj.size),
            "last_modified": iso_utc(obj.last_modified),
            "event": event,
        },
        ensure_ascii=False,
    )
    body = _escape_for_sqs(body)
    return Outgoing(
        obj=obj,
        folder=folder,
        event=event,
        message_id=mid,
        body=body,
        previous_etag=previous_etag,
    )


def fifo_group_id(folder: str) -> str:
    """The folder when SQS accepts it as a MessageGroupId, else ``h-`` + 64 hex digits."""
    if 1 <= len(folder) <= 128 and all(33 <= ord(c) <= 126 for c in folder):
        return folder
    return "h-" + hashlib.sha256(folder.encode("utf-8", "surrogatepass")).hexdigest()[:64]


def batch_entries(batch: Sequence[Outgoing], fifo: bool) -> list[dict[str, Any]]:
    """``SendMessageBatch`` entries; the entry Id is the index within the batch."""
    entries: list[dict[str, Any]] = []
    for index, out in enumerate(batch):
        entry: dict[str, Any] = {
            "Id": str(index),
            "MessageBody": out.body,
            # The id also travels as an attribute so filters and consumers need not
            # parse the body.
            "MessageAttributes": {"id": {"DataType": "String", "StringValue": out.message_id}},
        }
        if fifo:
            entry["MessageGroupId"] = fifo_group_id(out.folder)
            entry["MessageDeduplicationId"] = out.message_id
        entries.append(entry)
    return entries
