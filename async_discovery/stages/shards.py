"""The ``folders`` state layout: a shard per folder, or per key range of a large folder.

A job is cut at its folder's range bounds (:meth:`Shards.cut`), so each listing decides
against one unit: the folder's one shard, or one range shard (:mod:`.folders` reads
them). A unit listed from its lower bound is opened by its fingerprint only (the index's
digest, or its head): :meth:`Shards.settle` reads its files only if the listing does not
match it. Once every listing of a unit is settled it is written if it changed (split
when it grew past ``SHARD_MAX_FILES``, removed when emptied: :mod:`.split`) and dropped
from memory, so memory follows the units in flight, not the bucket. A shard that cannot
be read fails its folder's (or range's) listings only. See SPEC "State layout
`folders`" and "Key ranges".
"""

from __future__ import annotations

import logging

import anyio

from ..errors import DiscoveryError, StateCorrupt, StateError, StateMoved
from ..layout import is_shard_of, shard_key, shards_prefix
from ..ports import Lister, StateObjects
from ..state import StateChanges
from .context import RunContext, UnitKey
from .folders import Folder, Folders
from .indexes import Indexes
from .plan import FirstRun, Job, Plan
from .split import Restructure
from .units import Unit
from .vanished import delete_vanished

log = logging.getLogger("async_discovery")

# The field of a shard the event path created under a first-run policy: the folder has
# not been listed since, so a scan still marks (not sends) what it finds older.
FIRST_PASS = "initial_scan"


