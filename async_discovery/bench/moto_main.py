"""``python -m async_discovery.bench.moto_main -H 127.0.0.1 -p PORT``: the bench's moto,
also ``async-discovery moto-server`` (the Quick start's and the tests' server).

Stock moto 5.2 recomputes a queue's three ``ApproximateNumberOfMessages*`` counters on
every ``SendMessage``/``SendMessageBatch`` entry (``Queue.attributes`` is built to read
``ContentBasedDeduplication``): three list comprehensions with two clock reads per stored
message, so each send costs O(messages already in the queue) and a cold run into an
undrained queue slows down quadratically whatever the client does (measured: ~0.6 s per
10-entry batch at a depth of ~3,000, ~20 ms at ~100). ``ReceiveMessage`` does the same
for every message it returns (it reads ``MessageRetentionPeriod`` through
``get_queue_attributes``, which builds every attribute three times), so draining a
queue of n messages costs O(n²).

This module applies the counters patch in the moto server process, then runs moto's own
``main``: while a send or a receive is being handled, the three counters read as 0
instead of being computed (nothing on those paths uses them). ``GetQueueAttributes``
and every other call still compute them exactly. The same server serves the scanner and
both references, so the ratios stay honest. Nothing here is imported by the scanner.

``--bench`` (the bench's own server only, never the tests' nor ``moto-server``) adds the
S3 listing index, the ``<Contents>`` writer and the seeding route of :mod:`.moto_s3`;
with ``--stock`` too (the bench's ``--stock-moto``), only the seeding route (setup,
never measured).

The event bench (``--events``) drains a backlog of 20,000 notifications, which stock
moto makes quadratic twice over, whatever the client does: each message of a
``DeleteMessageBatch`` is deleted with two passes over every message of the queue, and
every ``ReceiveMessage`` lists the queue's visible messages with two clock reads per
stored message (~200 ms of server CPU per receive at a depth of 20,000: minutes for the
backlog). Two more patches: a batch's messages are deleted in one pass under the
queue's lock (stock moto's delete is not safe against a concurrent one), with the same
answers (``Successful``, ``Failed`` with ``ReceiptHandleIsInvalid``), and the visible
messages are listed with one clock read per listing (same predicate: visible and not
delayed).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

_LOCAL = threading.local()  # werkzeug serves each request in its own thread
_COUNTERS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)


def _lazy(original: Callable[[Any], int]) -> property:
    def counter(self: Any) -> int:
        return 0 if getattr(_LOCAL, "lazy", False) else original(self)

    return property(counter)


def _without_counters(original: Callable[..., Any]) -> Callable[..., Any]:
    def handle(self: Any, *args: Any, **kwargs: Any) -> Any:
        _LOCAL.lazy = True
        try:
            return original(self, *args, **kwargs)
        finally:
            _LOCAL.lazy = False

    return handle


def apply_patch() -> None:
    """Make moto's queue counters free on the send and receive paths (see the module
    docstring)."""
    from moto.sqs import models

    for name in _COUNTERS:
        setattr(models.Queue, name, _lazy(getattr(models.Queue, name).fget))
    for name in ("send_message", "receive_message"):
        setattr(models.SQSBackend, name, _without_counters(getattr(models.SQSBackend, name)))


def apply_receive_patch() -> None:
    """``Queue.messages`` with one clock read per call (see the module docstring)."""
    from moto.core.utils import unix_time_millis
    from moto.sqs import models

    def messages(self: Any) -> list[Any]:
        now = unix_time_millis()
        # Message.visible is ``now > visible_at``; Message.delayed is ``now < delayed_until``.
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    models.Queue.messages = property(messages)  # type: ignore[method-assign,assignment]


def apply_delete_patch() -> None:
    """``DeleteMessageBatch`` in one pass over the queue (see the module docstring)."""
    from moto.sqs import models

    def delete_message_batch(
        self: Any, queue_name: str, receipts: list[dict[str, Any]]
    ) -> tuple[list[str], list[dict[str, Any]]]:
        queue = self.get_queue(queue_name)
        wanted = {r["ReceiptHandle"]: r["Id"] for r in receipts}
        found: set[str] = set()
        # Under the queue's lock: stock moto rebuilds the message list without one, so
        # two deletes at once (werkzeug serves each request in a thread) can undo each
        # other's work and leave deleted messages in flight.
        with queue._messages_lock:
            kept = []
            for message in queue._messages:
                old = message._old_receipt_handles
                if message.receipt_handle not in wanted and not (
                    old and any(h in wanted for h in old)
                ):
                    kept.append(message)
                    continue
                handles = [message.receipt_handle, *old]
                found.update(h for h in handles if h in wanted)
                queue.pending_messages.discard(message)
                queue.deleted_messages.update(h for h in handles if h)
            queue._messages = kept
        success = [i for h, i in wanted.items() if h in found or h in queue.deleted_messages]
        errors = [
            {
                "Id": i,
                "SenderFault": True,
                "Code": "ReceiptHandleIsInvalid",
                "Message": f'The input receipt handle "{h}" is not a valid receipt handle.',
            }
            for h, i in wanted.items()
            if not (h in found or h in queue.deleted_messages)
        ]
        return success, errors

    models.SQSBackend.delete_message_batch = delete_message_batch  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    """Patch, then run ``moto.server.main`` with the same arguments."""
    import logging

    from moto.server import main as moto_main

    from .moto_s3 import apply_fast_listing_body, apply_listing_index, apply_seed_route

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    args = list(sys.argv[1:] if argv is None else argv)
    bench = "--bench" in args
    stock = "--stock" in args  # the bench's --stock-moto: measure moto as shipped
    args = [a for a in args if a not in ("--bench", "--stock")]
    if bench:
        apply_seed_route()
    if not stock:
        apply_patch()
        apply_receive_patch()
        apply_delete_patch()
        if bench:
            apply_listing_index()
            apply_fast_listing_body()
    moto_main(args)


if __name__ == "__main__":
    main()
