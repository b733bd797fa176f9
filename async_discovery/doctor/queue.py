"""The check on SQS: the queue exists, is FIFO or standard as its URL says, its attributes
are readable; on request, one clearly marked test message."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from ..aws.probe import ProbeError
from ..iam import SID_QUEUE_ATTRIBUTES, SID_SEND
from .findings import DOCTOR_GRANTS, Context, Finding, Status

TEST_MESSAGE_ATTRIBUTE = "async-discovery-doctor"


async def queue(ctx: Context, *, send_test_message: bool) -> Finding:
    """The queue exists and is what its URL says (``GetQueueAttributes``); a marked
    test message when asked for. A denied attribute read is a warning (a doctor-only
    grant); a denied send fails (a scan needs ``sqs:SendMessage``)."""
    check = "queue"
    url = str(ctx.config.queue_url)
    fifo = ctx.config.is_fifo
    kind = "FIFO" if fifo else "standard"
    notes: list[str] = []
    status: Status = "ok"
    fix = ""
    try:
        attributes = await ctx.probe.queue_attributes(url)
    except ProbeError as exc:
        if exc.missing:
            return Finding(check, "fail", f"{url} does not exist", "create it or fix SQS_QUEUE_URL")
        if not exc.denied:
            return ctx.broken(check, exc, f"{url}: {exc}")
        missing = ctx.needs(SID_QUEUE_ATTRIBUTES, scan=False)
        notes.append(f"could not check: needs {missing}")
        status, fix = "warn", DOCTOR_GRANTS
    else:
        actual = attributes.get("FifoQueue", "false").lower() == "true"
        if actual != fifo:
            return Finding(
                check,
                "fail",
                f"{url}: the URL says {kind} but the queue is {'FIFO' if actual else 'standard'}",
                "check SQS_QUEUE_URL (a FIFO queue's name ends in .fifo)",
            )
        waiting = attributes.get("ApproximateNumberOfMessages", "?")
        notes.append(f"{kind}, attributes readable, ~{waiting} messages waiting")
    if send_test_message:
        try:
            message_id = await _send_test_message(ctx, url, fifo)
        except ProbeError as exc:
            if exc.missing:
                return Finding(check, "fail", f"{url} does not exist", "fix SQS_QUEUE_URL")
            return ctx.failure(check, exc, SID_SEND, "sqs:SendMessage")
        notes.append(f"test message sent (MessageId {message_id})")
    return Finding(check, status, f"{url}: " + "; ".join(notes), fix)


async def _send_test_message(ctx: Context, url: str, fifo: bool) -> str:
    body = json.dumps(
        {
            TEST_MESSAGE_ATTRIBUTE: "test message",
            "note": "sent by `async-discovery doctor --send-test-message`; not a file",
            "sent_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
    )
    dedup = uuid.uuid4().hex
    return await ctx.probe.send_message(
        url,
        body,
        {TEST_MESSAGE_ATTRIBUTE: "test"},
        group_id=TEST_MESSAGE_ATTRIBUTE if fifo else None,
        dedup_id=dedup if fifo else None,
    )
