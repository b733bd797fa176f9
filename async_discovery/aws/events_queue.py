"""The events queue that ``listen`` polls: ``ReceiveMessage`` and ``DeleteMessageBatch``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import QueueError
from ..messages import MAX_BATCH
from .errors import AWS_ERRORS, describe

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    """One message taken from the events queue."""

    message_id: str
    receipt_handle: str
    body: str


class SqsEventsQueue:
    """Receives notifications from one queue and deletes the handled ones."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    async def receive(self, count: int, *, wait_seconds: int) -> list[Received]:
        """Up to ``count`` (at most 10) messages, waiting up to ``wait_seconds`` (0-20)
        for the first; raises :class:`QueueError` when the queue cannot be read."""
        try:
            resp = await self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max(1, min(count, MAX_BATCH)),
                WaitTimeSeconds=max(0, min(wait_seconds, 20)),
            )
        except AWS_ERRORS as exc:
            raise QueueError(f"receiving from {self.queue_url} failed: {describe(exc)}") from exc
        return [
            Received(str(m["MessageId"]), str(m["ReceiptHandle"]), str(m.get("Body", "")))
            for m in resp.get("Messages", ())
        ]

    async def delete(self, messages: Sequence[Received]) -> int:
        """Delete ``messages`` (ten per call); returns how many SQS did not delete (they
        come back after the visibility timeout, and are then skipped as unchanged)."""
        failed = 0
        for start in range(0, len(messages), MAX_BATCH):
            chunk = messages[start : start + MAX_BATCH]
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)
            ]
            try:
                resp = await self.client.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=entries,  # type: ignore[arg-type]
                )
            except AWS_ERRORS:
                failed += len(chunk)
                continue
            failed += len(resp.get("Failed", ()))
        return failed
