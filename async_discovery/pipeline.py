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
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .config import Config
from .deadline import Deadline
from .discovery import Verdict, classify
from .errors import DiscoveryError, ListingError, StateError
from .models import Page
from .ports import Lister, Sender, StateObjects, StateStore
from .stages.batching import Batch, Decider
from .stages.commit import next_cursor, open_unit, run_changes, write_state
from .stages.context import RunContext
from .stages.decide import Explain, Tally
from .stages.listing import Listers
from .stages.plan import FirstRun, Plan, make_plan
from .stages.send import run_sender
from .stages.shards import Shards
from .summary import RunStats

__all__ = ["Explain", "Scanner", "check_ports", "start_deciding"]

log = logging.getLogger("async_discovery")


class Scanner:
    """One run of the scanner over ``config.prefix``.

    Construct with the ports, call :meth:`run` once, read :attr:`stats` (live while
    running, for progress displays) and the returned error (None on success). ``store``
    is the single state object; ``objects`` the state prefix (``STATE_LAYOUT=folders``).
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

    async def run(self) -> str | None:
        """Run the scan; returns None on success or the error that makes it a 500."""
        if self.shards is not None and self.ctx.config.state_layout == "folders":
            error = await self._run_folders(self.shards)
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

    async def _run_folders(self, shards: Shards) -> DiscoveryError | None:
        """The folders layout: a shard per folder, opened as its listing starts and
        written once the folder is settled; the cursor in its own object."""
        ctx = self.ctx
        try:
            cursor, cursor_etag = await shards.load_cursor()
            first = await shards.first_run(self._started)
            ctx.tally.policy = str(first.policy) if first is not None else ""
            if ctx.config.folders is not None:
                cursor = None  # fan-out children share the prefix: no cursor of their own
            self._log_start(resumed=cursor is not None, entries=0)
            plan = await make_plan(ctx, self.lister, cursor)
        except DiscoveryError as exc:
            log.error("state or listing unusable", extra={"event": "state_error"})
            return exc
        await self._stream(plan, shards)
        await shards.commit_rest()
        try:
            if _complete(ctx):
                await shards.prune_vanished(plan)
            await shards.save_cursor(next_cursor(ctx, plan, cursor, first), cursor_etag)
        except DiscoveryError as exc:
            log.error("state objects not updated", extra={"event": "state_write_error"})
            return ctx.fatal or StateError(f"state write failed: {exc}")
        return ctx.fatal

    async def _stream(self, plan: Plan, shards: Shards | None = None) -> None:
        """List, decide and send, each stage its own task, joined by bounded streams.

        Buffers: ``queue_size`` classified pages between the listers and the decider,
        then the lanes of :func:`start_deciding`. With shards,
        settled folders go to ``list_concurrency`` committers; a folder that finds them
        all busy is written at the end instead.
        """
        ctx, cfg = self.ctx, self.ctx.config
        pages_in, pages_out = anyio.create_memory_object_stream[Page](cfg.queue_size)
        settled_in, settled_out = anyio.create_memory_object_stream[str](cfg.list_concurrency)
        listers = Listers(ctx, self.lister, plan)
        if shards is not None:
            listers.units, listers.settled = shards, _offer(settled_in, shards)
        async with anyio.create_task_group() as outer:
            async with settled_out:
                for _ in range(cfg.list_concurrency if shards is not None else 0):
                    outer.start_soon(_committer, shards, settled_out.clone())
            async with settled_in, anyio.create_task_group() as tg:
                tg.start_soon(listers.run, pages_in)
                start_deciding(tg, ctx, self.sender, pages_out)

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


def start_deciding(
    tg: TaskGroup, ctx: RunContext, sender: Sender | None, pages: MemoryObjectReceiveStream[Page]
) -> None:
    """Start the decide and send stages on ``tg``: one decider over ``pages`` and the
    senders of its lanes (a scan's listing pages, or the event path's one page).

    Buffers: for a standard queue one lane of ``workers`` batches (an idle sender always
    finds one ready); for FIFO one lane per sender with room for one batch, a message
    group always on the same lane (its order kept, groups in parallel).
    """
    cfg = ctx.config
    fifo = cfg.is_fifo
    lanes = [
        anyio.create_memory_object_stream[Batch](1 if fifo else cfg.workers)
        for _ in range(cfg.workers if fifo else 1)
    ]
    tg.start_soon(Decider(ctx, [s for s, _ in lanes], fifo=fifo).run, pages)
    for _, batches in lanes:
        with batches:
            if sender is None:
                continue  # dry run: nothing is ever batched
            for _ in range(cfg.workers // len(lanes)):
                tg.start_soon(run_sender, ctx, sender, batches.clone())


def _complete(ctx: RunContext) -> bool:
    stats = ctx.stats
    return not stats.truncated and ctx.fatal is None and stats.folder_errors == 0


def _offer(stream: MemoryObjectSendStream[str], shards: Shards) -> Callable[[str], None]:
    """A settled folder for the committers; with none free it is written at the end
    (still as a complete folder: its vanished files are pruned)."""

    def offer(folder: str) -> None:
        try:
            stream.send_nowait(folder)
        except anyio.WouldBlock:
            shards.settled_late.add(folder)

    return offer


async def _committer(shards: Shards | None, folders: MemoryObjectReceiveStream[str]) -> None:
    assert shards is not None
    async with folders:
        async for folder in folders:
            await shards.commit(folder, complete=True)
