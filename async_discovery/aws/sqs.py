"""SQS adapter: one ``SendMessageBatch`` call, its ``Failed`` list read entry by entry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config import is_fifo_queue
from ..errors import QueueError
from ..messages import MAX_BATCH, batch_entries
from ..models import Outgoing
from ..ports import BatchResult
from .errors import AWS_ERRORS, describe, error_code

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

# Errors that concern the queue itself: every batch would fail the same way.
_QUEUE_WIDE = {
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
    "AccessDenied",
    "AccessDeniedException",
    "KmsAccessDenied",
    "InvalidAddress",
    "InvalidSecurity",
}


class SqsSender:
    """Sends batches to one queue (standard or FIFO, from the URL)."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url
        self.fifo = is_fifo_queue(queue_url)

    async def send_batch(self, batch: Sequence[Outgoing]) -> BatchResult:
        """Send up to ten messages; sort entries into accepted, retryable and rejected.

        A whole-call failure that survived botocore's retries rejects the batch's
        entries (they stay out of state, so the next run retries them); a queue-wide
        error raises :class:`QueueError` so the run stops sending.
        """
        if not 1 <= len(batch) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} messages, not {len(batch)}")
        try:
            resp = await self.client.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=batch_entries(batch, self.fifo),  # type: ignore[arg-type]
            )
        except AWS_ERRORS as exc:
            code = error_code(exc)
            if code in _QUEUE_WIDE:
                if "NonExistent" in code or code == "QueueDoesNotExist":
                    raise QueueError(f"queue {self.queue_url} does not exist") from exc
                raise QueueError(f"queue {self.queue_url} refused: {describe(exc)}") from exc
            reason = describe(exc)
            return BatchResult(accepted=[], retryable=[], rejected=[(o, reason) for o in batch])
        by_id = {str(i): out for i, out in enumerate(batch)}
        accepted = [by_id[item["Id"]] for item in resp.get("Successful", ()) if item["Id"] in by_id]
        retryable: list[tuple[Outgoing, str]] = []
        rejected: list[tuple[Outgoing, str]] = []
        for item in resp.get("Failed", ()):
            out = by_id.get(item["Id"])
            if out is None:
                continue
            reason = f"{item.get('Code', 'Failed')}: {item.get('Message', '')}".strip()
            (rejected if item.get("SenderFault") else retryable).append((out, reason))
        # An entry in neither list was not confirmed: treat it as failed, never as sent.
        answered = {id(o) for o in accepted} | {id(o) for o, _ in retryable + rejected}
        retryable.extend((o, "no result for this entry") for o in batch if id(o) not in answered)
        return BatchResult(accepted=accepted, retryable=retryable, rejected=rejected)
