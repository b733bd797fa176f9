"""Between the decider and the senders: one queue of batches per message group.

The decider puts each full batch in its group's queue and goes on at once: it never
waits for one group's sends, so a message group with many batches cannot hold back the
others (no head-of-line blocking). A sender takes the next batch of any group that is
*ready*. On a FIFO queue a group is ready while it has a batch waiting and none in
flight, so each group goes out one batch at a time in the order the decider put them
(listing order, across pages too) while different groups go out in parallel, up to one
per sender. On a standard queue every batch is in one group that any number of senders
may take from at once.

The bound: at most ``limit`` batches wait here; past it the decider waits for a sender
to take one, so the page stream fills and the listers stop (backpressure for the whole
run). The pipeline sets ``limit`` to ``WORKERS`` for a standard queue (an idle sender
always finds a batch) and for FIFO to ``QUEUE_SIZE`` pages' worth of messages
(``QUEUE_SIZE x ceil(LIST_PAGE_SIZE / 10)`` batches), room for a whole page stream of
other groups' work behind one group's backlog. So the messages held between listing and
SQS are at most ``QUEUE_SIZE`` pages in the stream, the same again waiting here, one
partial batch per group, and one batch per sender in flight, whatever the bucket size.
Only a single group whose backlog fills the whole bound slows the others: they then go
as fast as that group's batches leave.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

T = TypeVar("T")


class Dispatcher(Generic[T]):
    """Per-group queues of batches; ``put`` by the decider, ``take``/``done`` by senders.

    Each takeable batch is announced by one token (its group) on a stream the senders
    read (:meth:`receiver`), so a batch wakes exactly one idle sender. ``ordered``
    (FIFO) announces a group's next batch only once its previous one is ``done``. Use
    as a context manager around the stages that use it (it closes its streams).
    """

    def __init__(self, limit: int, *, ordered: bool) -> None:
        self.limit = max(1, limit)
        self.ordered = ordered
        self._waiting: dict[str, deque[T]] = {}
        self._busy: set[str] = set()  # ordered: groups with a batch in flight
        self._queued = 0
        self._closing = False
        self._room: anyio.Event | None = None  # set when the waiting decider may go on
        # At most one token per waiting batch, and at most ``limit`` batches wait, so
        # the token stream needs no bound of its own.
        self._tokens, self._ready = anyio.create_memory_object_stream[str](math.inf)

    async def put(self, group: str, batch: T) -> None:
        """Queue ``batch`` behind its group's; waits only while ``limit`` batches wait."""
        while self._queued >= self.limit:
            self._room = anyio.Event()
            await self._room.wait()
        queue = self._waiting.setdefault(group, deque())
        queue.append(batch)
        self._queued += 1
        if not self.ordered or (len(queue) == 1 and group not in self._busy):
            self._tokens.send_nowait(group)

    def take(self, group: str) -> T:
        """The next batch of ``group`` (announced by a token); ordered: in flight now."""
        queue = self._waiting[group]
        batch = queue.popleft()
        if not queue:
            del self._waiting[group]
        self._queued -= 1
        if self.ordered:
            self._busy.add(group)
        if self._room is not None:
            self._room.set()
            self._room = None
        self._end_if_drained()
        return batch

    def done(self, group: str) -> None:
        """A sender finished its batch of ``group``: its next batch is ready (ordered)."""
        if self.ordered:
            self._busy.discard(group)
            if group in self._waiting:
                self._tokens.send_nowait(group)

    def close(self) -> None:
        """No more batches will be put: senders end once every waiting batch is taken."""
        self._closing = True
        self._end_if_drained()

    def _end_if_drained(self) -> None:
        if self._closing and self._queued == 0:
            self._tokens.close()

    def receiver(self) -> MemoryObjectReceiveStream[str]:
        """A sender's stream of tokens (each sender closes its own)."""
        return self._ready.clone()

    def __enter__(self) -> Dispatcher[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._tokens.close()
        self._ready.close()
