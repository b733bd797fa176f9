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
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio

from .config import Config
from .deadline import Deadline
from .discovery import Verdict, classify
from .errors import DiscoveryError, ListingError, StateError
from .models import Page
from .ports import Lister, Sender, StateStore
from .stages.batching import Batch, Decider
from .stages.commit import StateBudget, load_state, run_changes, write_state
from .stages.context import RunContext
from .stages.decide import Explain, Tally
from .stages.listing import Listers
from .stages.plan import FirstRun, Plan, make_plan
from .stages.send import run_sender
from .state import State, check_source
from .summary import RunStats

__all__ = ["Explain", "Scanner"]

log = logging.getLogger("async_discovery")


class Scanner:
    """One run of the scanner over ``config.prefix``.

    Construct with the three ports, call :meth:`run` once, read :attr:`stats` (live
    while running, for progress displays) and the returned error (None on success).
    """

    def __init__(
        self,
        config: Config,
        lister: Lister,
        store: StateStore,
        sender: Sender | None,
        *,
        stats: RunStats | None = None,
        deadline: Deadline | None = None,
        explain: Explain | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if sender is None and not config.dry_run:
            raise ValueError("a sender is required unless dry_run")
        self.lister, self.store, self.sender = lister, store, sender
        self.stats = stats if stats is not None else RunStats()
        tally = Tally(
            self.stats,
            explain,
            min_age_seconds=config.min_object_age_seconds,
            dry_run=config.dry_run,
        )
        self.ctx = RunContext(config, self.stats, tally, deadline or Deadline(), clock)
        self._started = clock()

    async def run(self) -> str | None:
        """Run the scan; returns None on success or the error that makes it a 500."""
        error = await self._run()
        return None if error is None else str(error)

    async def _run(self) -> DiscoveryError | None:
        ctx, cfg = self.ctx, self.ctx.config
        try:
            loaded, etag = await load_state(ctx, self.store)
            if loaded is not None:
                check_source(
                    loaded, cfg.source_bucket, name=self.store.name, force_rebind=cfg.force_rebind
                )
        except DiscoveryError as exc:
            log.error("state unusable", extra={"event": "state_error", "error": str(exc)})
            return exc
        ctx.loaded = loaded if loaded is not None else State()
        cursor = ctx.loaded.cursors.get(cfg.prefix) or None
        first = FirstRun.of(cfg, first=loaded is None, cursor=cursor, started=self._started)
        ctx.tally.policy = str(first.policy) if first is not None else ""
        self._log_start(resumed=cursor is not None)
        try:
            plan = await make_plan(ctx, self.lister, cursor)
        except ListingError as exc:
            log.error("listing failed", extra={"event": "listing_error", "error": str(exc)})
            return exc
        if cfg.prune_missing and cursor is None:
            ctx.unseen = self._prunable()
        await self._stream(plan, first)
        changes = run_changes(ctx, plan, cursor, first)
        ctx.unseen = None  # copied into changes.removed; free it before the encode
        ctx.tally.close()
        # Write even with nothing else to record when the state must say something new:
        # that a first run with a policy happened (or the next run would be a first run
        # again and mark what it should send), or which bucket it describes now.
        must_write = (loaded is None and first is not None) or (
            loaded is not None and loaded.source_bucket != cfg.source_bucket
        )
        del loaded  # ctx.loaded alone holds the state, so a reload can drop it
        error = ctx.fatal
        if not cfg.dry_run and (must_write or not changes.is_empty()):
            try:
                await write_state(ctx, self.store, changes, etag)
            except DiscoveryError as exc:
                log.error("state write failed", extra={"event": "state_write_error"})
                error = error or StateError(f"state write failed: {exc}")
        return error

    async def _stream(self, plan: Plan, first: FirstRun | None) -> None:
        """List, decide and send, each stage its own task, joined by bounded streams.

        Buffers: ``queue_size`` classified pages between the listers and the decider;
        for a standard queue one lane of ``workers`` batches (an idle sender always finds
        one ready); for FIFO one lane per sender with room for one batch, a message
        group always on the same lane (its order kept, groups in parallel).
        """
        ctx, cfg = self.ctx, self.ctx.config
        fifo = cfg.is_fifo
        lanes = [
            anyio.create_memory_object_stream[Batch](1 if fifo else cfg.workers)
            for _ in range(cfg.workers if fifo else 1)
        ]
        pages_in, pages_out = anyio.create_memory_object_stream[Page](cfg.queue_size)
        budget = StateBudget(cfg.state_max_bytes, ctx.stats.state_bytes)
        decider = Decider(
            ctx, [send for send, _ in lanes], first_run=first, budget=budget, fifo=fifo
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(Listers(ctx, self.lister, plan).run, pages_in)
            tg.start_soon(decider.run, pages_out)
            for _, batches in lanes:
                async with batches:
                    if self.sender is None:
                        continue  # dry run: nothing is ever batched
                    for _ in range(cfg.workers // len(lanes)):
                        tg.start_soon(run_sender, ctx, self.sender, batches.clone())

    def _prunable(self) -> set[str]:
        """State keys this run may prune: only keys that would be its candidates (not
        other prefixes' keys, not skipped folders, which are never listed, and not
        deeper keys, which belong to a scan of a longer prefix sharing the state)."""
        cfg = self.ctx.config
        return {
            key
            for key in self.ctx.loaded.files
            if classify(key, cfg.prefix, cfg.skip_folders)[0] is Verdict.CANDIDATE
        }

    def _log_start(self, *, resumed: bool) -> None:
        cfg = self.ctx.config
        extra: dict[str, Any] = {
            "event": "scan_start",
            "bucket": cfg.source_bucket,
            "prefix": cfg.prefix,
            "state_entries": len(self.ctx.loaded.files),
            "resumed": resumed,
            "dry_run": cfg.dry_run,
        }
        log.info("scan start", extra=extra)
