"""``async-discovery listen``: the event path as a long-running process.

For local runs and containers, where no event source mapping polls for us: it
long-polls the events queue, gathers a batch as the mapping would (``--batch-size``
records, waiting up to ``--batch-window`` seconds for more), handles it exactly as the
Lambda function does (:func:`async_discovery.runner.run_events`: the same log line and
EMF record per batch), and deletes the handled messages; the failed ones are left to
come back after the queue's visibility timeout, as with ``ReportBatchItemFailures``.

SIGINT or SIGTERM: the poll in flight is abandoned (its messages, if any, come back
after the visibility timeout), the batch in hand is finished and its messages deleted,
then the loop ends with exit status 0. A second signal abandons the batch too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio

from .aws import open_clients
from .aws.events_queue import Received, SqsEventsQueue
from .config import Config
from .errors import DiscoveryError
from .messages import MAX_BATCH
from .notifications import SqsRecord
from .runner import run_events
from .summary import RunStats

log = logging.getLogger("async_discovery")

EXIT_OK, EXIT_FAILED = 0, 1
# ReceiveMessage calls in flight while a batch is filled from a backlog (each takes at
# most ten messages): what an event source mapping's pollers do, within one batch.
POLLERS = 4
# The totals printed when the loop ends (one JSON line on stdout).
_TOTALS = ("queued", "skipped", "errors", "ignored", "deferred", "deleted", "superseded")


@dataclasses.dataclass(frozen=True, slots=True)
class ListenOptions:
    """How batches are gathered, as an event source mapping's ``BatchSize`` and
    ``MaximumBatchingWindowInSeconds``; ``wait_seconds``: the long poll (0-20)."""

    batch_size: int = 100
    window_seconds: float = 0.0
    wait_seconds: int = 20


@dataclasses.dataclass(slots=True)
class Listener:
    """The loop's state: totals, and how it is asked to stop (:meth:`stop`)."""

    config: Config
    options: ListenOptions
    emit_metrics: bool = True  # one EMF record per batch on stderr, as the Lambda writes
    totals: Counter[str] = dataclasses.field(default_factory=Counter)
    stopping: bool = False
    signal_name: str | None = None
    _poll: anyio.CancelScope | None = None
    _all: anyio.CancelScope | None = None

    def stop(self, name: str | None = None) -> None:
        """Finish the batch in hand, poll no more (a second call abandons the batch)."""
        if self.stopping and self._all is not None:
            self._all.cancel()
        self.stopping, self.signal_name = True, self.signal_name or name
        if self._poll is not None:
            self._poll.cancel()

    async def run(self, on_batch: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Poll, handle and delete until :meth:`stop`; raises ``QueueError`` when the
        events queue cannot be read."""
        cfg = self.config
        assert cfg.events_queue_url is not None
        calls: Counter[str] = Counter()
        with anyio.CancelScope() as self._all:
            # The deletes run in the background while the next batch is polled (a batch
            # is done with its messages once handled); the loop waits for them at the end.
            async with open_clients(cfg, calls) as clients, anyio.create_task_group() as bg:
                queue = SqsEventsQueue(clients.sqs, cfg.events_queue_url)
                while not self.stopping:
                    batch = await self._gather(queue)
                    if not batch:
                        continue
                    # The batch's calls: its polls, its work (its deletes count in the next).
                    stats = RunStats(api_calls=calls)
                    records = [SqsRecord(m.message_id, m.body) for m in batch]
                    failed, summary = await run_events(
                        cfg, records, clients=clients, stats=stats, emit_metrics=self.emit_metrics
                    )
                    calls.clear()
                    failed_ids = set(failed)
                    bg.start_soon(
                        queue.delete, [m for m in batch if m.message_id not in failed_ids]
                    )
                    self._count(summary)
                    if on_batch is not None:
                        on_batch(summary)

    async def _gather(self, queue: SqsEventsQueue) -> list[Received]:
        """One batch: a long poll for the first messages, then more until the batch is
        full, or the window has passed and the last poll came back short (the queue has
        no backlog: handling now beats waiting for files that trickle in)."""
        size, window = self.options.batch_size, self.options.window_seconds
        batch: list[Received] = []
        with anyio.CancelScope() as self._poll:
            if self.stopping:
                return batch
            more = await queue.receive(size, wait_seconds=self.options.wait_seconds)
            batch += more
            asked = min(MAX_BATCH, size)
            until = anyio.current_time() + window
            while batch and len(batch) < size and not self.stopping:
                left = until - anyio.current_time()
                if left <= 0 and len(more) < asked:
                    break
                wait = int(left) if left >= 1 else 0
                wanted = size - len(batch)
                asked = min(wanted, POLLERS * MAX_BATCH)
                more = await _receive_many(queue, asked, wait)
                batch += more
                if not more and left > 0:
                    await anyio.sleep(min(0.05, left))
        self._poll = None
        # A signal abandons the poll in flight, not the messages already in hand.
        return batch

    def _count(self, summary: dict[str, Any]) -> None:
        self.totals["batches"] += 1
        self.totals["records"] += int(summary["records"])
        self.totals["failed_records"] += int(summary["failed_records"])
        for name in _TOTALS:
            self.totals[name] += int(summary.get(name) or 0)


async def _receive_many(queue: SqsEventsQueue, count: int, wait: int) -> list[Received]:
    """Up to ``count`` messages from parallel polls of at most ten each (a backlog is
    gathered ``POLLERS`` polls at a time, not one after another)."""
    got: list[Received] = []

    async def poll(n: int) -> None:
        got.extend(await queue.receive(n, wait_seconds=wait))

    async with anyio.create_task_group() as tg:
        for start in range(0, count, MAX_BATCH):
            tg.start_soon(poll, min(MAX_BATCH, count - start))
    return got


async def _watch_signals(listener: Listener) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            log.info("signal: finishing the batch in hand", extra={"event": "listen_stop"})
            listener.stop(name)


async def _main(listener: Listener) -> int:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, listener)
        try:
            await listener.run()
        except* DiscoveryError as group:  # from the loop, or its task group
            error = "; ".join(str(exc) for exc in group.exceptions)
            log.error("events queue unusable", extra={"event": "queue_error", "error": error})
            listener.totals["error"] = 1
        tg.cancel_scope.cancel()
    return EXIT_FAILED if listener.totals.get("error") else EXIT_OK


def run_cli(config: Config, options: ListenOptions) -> int:
    """``listen``: until SIGINT/SIGTERM; prints the totals as one JSON line; exit 0 (1
    when the events queue cannot be read)."""
    if not 1 <= options.batch_size <= 10_000:
        raise ValueError("batch size must be 1 to 10,000")
    listener = Listener(config, options)
    log.info(
        "listening",
        extra={
            "event": "listen_start",
            "events_queue": config.events_queue_url,
            "batch_size": options.batch_size,
            "batch_window_seconds": options.window_seconds,
            "polls_per_batch": -(-options.batch_size // MAX_BATCH),
        },
    )
    code = anyio.run(_main, listener)
    doc = {"stopped_by": listener.signal_name, **dict(listener.totals)}
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
    return code
