"""The events queue that ``listen`` polls: ``ReceiveMessage`` and ``DeleteMessageBatch``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

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

    async def delete(self, messages: Sequence[Received], *, parallel: int = 4) -> int:
        """Delete ``messages``, ten per call, ``parallel`` calls at once; returns how many
        SQS did not delete (they come back after the visibility timeout, and are then
        skipped as unchanged)."""
        chunks = iter(range(0, len(messages), MAX_BATCH))
        failed = 0

        async def worker() -> None:
            nonlocal failed
            for start in chunks:  # shared iterator: each chunk taken once
                failed += await self._delete(messages[start : start + MAX_BATCH])

        async with anyio.create_task_group() as tg:
            for _ in range(parallel):
                tg.start_soon(worker)
        return failed

    async def _delete(self, chunk: Sequence[Received]) -> int:
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)]
        try:
            resp = await self.client.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=entries,  # type: ignore[arg-type]
            )
        except AWS_ERRORS:
            return len(chunk)
        return len(resp.get("Failed", ()))
