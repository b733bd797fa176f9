"""The decide stage's loop: pages in, decisions counted, full batches out.

One decider takes the classified pages, decides each candidate (:func:`.decide.decide`),
records marks, and packs the messages to send into batches of ten across pages and
folders, so send concurrency follows batches, not pages. For a FIFO queue a batch holds
one message group; every full batch goes to the :class:`~.dispatch.Dispatcher`, which
keeps each group's batches in order and never makes the decider wait on one group.

A page counts as handled (the resume cursor may move past it) only once every
message of it is settled: accepted, or finally failed.
"""

from __future__ import annotations

import dataclasses

from anyio.streams.memory import MemoryObjectReceiveStream

from ..messages import MAX_BATCH, build_outgoing, fifo_group_id, iso_utc
from ..models import ListedObject, Outgoing
from ..resume import ListingProgress
from ..state import FileEntry
from .classify import account
from .context import RunContext
from .decide import HELD, UNCHANGED, Action, decide
from .dispatch import Dispatcher
from .units import Page, Unit


@dataclasses.dataclass(slots=True)
class Ticket:
    """One page's messages still in flight, and the unit they are recorded in."""

    progress: ListingProgress
    seq: int
    unit: Unit
    outstanding: int = 0
    decided: bool = False

    def settle(self) -> None:
        """One of the page's messages was accepted or finally failed."""
        self.outstanding -= 1
        self._check()

    def all_decided(self) -> None:
        """Every candidate of the page was decided."""
        self.decided = True
        self._check()

    def _check(self) -> None:
        if self.decided and self.outstanding == 0:
            self.progress.handled(self.seq)


@dataclasses.dataclass(slots=True)
class Batch:
    """At most ten messages, each with the ticket of the page it came from."""

    items: list[tuple[Outgoing, Ticket]]

    @property
    def messages(self) -> list[Outgoing]:
        """The batch's messages, in order."""
        return [out for out, _ in self.items]


class Decider:
    """Decides every candidate of the pages it receives; puts full batches in
    ``batches`` (by message group for FIFO) and closes it at the end."""

    def __init__(self, ctx: RunContext, batches: Dispatcher[Batch], *, fifo: bool) -> None:
        self.ctx = ctx
        self.batches = batches
        self.fifo = fifo
        self._open: dict[str, list[tuple[Outgoing, Ticket]]] = {}  # partial batch per group

    async def run(self, pages: MemoryObjectReceiveStream[Page]) -> None:
        """Decide every page until the page stream closes; then flush and close."""
        try:
            async with pages:
                async for page in pages:
                    if self.ctx.stopping():
                        continue  # not handled: the cursor stays before this page
                    await self._page(page)
            # Partial batches go out even past the deadline: their pages were taken
            # before it. Not after a fatal error: the queue is unusable.
            for key, items in list(self._open.items()):
                if self.ctx.fatal is None:
                    await self.batches.put(key, Batch(items))
            self._open.clear()
        finally:
            self.batches.close()

    async def _page(self, page: Page) -> None:
        ctx = self.ctx
        account(ctx, page)
        listing = page.listing
        assert listing is not None and listing.unit is not None
        ticket = Ticket(listing.progress, page.seq, listing.unit)
        if self._verified(listing.unit):  # all unchanged: counted, not decided one by one
            ctx.tally.unchanged(len(page.candidates))
            ticket.all_decided()
            return
        for folder, obj in page.candidates:
            if ctx.fatal is not None:
                return  # the queue is unusable: no new work, the page stays unhandled
            out = self._decide(listing.unit, folder, obj)
            if out is not None:
                await self._add(out, ticket)
        ticket.all_decided()

    def _verified(self, unit: Unit) -> bool:
        """True for a unit the fingerprint verified, when no explain lines are wanted
        and no fatal error stops the run: every candidate of its pages is unchanged."""
        ctx = self.ctx
        return unit.verified and ctx.fatal is None and not ctx.tally.explaining

    def _decide(self, unit: Unit, folder: str, obj: ListedObject) -> Outgoing | None:
        """Decide one candidate; record a mark; return the message to send, if any."""
        ctx, cfg = self.ctx, self.ctx.config
        if unit.verified:  # the listing matched the shard's fingerprint
            ctx.tally.decided(obj, UNCHANGED)
            return None
        if unit.unseen is not None:
            unit.unseen.discard(obj.key)
        entry = unit.state.files.get(obj.key)
        decision = decide(
            obj,
            entry,
            now=ctx.clock(),
            min_age_seconds=cfg.min_object_age_seconds,
            mark_before=unit.mark_before,
        )
        recorded = decision.action in (Action.SEND, Action.MARK)
        if recorded and not unit.budget.take(obj, folder, entry):
            decision = HELD
        ctx.tally.decided(obj, decision)
        if cfg.dry_run:
            return None
        if decision.action is Action.MARK:
            at = iso_utc(ctx.clock())
            unit.upserts[obj.key] = FileEntry(obj.etag, obj.size, folder, at, "marked")
        elif decision.action is Action.SEND:
            return build_outgoing(
                cfg.source_bucket, obj, folder, decision.reason, decision.previous_etag
            )
        return None

    async def _add(self, out: Outgoing, ticket: Ticket) -> None:
        ticket.outstanding += 1
        key = fifo_group_id(out.folder) if self.fifo else ""
        items = self._open.setdefault(key, [])
        items.append((out, ticket))
        if len(items) >= MAX_BATCH:
            del self._open[key]
            await self.batches.put(key, Batch(items))
