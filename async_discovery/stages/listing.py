"""The list stage: page through each job's listing, classify keys, stream the pages.

``list_concurrency`` listers take jobs from one :class:`JobQueue`; each streams its
pages, classified with the discovery rule, into the bounded page stream. Under
``STATE_LAYOUT=folders`` a job starts by finding its unit (:meth:`.shards.Shards.cut`):
a split folder's job is cut at its range bounds, the lister keeps the first range and
the others go to the queue, where idle listers take them, from the folder with the
most ranges waiting first; so the ranges of every folder share the listers. A range is
listed with ``StartAfter`` at its lower bound and stops at the first key past its upper
bound: at most one request more than the folder's sequential listing per range.

A lister stops between pages once the run is stopping (deadline or fatal error); a
listing that fails counts as a failed folder (the flat listing's failure is fatal: the
prefix could not be listed).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import aclosing

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ..discovery import folder_prefix
from ..errors import ListingError, StateError, StateMoved, StorageError
from ..ports import Lister, RawPage
from ..ranges import WHOLE
from ..resume import ListingProgress
from .classify import classify_page
from .context import RunContext
from .gate import Gate
from .plan import Job, Plan
from .shards import Shards
from .units import Listing, Page, Unit

log = logging.getLogger("async_discovery")

Settled = Callable[[Unit], None]
_MOVES = 3  # a range split by another run while this run opens it: read the index again


class JobQueue:
    """The listing jobs of a run: the plan's, in order, and the ranges jobs are cut
    into as they start. An idle lister takes a waiting range of the folder with the most
    ranges waiting, else the plan's next job; ``get`` returns None once nothing is left
    and no lister can add more, or once the run is stopping."""

    def __init__(self, ctx: RunContext, plan: Plan) -> None:
        self._ctx = ctx
        self._plan = plan
        self._next: deque[Job] = deque(plan.jobs)
        self._cut: dict[str | None, deque[Job]] = {}
        self._busy = 0
        self._changed = anyio.Condition()

    async def get(self) -> Job | None:
        """The next job to list (None: none left)."""
        async with self._changed:
            while True:
                if self._ctx.stopping():
                    return None
                job = self._take()
                if job is not None:
                    self._busy += 1
                    self._plan.taken(job)
                    return job
                if self._busy == 0:
                    self._changed.notify_all()
                    return None
                await self._changed.wait()

    def _take(self) -> Job | None:
        if self._cut:
            folder = max(self._cut, key=lambda name: len(self._cut[name]))
            waiting = self._cut[folder]
            job = waiting.popleft()
            if not waiting:
                del self._cut[folder]
            return job
        return self._next.popleft() if self._next else None

    async def add(self, jobs: Sequence[Job]) -> None:
        """Ranges of a job cut as it started: listed next, by any idle lister."""
        if not jobs:
            return
        async with self._changed:
            for job in jobs:
                self._cut.setdefault(job.folder, deque()).append(job)
                self._plan.untaken[job] = None
            self._changed.notify_all()

    async def done(self) -> None:
        """A lister finished its job."""
        async with self._changed:
            self._busy -= 1
            self._changed.notify_all()


@dataclasses.dataclass(slots=True)
class Listers:
    """The list stage of one run: hands the plan's jobs to the listers.

    With ``shards`` (the folders layout) each job's unit is opened while its first page
    is listed, its pages passing a :class:`~.gate.Gate`, and ``settled(unit)`` is
    called once every listing of the unit is listed and handled (it can be written).
    """

    ctx: RunContext
    lister: Lister
    plan: Plan
    shards: Shards | None = None
    settled: Settled | None = None
    queue: JobQueue = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.queue = JobQueue(self.ctx, self.plan)

    async def run(self, pages: MemoryObjectSendStream[Page]) -> None:
        """List every job (until stopping); closes ``pages`` when done."""
        async with pages, anyio.create_task_group() as tg:
            for _ in range(self.ctx.config.list_concurrency):
                tg.start_soon(self._lister, pages.clone())

    async def _lister(self, pages: MemoryObjectSendStream[Page]) -> None:
        async with pages:
            while (job := await self.queue.get()) is not None:
                try:
                    await self._list(job, pages)
                finally:
                    await self.queue.done()

    async def _open(self, listing: Listing) -> Unit:
        """The unit a listing decides against; under the folders layout its job is cut
        at the folder's range bounds first, the other ranges queued."""
        if self.shards is None:
            assert self.ctx.single is not None
            return self.ctx.single
        job, name = listing.job, listing.job.folder
        assert name is not None
        for attempt in range(1, _MOVES + 1):
            folder = await self.shards.folders.folder(name)
            parts = self.shards.cut(job, folder)
            first, position = parts[0]
            await self.queue.add([part for part, _ in parts[1:]])
            listing.job = job = first
            try:
                return await self.shards.open(first, position)
            except StateMoved:
                if attempt == _MOVES:
                    raise
                await self.shards.repair(name)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _list(self, job: Job, pages: MemoryObjectSendStream[Page]) -> None:
        ctx = self.ctx
        listing = Listing(job, ListingProgress(start_after=job.start_after))
        ctx.listings.append(listing)
        if ctx.stopping():
            return  # taken just as the run stopped: stays pending from start_after
        failure: ListingError | StateError | StorageError | None = None
        async with anyio.create_task_group() as tg:
            gate = Gate(self.shards, listing, self._open, tg)
            try:
                finished = await self._pages(listing, gate, pages)
            except (ListingError, StateError, StorageError) as exc:
                failure = exc  # caught here: a task group would wrap it in a group
        if failure is not None:
            self._failed(listing, failure)
            return
        if not finished:
            listing.held = gate.holding
            return  # stopped between pages: the cursor keeps the rest pending
        unit, settled = listing.unit, self.settled
        if settled is not None and unit is not None and self.shards is not None:
            shards = self.shards

            def on_complete() -> None:
                if shards.release(unit, complete=True):
                    settled(unit)

            listing.progress.on_complete = on_complete
        listing.progress.finish()

    def _failed(self, listing: Listing, failure: Exception) -> None:
        ctx, folder = self.ctx, listing.job.folder
        listing.progress.failed = True
        if folder is None:
            ctx.fail(ListingError(f"the prefix could not be listed: {failure}"))
        else:
            ctx.stats.folder_errors += 1
            if not isinstance(failure, ListingError):
                where = f"folder {folder!r}"
                if listing.job.span != WHOLE:
                    where += f" (keys after {listing.job.start_after!r})"
                ctx.stats.warnings.append(f"{where} not scanned: {failure}")
        log.error(
            "folder failed",
            extra={"event": "listing_error", "folder": folder, "error": str(failure)},
        )

    async def _pages(
        self, listing: Listing, gate: Gate, pages: MemoryObjectSendStream[Page]
    ) -> bool:
        """Stream the listing's pages through ``gate``; True when it was read to its end
        (its range's upper bound), False when the run stopped first (held pages are then
        dropped: the cursor keeps the rest pending)."""
        ctx = self.ctx
        job = listing.job
        prefix = ctx.config.prefix
        if job.folder is not None:
            prefix = folder_prefix(prefix, job.folder)
        raws = self.lister.pages(
            prefix, delimiter=job.folder is not None, start_after=job.start_after
        )
        async with aclosing(raws) as listed:
            seq = 0
            async for raw in listed:
                await gate.ready()  # the job is now cut at its range's bounds
                raw, ended = clip(raw, listing.job.until)
                page = classify_page(ctx, raw, listing, seq)
                listing.progress.listed(seq, page.last_key)
                await gate.page(page, pages.send)
                seq += 1
                if ended:
                    break
                if ctx.stopping():
                    return False
        await gate.finish(pages.send)
        return True


def clip(raw: RawPage, until: str | None) -> tuple[RawPage, bool]:
    """The page's keys up to ``until``, and whether the range ends on this page (a key
    past it was listed, or its upper bound itself: keys are unique)."""
    last = raw.objects[-1].key if raw.objects else None
    last_prefix = raw.common_prefixes[-1] if raw.common_prefixes else None
    if until is None or (
        (last is None or last < until) and (last_prefix is None or last_prefix <= until)
    ):
        return raw, False  # all of the page is in the range, and the range goes on
    objects = [o for o in raw.objects if o.key <= until]
    prefixes = [p for p in raw.common_prefixes if p <= until]
    ended = len(objects) < len(raw.objects) or len(prefixes) < len(raw.common_prefixes)
    ended = ended or (bool(objects) and objects[-1].key == until)
    if not ended:
        return raw, False
    return RawPage(objects, prefixes), True
