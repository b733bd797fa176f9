"""One run of the scanner: the coordinator that wires the stages together.

Shape (SPEC): listers stream classified pages into a bounded page stream; one decider
compares each candidate with the loaded state and packs messages into batches of at
most ten; ``workers`` senders send them; once every stage is done, the run's changes
are written to the state object in one conditional write, reloading and merging on a
conflict. Each stage is a module of :mod:`async_discovery.stages`. Memory for listing
is bounded by ``queue_size`` pages plus the batches in flight, whatever the bucket
size; what grows with the bucket is only the state itself and this run's records.

The pipeline talks to the outside only through :mod:`async_discovery.ports`; it never
imports an AWS library.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .config import Config
from .deadline import Deadline
from .discovery import Verdict, classify
from .errors import DiscoveryError, ListingError, StateError
from .messages import MAX_BATCH
from .ports import Lister, Sender, StateObjects, StateStore
from .stages.batching import Batch, Decider
from .stages.commit import folders_cursor, open_unit, remaining, run_changes, write_state
from .stages.context import RunContext
from .stages.decide import Explain, Tally
from .stages.dispatch import Dispatcher
from .stages.listing import Listers
from .stages.plan import FirstRun, Job, Plan, make_plan
from .stages.runs import RunObjects, item_parts
from .stages.send import run_sender
from .stages.shards import Shards
from .stages.units import Page, Unit
from .summary import RunStats

__all__ = ["Explain", "Scanner", "check_ports", "decide_and_send"]

log = logging.getLogger("async_discovery")


class Scanner:
    """One run of the scanner over ``config.prefix``.

    Construct with the ports, call :meth:`run` once, read :attr:`stats` (live while
    running, for progress displays) and the returned error (None on success). ``store``
    is the single state object; ``objects`` the state prefix (``STATE_LAYOUT=folders``);
    ``items`` the fan-out items to scan exactly (folders, or ranges of a split folder;
    None: ``config.folders``, or else the whole prefix).
    """

    def __init__(
        self,
        config: Config,
        lister: Lister,
        store: StateStore,
        sender: Sender | None,
        *,
        objects: StateObjects | None = None,
        stats: RunStats | None = None,
        deadline: Deadline | None = None,
        explain: Explain | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        items: list[Job] | None = None,
    ) -> None:
        check_ports(config, sender, objects)
        self.lister, self.store, self.sender = lister, store, sender
        self.stats = stats if stats is not None else RunStats()
        self._started = clock()
        window = config.reconciliation_window_seconds
        tally = Tally(
            self.stats,
            explain,
            min_age_seconds=config.min_object_age_seconds,
            dry_run=config.dry_run,
            found_before=self._started - timedelta(seconds=window) if window > 0 else None,
        )
        self.ctx = RunContext(config, self.stats, tally, deadline or Deadline(), clock)
        self.shards = Shards(self.ctx, objects) if objects is not None else None
        self.runs = RunObjects(self.ctx, objects) if objects is not None else None
        if items is None and config.folders is not None:
            items = [Job(name) for name in sorted(config.folders)]
        self.items = items

    async def run(self) -> str | None:
        """Run the scan; returns None on success or the error that makes it a 500."""
        if self.shards is not None and self.runs is not None:
            error = await self._run_folders(self.shards, self.runs)
        else:
            error = await self._run_single()
        self.ctx.tally.close()
        return None if error is None else str(error)

    async def _run_single(self) -> DiscoveryError | None:
        """The single layout: one state object, loaded first, written once at the end."""
        ctx, cfg = self.ctx, self.ctx.config
        try:
            unit = ctx.single = await open_unit(ctx, self.store)
        except DiscoveryError as exc:
            log.error("state unusable", extra={"event": "state_error", "error": str(exc)})
            return exc
        cursor = unit.state.cursors.get(cfg.prefix) or None
        first = FirstRun.of(cfg, first=not unit.existed, cursor=cursor, started=self._started)
        unit.mark_before = first.mark_before if first is not None else None
        ctx.tally.policy = str(first.policy) if first is not None else ""
        self._log_start(resumed=cursor is not None, entries=len(unit.state.files))
        try:
            plan = await make_plan(ctx, self.lister, cursor)
        except ListingError as exc:
            log.error("listing failed", extra={"event": "listing_error", "error": str(exc)})
            return exc
        if cfg.prune_missing and cursor is None:
            unit.unseen = self._prunable(unit.state.files)
        await self._stream(plan)
        changes = run_changes(ctx, unit, plan, cursor, first)
        unit.unseen = None  # copied into changes.removed; free it before the encode
        # Write even with nothing else to record when the state must say something new:
        # that a first run with a policy happened (or the next run would be a first run
        # again and mark what it should send), or which bucket it describes now.
        must_write = (not unit.existed and first is not None) or (
            unit.existed and unit.state.source_bucket != cfg.source_bucket
        )
        error = ctx.fatal
        if not cfg.dry_run and (must_write or not changes.is_empty()):
            try:
                await write_state(ctx, unit, changes)
            except DiscoveryError as exc:
                log.error("state write failed", extra={"event": "state_write_error"})
                error = error or StateError(f"state write failed: {exc}")
        return error

    async def _run_folders(self, shards: Shards, runs: RunObjects) -> DiscoveryError | None:
        """The folders layout: a shard per folder or range, opened as its listing starts
        and written once it is settled; the pass's cursor (or, for a fan-out child, each
        item's progress) in its own object."""
        ctx, items = self.ctx, self.items
        cursor: dict[str, Any] | None = None
        cursor_etag: str | None = None
        progress: dict[Job, str | None] = {}  # a fan-out item -> its progress object's ETag
        jobs: list[Job] | None = None
        try:
            shards.first = await runs.first_run(self._started)
            ctx.tally.policy = str(shards.first.policy) if shards.first is not None else ""
            if items is None:
                cursor, cursor_etag = await runs.load_cursor()
            else:
                jobs = []
                for item, (parts, etag) in (await runs.items_progress(items)).items():
                    progress[item] = etag
                    jobs.extend(parts)
            self._log_start(resumed=cursor is not None or any(progress.values()), entries=0)
            plan = await make_plan(ctx, self.lister, cursor, jobs)
        except DiscoveryError as exc:
            log.error("state or listing unusable", extra={"event": "state_error"})
            return exc
        await self._stream(plan, shards)
        await shards.commit_rest()
        try:
            if items is None:
                if _complete(ctx):
                    await shards.prune_vanished(plan, self.lister)
                await runs.save_cursor(folders_cursor(ctx, plan, cursor), cursor_etag)
            else:
                rest = remaining(ctx, plan)
                for item, etag in progress.items():
                    await runs.save_item_progress(item, item_parts(item, rest), etag)
        except DiscoveryError as exc:
            log.error("state objects not updated", extra={"event": "state_write_error"})
            return ctx.fatal or StateError(f"state write failed: {exc}")
        return ctx.fatal

    async def _stream(self, plan: Plan, shards: Shards | None = None) -> None:
        """List, decide and send, each stage its own task, joined by bounded streams.

        Buffers: ``queue_size`` classified pages between the listers and the decider,
        then the batches of :func:`decide_and_send`. With shards, settled folders go to
        ``list_concurrency`` committers; a folder that finds them all busy is written
        at the end instead.
        """
        ctx, cfg = self.ctx, self.ctx.config
        pages_in, pages_out = anyio.create_memory_object_stream[Page](cfg.queue_size)
        settled_in, settled_out = anyio.create_memory_object_stream[Unit](cfg.list_concurrency)
        listers = Listers(ctx, self.lister, plan)
        if shards is not None:
            listers.shards, listers.settled = shards, _offer(settled_in, shards)
        async with anyio.create_task_group() as outer:
            async with settled_out:
                for _ in range(cfg.list_concurrency if shards is not None else 0):
                    outer.start_soon(_committer, shards, settled_out.clone())
            async with settled_in, anyio.create_task_group() as tg:
                tg.start_soon(listers.run, pages_in)
                tg.start_soon(decide_and_send, ctx, self.sender, pages_out)

    def _prunable(self, files: Iterable[str]) -> set[str]:
        """State keys this run may prune: only keys that would be its candidates (not
        other prefixes' keys, not skipped folders, which are never listed, and not
        deeper keys, which belong to a scan of a longer prefix sharing the state)."""
        cfg = self.ctx.config
        return {
            key
            for key in files
            if classify(key, cfg.prefix, cfg.skip_folders)[0] is Verdict.CANDIDATE
        }

    def _log_start(self, *, resumed: bool, entries: int) -> None:
        cfg = self.ctx.config
        extra: dict[str, Any] = {
            "event": "scan_start",
            "bucket": cfg.source_bucket,
            "prefix": cfg.prefix,
            "layout": cfg.state_layout,
            "state_entries": entries,
            "resumed": resumed,
            "dry_run": cfg.dry_run,
        }
        log.info("scan start", extra=extra)