class Shards:
    """The units of one run over prefix ``config.prefix`` (STATE_LAYOUT=folders)."""

    def __init__(self, ctx: RunContext, objects: StateObjects) -> None:
        self.ctx = ctx
        self.objects = objects
        self.folders = Folders(ctx, objects)
        self.indexes = Indexes(ctx, self.folders)
        self.restructure = Restructure(ctx, self.folders, self.indexes)
        self.first: FirstRun | None = None  # the prefix's first-run policy (.runs)
        # Units whose listings all ended while every committer was busy: written last.
        self.settled_late: set[UnitKey] = set()

    async def repair(self, name: str) -> None:
        """A range of the folder was found moved: read its index again, repaired if it
        still names a forwarded range (another run's split that stopped half-way)."""
        self.folders.forget(name)
        folder = await self.folders.folder(name)
        if folder.index is not None:
            await self.indexes.repaired(folder)

    def cut(self, job: Job, folder: Folder) -> list[tuple[Job, int | None]]:
        """``job`` cut at the folder's range bounds: each part with the position of its
        range (None: the folder's one shard)."""
        if folder.index is None:
            return [(job, None)]
        return [
            (Job(job.folder, part.after, part.until, job.whole), position)
            for position, part in folder.index.overlapping(job.span)
        ]

    async def open(self, job: Job, position: int | None) -> Unit:
        """The unit ``job`` (one part of a :meth:`cut`) is decided against, registered
        for the decider and the committers. Opened by its fingerprint when the job lists
        it from its lower bound, else read whole. Raises when it cannot be used
        (``StateMoved``: a range another run has just split; read the folder again)."""
        assert job.folder is not None
        folder = await self.folders.folder(job.folder)
        if folder.index is None:
            assert folder.leaf is not None
            unit = folder.leaf
        else:
            span = folder.index.span_at(position or 0)
            unit = self.ctx.shards.get((job.folder, span.after)) or await self.folders.range_unit(
                folder,
                position or 0,
                head=True,
                digests=self.indexes.learned.setdefault(job.folder, {}),
            )
        whole_listing = job.span == unit.span and not job.whole
        first = unit.listings == 0
        if unit.head_only and not whole_listing:
            await self.folders.read_files(unit)
        if first:
            unit.complete = whole_listing
            self._prepare(unit, whole_listing=whole_listing)
        else:
            unit.complete = unit.complete and whole_listing
        unit.listings += 1
        self.ctx.shards[(job.folder, unit.span.after)] = unit
        return unit

    async def open_for(self, name: str, key: str) -> Unit:
        """The unit recording ``key`` of folder ``name`` (the event path's lookup), read
        whole and registered for :meth:`commit`, never pruned: the folder's shard, or the
        range of its index holding ``key``. Raises as :meth:`open`, after reading the
        folder again once if another run's split moved the range. A shard it creates
        under a first-run policy carries :data:`FIRST_PASS`: no scan listed the folder."""
        try:
            return await self._open_for(name, key)
        except StateMoved:
            await self.repair(name)
            return await self._open_for(name, key)

    async def _open_for(self, name: str, key: str) -> Unit:
        folder = await self.folders.folder(name)
        index = folder.index
        position = 0 if index is None else index.position(key)
        held = self.ctx.shards.get((name, None if index is None else index.span_at(position).after))
        if held is not None:
            return held
        unit = folder.leaf if index is None else await self.folders.range_unit(folder, position)
        assert unit is not None
        if unit.head_only:
            await self.folders.read_files(unit)
        unit.complete = False
        self._prepare(unit, whole_listing=False)
        if self.first is not None and not unit.existed and not unit.ranged:
            unit.state.extra[FIRST_PASS] = self.first.cursor_text()
        unit.listings += 1
        self.ctx.shards[(name, unit.span.after)] = unit
        return unit

    async def settle(self, unit: Unit, fingerprint: str | None) -> None:
        """A unit opened by its fingerprint, once its listing is known: verified when
        ``fingerprint`` (of the listing) is the shard's, else its files are read
        (``fingerprint`` None: not known). Raises as :meth:`open`."""
        if fingerprint is not None and fingerprint == unit.expected:
            unit.verified = True
            self.ctx.stats.state_objects_verified += 1
            return
        await self.folders.read_files(unit)
        self._prepare(unit, whole_listing=unit.complete)

    def _prepare(self, unit: Unit, *, whole_listing: bool) -> None:
        """The first-run policy of a new folder; what a listing of all its keys prunes."""
        if unit.head_only:
            return
        first_pass = not unit.existed or FIRST_PASS in unit.state.extra
        if first_pass and not unit.ranged and self.first is not None:
            unit.mark_before = self.first.mark_before  # a folder new since the first run
        if self.ctx.config.prune_missing and whole_listing:
            unit.unseen = set(unit.state.files)  # listed from its lower bound: may prune

    # -- writes ----------------------------------------------------------------------

    def release(self, unit: Unit, *, complete: bool) -> bool:
        """One listing of ``unit`` is done (``complete``: to its end, every page
        settled); True when it was the last, so the unit can be written."""
        unit.listings -= 1
        unit.complete = unit.complete and complete
        return unit.listings == 0

    async def commit(self, unit: Unit) -> bool:
        """Write ``unit`` if this run changed it (split when it grew past
        ``SHARD_MAX_FILES``, removed when emptied), and drop it from memory; False when
        the write failed (a 207 or a 500, as logged). Entries not listed are pruned
        when its listings covered it (``PRUNE_MISSING``)."""
        ctx, cfg = self.ctx, self.ctx.config
        assert unit.folder is not None
        ctx.shards.pop((unit.folder, unit.span.after), None)
        if not unit.ranged:
            self.folders.forget(unit.folder)  # the folder's one unit is done: free it
        if unit.head_only:
            return True  # unchanged by its fingerprint, or cut short before it was read
        changes = StateChanges(
            prefix=cfg.prefix, source_bucket=cfg.source_bucket, upserts=unit.upserts
        )
        if unit.complete and unit.unseen:
            changes.removed = {key: unit.state.files[key].etag for key in unit.unseen}
            ctx.stats.pruned += len(changes.removed)
        rebind = unit.existed and unit.state.source_bucket != cfg.source_bucket
        oversized = len(unit.state.files) > cfg.shard_max_files
        if cfg.dry_run or (changes.is_empty() and not rebind and not oversized):
            return True
        try:
            await self.restructure.write(unit, changes)
        except StateCorrupt as exc:  # another folder's shard (a name collision): this one
            ctx.stats.folder_errors += 1
            ctx.stats.warnings.append(f"folder {unit.folder!r} not recorded: {exc}")
            log.error("shard unusable", extra={"event": "state_error", "folder": unit.folder})
            return False
        except DiscoveryError as exc:
            log.error(
                "shard write failed",
                extra={"event": "state_write_error", "folder": unit.folder, "error": str(exc)},
            )
            ctx.fail(StateError(f"state write failed: {exc}"))
            return False
        return True

    async def commit_rest(self) -> None:
        """Write the units still held: those that settled late, and those cut short
        (no pruning there), ``LIST_CONCURRENCY`` at a time, as the committers write (one
        after another they took a round trip each out of the deadline's margin: a run
        cut short holds one unit per listing in flight); then the digests the indexes
        cache."""
        limiter = anyio.CapacityLimiter(self.ctx.config.list_concurrency)

        async def write(key: UnitKey, unit: Unit) -> None:
            async with limiter:
                unit.complete = unit.complete and key in self.settled_late
                await self.commit(unit)

        async with anyio.create_task_group() as tg:
            for key, unit in list(self.ctx.shards.items()):
                tg.start_soon(write, key, unit)
        await self.indexes.refresh()

    async def prune_vanished(self, plan: Plan, lister: Lister) -> None:
        """Delete the state of folders no longer under the prefix (after a complete
        discovery and a complete run; skipped folders' shards are never touched):
        :mod:`.vanished`."""
        ctx, cfg = self.ctx, self.ctx.config
        if not (cfg.prune_missing and plan.discovery_complete) or cfg.dry_run:
            return
        names = plan.seen | cfg.skip_folders
        keep = {shard_key(cfg.state_prefix, cfg.prefix, f) for f in names}
        head = shards_prefix(cfg.state_prefix, cfg.prefix)
        for key, etag in (await self.objects.etags(head)).items():
            if not is_shard_of(key, cfg.state_prefix, cfg.prefix) or key in keep:
                continue
            deleted = await delete_vanished(
                self.objects, lister, key, etag, state_prefix=cfg.state_prefix, prefix=cfg.prefix
            )
            if deleted:
                ctx.stats.state_objects_deleted += 1
                log.info("shard of a vanished folder deleted", extra={"event": "shard_pruned"})
