"""Pipeline mechanics against in-memory ports: fast, deterministic, no server.

Send concurrency per batch, FIFO order per message group, backpressure, a queue-wide
error that cancels nothing, the resume cursor under per-batch sends, the deadline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import anyio

from async_discovery.config import Config, parse_initial_scan
from async_discovery.deadline import Deadline
from async_discovery.errors import QueueError
from async_discovery.models import Outgoing
from async_discovery.pipeline import Scanner
from async_discovery.summary import RunStats

from .memory_ports import MemoryLister, MemorySender, MemoryStore

QUEUE = "http://127.0.0.1:1/123456789012/q"


def config(**kw: Any) -> Config:
    values: dict[str, Any] = {
        "source_bucket": "bkt",
        "state_bucket": "bkt",
        "prefix": "in/",
        "queue_url": QUEUE,
    }
    values.update(kw)
    return Config(**values)


async def run(
    cfg: Config,
    lister: MemoryLister,
    store: MemoryStore,
    sender: MemorySender,
    *,
    deadline: Deadline | None = None,
    stats: RunStats | None = None,
) -> tuple[str | None, RunStats]:
    stats = stats if stats is not None else RunStats()
    scanner = Scanner(cfg, lister, store, sender, stats=stats, deadline=deadline)
    with anyio.fail_after(20):
        error = await scanner.run()
    return error, stats


def state(store: MemoryStore) -> dict[str, Any]:
    assert store.body is not None
    doc: dict[str, Any] = json.loads(store.body)
    return doc


async def test_one_folder_is_sent_with_every_sender_busy() -> None:
    """Send concurrency follows batches, not pages: one page of 200 files keeps all
    senders busy, and messages from different pages share batches."""
    keys = [f"in/a/{i:03d}.csv" for i in range(200)]
    sender = MemorySender(delay=0.01)
    error, stats = await run(config(workers=8), MemoryLister(keys), MemoryStore(), sender)
    assert error is None and stats.queued == 200
    assert sender.peak_in_flight == 8
    assert sorted(sender.sent) == keys and len(sender.batches) == 20

    # Pages of 7 files: every batch but the last is full anyway.
    sender = MemorySender()
    lister = MemoryLister(keys, page_size=7)
    await run(config(workers=4), lister, MemoryStore(), sender)
    assert [len(b) for b in sender.batches].count(10) == 20


async def test_fifo_keeps_listing_order_per_group_and_sends_groups_in_parallel() -> None:
    keys = [f"in/{f}/{i:03d}.csv" for f in ("a", "b", "c", "d") for i in range(60)]
    sender = MemorySender(delay=0.005)
    cfg = config(queue_url=QUEUE + ".fifo", workers=8)
    error, stats = await run(cfg, MemoryLister(keys, page_size=25), MemoryStore(), sender)
    assert error is None and stats.queued == len(keys)
    for folder in "abcd":
        in_group = [k for k in sender.sent if k.startswith(f"in/{folder}/")]
        assert in_group == sorted(in_group) and len(in_group) == 60
    assert all(len({k.split("/")[1] for k in b}) == 1 for b in sender.batches)
    assert sender.peak_in_flight_per_group == 1  # a group's batches never overlap
    assert sender.peak_in_flight >= 2  # groups do


async def test_fifo_never_waits_on_one_group() -> None:
    """Twelve folders of three pages, five batches a page: at least eight message groups
    are in flight at once (the decider hands a group's batches over without waiting
    for its sends), a group never has two batches in flight, and each group's keys go
    out in listing order across its pages."""
    keys = [f"in/{f:02d}/{i:03d}.csv" for f in range(12) for i in range(150)]
    sender = MemorySender(delay=0.01)
    cfg = config(queue_url=QUEUE + ".fifo", workers=16, list_concurrency=8)
    error, stats = await run(cfg, MemoryLister(keys, page_size=50), MemoryStore(), sender)
    assert error is None and stats.queued == len(keys)
    assert sender.peak_groups_in_flight >= 8
    assert sender.peak_in_flight_per_group == 1
    for f in range(12):
        in_group = [k for k in sender.sent if k.startswith(f"in/{f:02d}/")]
        assert in_group == [k for k in keys if k.startswith(f"in/{f:02d}/")]


async def test_fifo_listing_waits_for_slow_senders() -> None:
    """Backpressure on a FIFO queue: with SQS stalled, the listing stops after a bounded
    number of pages (the page stream, QUEUE_SIZE pages' worth of batches waiting by
    group, the batches in flight), not the bucket; then every group in order."""
    keys = [f"in/{f:02d}/{i:03d}.csv" for f in range(10) for i in range(100)]
    lister = MemoryLister(keys, page_size=10)  # a page is one batch
    release = anyio.Event()
    sender = MemorySender()

    async def stalled(batch: Sequence[Outgoing]) -> None:
        await release.wait()

    sender.hook = stalled
    cfg = config(
        queue_url=QUEUE + ".fifo", workers=2, queue_size=3, list_concurrency=2, list_page_size=10
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, cfg, lister, MemoryStore(), sender)
        await anyio.sleep(0.2)
        held = lister.pages_yielded
        release.set()
    # In flight (workers), waiting by group (queue_size x 1 batch a page), one being
    # put by the decider, queue_size in the page stream, and per lister one being sent
    # and one in its listing: 15, of 100.
    assert held <= cfg.workers + 2 * cfg.queue_size + 1 + 2 * cfg.list_concurrency
    assert len(sender.sent) == 1000
    for f in range(10):
        in_group = [k for k in sender.sent if k.startswith(f"in/{f:02d}/")]
        assert in_group == [k for k in keys if k.startswith(f"in/{f:02d}/")]


async def test_listing_waits_for_slow_senders() -> None:
    """Backpressure: with SQS stalled, the listing stops after a bounded number of pages
    (the page stream, the lane's buffer and the batches in flight), not the bucket."""
    keys = [f"in/a/{i:04d}.csv" for i in range(1000)]
    lister = MemoryLister(keys, page_size=10)  # one page, one batch
    release = anyio.Event()
    sender = MemorySender()

    async def stalled(batch: Sequence[Outgoing]) -> None:
        await release.wait()

    sender.hook = stalled
    cfg = config(workers=2, queue_size=3, list_concurrency=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, cfg, lister, MemoryStore(), sender)
        await anyio.sleep(0.2)
        held = lister.pages_yielded
        release.set()
    # Pages held: the batches in flight and in the lane (2 x workers), one being
    # emitted by the decider, queue_size in the page stream, one being sent by the
    # lister and one in its listing: 10, of 100.
    assert held <= 2 * cfg.workers + cfg.queue_size + 3
    assert len(sender.sent) == 1000


async def test_a_queue_error_cancels_no_send_and_the_cursor_stays_before_unsent_pages() -> None:
    """Page 0's batch fails queue-wide while page 1's is in flight: page 1's acceptances
    are recorded, and a first pass saves a cursor that resumes before page 0."""
    keys = [f"in/a/{i:02d}.csv" for i in range(20)]
    failed = anyio.Event()
    sender = MemorySender()

    async def hook(batch: Sequence[Outgoing]) -> None:
        if batch[0].obj.key == keys[0]:
            await anyio.sleep(0.05)  # page 1's batch is in flight by now
            failed.set()
            raise QueueError("queue gone (injected)")
        await failed.wait()

    sender.hook = hook
    store = MemoryStore()
    cfg = config(workers=2, initial_scan=parse_initial_scan("since:2000-01-01T00:00:00Z", []))
    error, stats = await run(cfg, MemoryLister(keys, page_size=10), store, sender)
    assert error is not None and "injected" in error
    assert stats.queued == 10 and stats.errors == 10
    doc = state(store)
    assert sorted(doc["files"]) == keys[10:]
    cursor = doc["cursors"]["in/"]
    assert cursor["pending"] == {"a": None}  # from the start: page 0 was never handled


def candidate_budget(stats: RunStats, candidates: int) -> Deadline:
    """A deadline that expires once the run has decided ``candidates`` candidates."""
    return Deadline(lambda: 0.0 if stats.candidates >= candidates else 60.0, margin=1.0)


async def test_deadline_runs_resume_until_every_file_is_sent_once() -> None:
    keys = [f"in/{f}/{i:02d}.csv" for f in ("a", "b", "c") for i in range(40)]
    store, sender = MemoryStore(), MemorySender()
    runs = 0
    while True:
        runs += 1
        stats = RunStats()
        deadline = candidate_budget(stats, 25)
        cfg = config(workers=2, list_concurrency=1)
        error, _ = await run(
            cfg, MemoryLister(keys, page_size=10), store, sender, deadline=deadline, stats=stats
        )
        assert error is None
        if not stats.truncated:
            break
        assert runs < 20
    assert runs >= 4
    assert sorted(sender.sent) == keys  # every file once, none skipped
    assert sorted(state(store)["files"]) == keys
    assert "in/" not in state(store).get("cursors", {})