def check_ports(config: Config, sender: Sender | None, objects: StateObjects | None) -> None:
    """Refuse a run that could not do its job: no sender (unless a dry run), or no state
    objects for the folders layout."""
    if sender is None and not config.dry_run:
        raise ValueError("a sender is required unless dry_run")
    if config.state_layout == "folders" and objects is None:
        raise ValueError("the folders state layout needs the state objects")


async def decide_and_send(
    ctx: RunContext, sender: Sender | None, pages: MemoryObjectReceiveStream[Page]
) -> None:
    """The decide and send stages over ``pages`` (a scan's listing pages, or an event
    batch's candidates): one decider packing batches, ``workers`` senders sending them.

    Buffers: decided batches in a :class:`~.stages.dispatch.Dispatcher`: for a standard
    queue up to ``workers`` of them (an idle sender always finds one ready), for FIFO up
    to ``queue_size`` pages' worth, queued per message group (a group's order kept,
    groups in parallel, the decider never waiting on one group; the bound is explained
    there).
    """
    cfg = ctx.config
    fifo = cfg.is_fifo
    limit = cfg.queue_size * math.ceil(cfg.list_page_size / MAX_BATCH) if fifo else cfg.workers
    with Dispatcher[Batch](limit, ordered=fifo) as batches:
        async with anyio.create_task_group() as tg:
            tg.start_soon(Decider(ctx, batches, fifo=fifo).run, pages)
            if sender is not None:  # dry run: nothing is batched
                for _ in range(cfg.workers):
                    tg.start_soon(run_sender, ctx, sender, batches, batches.receiver())


def _complete(ctx: RunContext) -> bool:
    stats = ctx.stats
    return not stats.truncated and ctx.fatal is None and stats.folder_errors == 0


def _offer(stream: MemoryObjectSendStream[Unit], shards: Shards) -> Callable[[Unit], None]:
    """A settled unit for the committers; with none free it is written at the end
    (still as a complete unit: its vanished files are pruned)."""

    def offer(unit: Unit) -> None:
        try:
            stream.send_nowait(unit)
        except anyio.WouldBlock:
            assert unit.folder is not None
            shards.settled_late.add((unit.folder, unit.span.after))

    return offer


async def _committer(shards: Shards | None, units: MemoryObjectReceiveStream[Unit]) -> None:
    assert shards is not None
    async with units:
        async for unit in units:
            await shards.commit(unit)
