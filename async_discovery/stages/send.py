"""The send stage: ``SendMessageBatch`` for each batch, ``Failed`` entries re-sent.

Each sender takes the next ready batch of any message group from the
:class:`~.dispatch.Dispatcher` (FIFO: a group's next batch only once its previous one is
done, so a group keeps listing order); entries SQS lists under ``Failed`` are re-sent
(those only, with jittered backoff) unless ``SenderFault``; what SQS accepted is recorded
for the state at once. A queue-wide error (``QueueError``) makes the run fatal: senders
then drop the batches still queued, but a send already in flight is never cancelled,
so everything SQS accepted is recorded.
"""

from __future__ import annotations

import logging

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ..errors import QueueError
from ..messages import iso_utc
from ..models import Outgoing
from ..ports import Sender
from ..state import FileEntry
from .batching import Batch, Ticket
from .context import RunContext, backoff
from .dispatch import Dispatcher

log = logging.getLogger("async_discovery")


async def run_sender(
    ctx: RunContext,
    sender: Sender,
    batches: Dispatcher[Batch],
    ready: MemoryObjectReceiveStream[str],
) -> None:
    """Send the next ready batch of any message group until ``batches`` is drained."""
    async with ready:
        async for group in ready:
            batch = batches.take(group)
            if ctx.fatal is None:
                await _send(ctx, sender, batch)
            # else: dropped unsent; its pages stay unhandled, so nothing is recorded
            batches.done(group)


async def _send(ctx: RunContext, sender: Sender, batch: Batch) -> None:
    """One batch, with re-sends of retryable failed entries; settles every message."""
    tickets: dict[str, Ticket] = {out.message_id: t for out, t in batch.items}
    to_send = batch.messages
    attempt = 0
    while to_send:
        attempt += 1
        try:
            result = await sender.send_batch(to_send)
        except QueueError as exc:
            if ctx.fatal is None:
                log.error("queue unusable", extra={"event": "queue_error", "error": str(exc)})
            ctx.fail(exc)
            ctx.stats.errors += len(to_send)
            return
        at = iso_utc(ctx.clock())
        for out in result.accepted:
            obj = out.obj
            ticket = tickets[out.message_id]
            ticket.unit.upserts[obj.key] = FileEntry(obj.etag, obj.size, out.folder, at)
            ctx.tally.accepted(out)
            ticket.settle()
        for out, reason in result.rejected:
            _failed(ctx, out, reason, attempt)
            tickets[out.message_id].settle()
        to_send = [out for out, _ in result.retryable]
        if to_send and attempt >= ctx.config.send_attempts:
            for out, reason in result.retryable:
                _failed(ctx, out, reason, attempt, after_retries=True)
                tickets[out.message_id].settle()
            return
        if to_send:
            await anyio.sleep(backoff(attempt))


def _failed(
    ctx: RunContext, out: Outgoing, reason: str, attempts: int, *, after_retries: bool = False
) -> None:
    ctx.stats.errors += 1
    message = "message failed after retries" if after_retries else "message refused"
    extra: dict[str, object] = {"event": "send_failed", "key": out.obj.key, "reason": reason}
    if after_retries:
        extra["attempts"] = attempts
    log.error(message, extra=extra)
