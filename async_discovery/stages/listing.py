"""The list stage: page through each job's listing, classify keys, stream the pages.

``list_concurrency`` listers take jobs in S3 order; each streams its pages, classified
with the discovery rule, into the bounded page stream. A lister stops between pages
once the run is stopping (deadline or fatal error); a listing that fails counts as a
failed folder (the flat listing's failure is fatal: the prefix could not be listed).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from contextlib import aclosing

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..discovery import folder_prefix
from ..errors import ListingError, StateError, StorageError
from ..models import Page
from ..ports import Lister
from ..resume import ListingProgress
from .classify import classify_page
from .context import FLAT, RunContext
from .gate import FolderGate, Units
from .plan import Job, Plan

log = logging.getLogger("async_discovery")


Settled = Callable[[str], None]


@dataclasses.dataclass(slots=True)
class Listers:
    """The list stage of one run: hands the plan's jobs to the listers in S3 order.

    With ``units`` (the folders layout) each folder's shard is opened while its first
    page is listed, its pages passing a :class:`~.gate.FolderGate`, and
    ``settled(folder)`` is called once every page of the folder is listed and handled
    (the shard can then be written).
    """

    ctx: RunContext
    lister: Lister
    plan: Plan
    units: Units | None = None
    settled: Settled | None = None

    async def run(self, pages: MemoryObjectSendStream[Page]) -> None:
        """List every job (until stopping); closes ``pages`` when done."""
        jobs_send, jobs_recv = anyio.create_memory_object_stream[Job](0)
        concurrency = min(self.ctx.config.list_concurrency, max(len(self.plan.jobs), 1))
        async with pages, anyio.create_task_group() as tg:
            async with jobs_recv:
                for _ in range(concurrency):
                    tg.start_soon(self._lister, jobs_recv.clone(), pages.clone())
            async with jobs_send:
                for job in self.plan.jobs:
                    if self.ctx.stopping():
                        break
                    await jobs_send.send(job)
                    self.plan.taken(job)

    async def _lister(
        self, jobs: MemoryObjectReceiveStream[Job], pages: MemoryObjectSendStream[Page]
    ) -> None:
        async with jobs, pages:
            async for job in jobs:
                await self._list(job, pages)

    async def _list(self, job: Job, pages: MemoryObjectSendStream[Page]) -> None:
        ctx = self.ctx
        progress = ListingProgress(start_after=job.start_after)
        ctx.progress[FLAT if job.folder is None else job.folder] = progress
        if ctx.stopping():
            return  # taken just as the run stopped: stays pending from start_after
        failure: ListingError | StateError | StorageError | None = None
        async with anyio.create_task_group() as tg:
            gate = FolderGate(self.units, job, tg)
            try:
                finished = await self._pages(job, progress, gate, pages)
            except (ListingError, StateError, StorageError) as exc:
                failure = exc  # caught here: a task group would wrap it in a group
        if failure is not None:
            progress.failed = True
            if job.folder is None:
                ctx.fail(ListingError(f"the prefix could not be listed: {failure}"))
            else:
                ctx.stats.folder_errors += 1
                if not isinstance(failure, ListingError):
                    ctx.stats.warnings.append(f"folder {job.folder!r} not scanned: {failure}")
            log.error(
                "folder failed",
                extra={"event": "listing_error", "folder": job.folder, "error": str(failure)},
            )
            return
        if not finished:
            return  # stopped between pages: the cursor keeps the folder pending
        if self.settled is not None and job.folder is not None:
            folder, settled = job.folder, self.settled
            progress.on_complete = lambda: settled(folder)
        progress.finish()

    async def _pages(
        self,
        job: Job,
        progress: ListingProgress,
        gate: FolderGate,
        pages: MemoryObjectSendStream[Page],
    ) -> bool:
        """Stream the job's pages through ``gate``; True when the listing was read to
        its end, False when the run stopped first (held pages are then dropped: the
        cursor keeps the folder pending)."""
        ctx = self.ctx
        prefix = ctx.config.prefix
        if job.folder is not None:
            prefix = folder_prefix(prefix, job.folder)
        listing = self.lister.pages(
            prefix, delimiter=job.folder is not None, start_after=job.start_after
        )
        async with aclosing(listing) as raws:
            seq = 0
            async for raw in raws:
                page = classify_page(ctx, raw, job.folder, seq)
                progress.listed(seq, page.last_key)
                await gate.page(page, pages.send)
                seq += 1
                if ctx.stopping():
                    return False
        await gate.finish(pages.send)
        return True
