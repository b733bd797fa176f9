"""The ``folders`` state layout: a shard per folder, or per key range of a large folder.

A folder's object ``<state prefix>folders/<P><F>.json`` is read once per run, when its
first job starts: it is the folder's one shard (a *leaf*), the index of its key ranges
(:mod:`async_discovery.ranges`), or absent (a new folder). A job is cut at the index's
bounds, so each listing decides against one unit: the leaf, or one range shard. A unit
listed from its lower bound reads only its first bytes (all of a small shard, or the
head and fingerprint of a larger one: :meth:`Shards.settle` reads the files only if the
listing does not match it). Once every listing of a unit is settled it is written if it
changed (split when it grew past ``SHARD_MAX_FILES``, :mod:`.split`) and dropped from
memory, so memory follows the units in flight, not the bucket. A shard that cannot be
read fails its folder's (or range's) listings only. See SPEC "State layout `folders`"
and "Key ranges".
"""

from __future__ import annotations

import dataclasses
import logging

import anyio

from ..changes import strip_etag
from ..errors import DiscoveryError, StateConflict, StateError, StateMoved
from ..fingerprint import META_KEY
from ..layout import is_shard_of, range_key, ranges_prefix, shard_key, shards_prefix
from ..ports import Lister, ObjectHead, StateObjects, StateStore, StreamingStateStore
from ..ranges import INDEX_VERSION, Index, Span, decode_index, version_at_start
from ..state import SHARD_VERSION, State, StateChanges, check_source
from ..state_codec import decode, decode_head
from .commit import count_read, load_state, unit_of
from .context import RunContext, UnitKey
from .plan import FirstRun, Job, Plan
from .split import Restructure
from .units import Unit

log = logging.getLogger("async_discovery")

# A shard's first bytes read when its listing starts at its lower bound: the fields
# before "files" (a few hundred bytes as written here), or the whole of a small shard;
# and all of an index of up to ~150 ranges.
HEAD_BYTES = 16 * 1024


@dataclasses.dataclass(slots=True, eq=False)
class Folder:
    """A folder's object ``<F>.json`` as this run read it: its one shard (``leaf``,
    perhaps only its head; an empty unit when it did not exist), or ``index``."""

    name: str
    store: StateStore
    etag: str | None
    leaf: Unit | None = None
    index: Index | None = None
    # An index's range shards as listed when it was read: id -> ETag (unquoted).
    listed: dict[str, str] = dataclasses.field(default_factory=dict)


class Shards:
    """The shards of one run over prefix ``config.prefix``."""

    def __init__(self, ctx: RunContext, objects: StateObjects) -> None:
        self.ctx = ctx
        self.objects = objects
        cfg = ctx.config
        self.state_prefix, self.prefix = cfg.state_prefix, cfg.prefix
        self.first: FirstRun | None = None  # the prefix's first-run policy (.runs)
        self._folders: dict[str, Folder | DiscoveryError] = {}
        self._reading: dict[str, anyio.Event] = {}
        # Range fingerprints learned this run (folder -> shard -> (ETag, digest)), for
        # the indexes' cache (:meth:`refresh_indexes`).
        self._learned: dict[str, dict[str, tuple[str, str]]] = {}
        # Units whose listings all ended while every committer was busy: written last.
        self.settled_late: set[UnitKey] = set()
        self.restructure = Restructure(ctx, objects, self)

    # -- a folder's object ---------------------------------------------------------------

    async def folder(self, name: str) -> Folder:
        """The folder's object as this run read it (once, unless :meth:`forget`);
        raises the ``DiscoveryError`` that makes it unusable each time asked."""
        while name not in self._folders:
            reading = self._reading.get(name)
            if reading is not None:
                await reading.wait()
                continue
            self._reading[name] = anyio.Event()
            try:
                self._folders[name] = await self.read_folder(name)
            except DiscoveryError as exc:
                self._folders[name] = exc
            finally:
                self._reading.pop(name).set()
        found = self._folders[name]
        if isinstance(found, DiscoveryError):
            raise found
        return found

    def forget(self, name: str) -> None:
        """Read the folder's object again when next asked (done with it, or it
        changed under this run)."""
        self._folders.pop(name, None)

    def known_index(self, store: StateStore, etag: str, index: Index) -> None:
        """This run wrote a folder's index: later jobs see what it wrote."""
        old = self._folders.get(index.folder)
        listed = dict(old.listed) if isinstance(old, Folder) else {}
        listed.update((r.shard, r.etag) for r in index.ranges if r.shard and r.etag)
        self._folders[index.folder] = Folder(index.folder, store, etag, index=index, listed=listed)

    async def read_folder(self, name: str) -> Folder:
        """Read ``<F>.json`` by its first ``HEAD_BYTES`` (more when that is not enough);
        an index's range shards are listed too (their ETags validate its digests)."""
        folder = await self._read_folder(name)
        if folder.index is not None:
            head = ranges_prefix(self.state_prefix, self.prefix, name)
            listed = await self.objects.etags(head)
            folder.listed = {key[len(head) :]: strip_etag(etag) for key, etag in listed.items()}
        return folder

    async def _read_folder(self, name: str) -> Folder:
        ctx = self.ctx
        store = self.objects.store(shard_key(self.state_prefix, self.prefix, name))
        if not isinstance(store, StreamingStateStore):
            raw, etag = await store.load()
            if raw is None:
                return Folder(name, store, None, leaf=unit_of(ctx, store, None, None, 0, name))
            count_read(ctx, len(raw))
            return self._decode_whole(name, store, raw, etag)
        head = await store.load_head(HEAD_BYTES)
        if head is None:
            return Folder(name, store, None, leaf=unit_of(ctx, store, None, None, 0, name))
        count_read(ctx, head.size)
        if head.size <= len(head.data):
            return self._decode_whole(name, store, head.data, head.etag)
        if version_at_start(head.data) == INDEX_VERSION:
            raw, etag = await store.load()  # an index of more than ~150 ranges
            if raw is None:
                raise StateError(f"state object {store.name} was deleted while read")
            return self._decode_whole(name, store, raw, etag)
        leaf = self._from_head(store, name, head)
        if leaf is None:  # the head was not enough: read the whole shard
            leaf = await self._read_whole(store, name)
        return Folder(name, store, leaf.etag, leaf=leaf)

    def _decode_whole(self, name: str, store: StateStore, raw: bytes, etag: str | None) -> Folder:
        ctx, cfg = self.ctx, self.ctx.config
        if version_at_start(raw) == INDEX_VERSION:
            index = decode_index(raw, name=store.name, prefix=self.prefix, folder=name)
            bound = State(source_bucket=index.source_bucket)
            check_source(bound, cfg.source_bucket, name=store.name, force_rebind=cfg.force_rebind)
            return Folder(name, store, etag, index=index)
        state = decode(raw, name=store.name, max_bytes=cfg.state_max_bytes, version=SHARD_VERSION)
        return Folder(name, store, etag, leaf=unit_of(ctx, store, state, etag, len(raw), name))

    def _from_head(
        self,
        store: StateStore,
        folder: str,
        head: ObjectHead,
        span: Span | None = None,
        shard: str | None = None,
    ) -> Unit | None:
        """A unit from a shard's head and fingerprint; None when the whole shard must be
        read (no fingerprint, fields after ``files``, another source bucket)."""
        expected = head.metadata.get(META_KEY)
        fields = decode_head(head.data, name=store.name, version=SHARD_VERSION)
        if expected is None or fields is None:
            return None
        if fields.source_bucket != self.ctx.config.source_bucket:
            return None
        unit = unit_of(self.ctx, store, fields, head.etag, head.size, folder, span, shard)
        unit.expected = expected
        return unit

    async def _read_whole(
        self,
        store: StateStore,
        folder: str,
        span: Span | None = None,
        shard: str | None = None,
        *,
        count: bool = False,
        forwarded_ok: bool = False,
    ) -> Unit:
        """The unit of a shard read whole (``count``: not counted as read yet; ``span``
        None: the folder's own shard)."""
        state, etag, size = await load_state(self.ctx, store, version=SHARD_VERSION, count=count)
        if state is None and span is not None:
            raise StateMoved(f"state object {store.name}, a range of the index, is gone")
        return unit_of(
            self.ctx, store, state, etag, size, folder, span, shard, forwarded_ok=forwarded_ok
        )

    # -- jobs and units ------------------------------------------------------------------

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
        for the decider and the committers. Read by its head when the job lists it from
        its lower bound, else whole. Raises when it cannot be used (``StateMoved``: a
        range another run has just split; read the folder again)."""
        assert job.folder is not None
        folder = await self.folder(job.folder)
        if folder.index is None:
            assert folder.leaf is not None
            unit = folder.leaf
        else:
            span = folder.index.span_at(position or 0)
            found = self.ctx.shards.get((job.folder, span.after))
            unit = found or await self.range_unit(folder, position or 0, head=True)
        whole_listing = job.span == unit.span and not job.whole
        first = unit.listings == 0
        if unit.head_only and not whole_listing:
            await self.read_files(unit)
        if first:
            unit.complete = whole_listing
            self._prepare(unit, whole_listing=whole_listing)
        else:
            unit.complete = unit.complete and whole_listing
        unit.listings += 1
        self.ctx.shards[(job.folder, unit.span.after)] = unit
        return unit

    async def range_unit(
        self, folder: Folder, position: int, *, head: bool = False, forwarded_ok: bool = False
    ) -> Unit:
        """The unit of the range at ``position`` of the folder's index: by its head when
        ``head`` (if it has a fingerprint), else whole (``forwarded_ok``: a forwarding
        body is returned as it is, not raised as ``StateMoved``)."""
        assert folder.index is not None
        span, shard = folder.index.span_at(position), folder.index.ranges[position].shard
        if shard is None:  # a range with no file recorded yet
            store = self.objects.store(range_key(self.state_prefix, self.prefix, folder.name, "-"))
            return unit_of(self.ctx, store, None, None, 0, folder.name, span, None)
        store = self.objects.store(range_key(self.state_prefix, self.prefix, folder.name, shard))
        ref = folder.index.ranges[position]
        if head and ref.digest is not None and folder.listed.get(shard) == ref.etag:
            # The index's digest is of the shard as it still is: no read at all.
            fields = State(
                source_bucket=folder.index.source_bucket,
                version=SHARD_VERSION,
                extra={"prefix": self.prefix, "folder": folder.name},
            )
            unit = unit_of(self.ctx, store, fields, ref.etag, 0, folder.name, span, shard)
            unit.expected = ref.digest
            return unit
        if head and isinstance(store, StreamingStateStore):
            found = await store.load_head(HEAD_BYTES)
            if found is None:
                raise StateMoved(f"state object {store.name}, a range of the index, is gone")
            count_read(self.ctx, found.size)
            digest = found.metadata.get(META_KEY)
            if digest is not None:
                self.learn(folder.name, shard, found.etag, digest)
            if found.size <= len(found.data):
                state = decode(found.data, name=store.name, version=SHARD_VERSION)
                return unit_of(
                    self.ctx, store, state, found.etag, found.size, folder.name, span, shard
                )
            by_head = self._from_head(store, folder.name, found, span, shard)
            if by_head is not None:
                return by_head
            return await self._read_whole(store, folder.name, span, shard)
        return await self._read_whole(
            store, folder.name, span, shard, count=True, forwarded_ok=forwarded_ok
        )

    async def load_range(self, store: StateStore, folder: str, span: Span, shard: str) -> Unit:
        """A range shard read whole again (after a conflicting write)."""
        return await self._read_whole(store, folder, span, shard, count=True)

    async def settle(self, unit: Unit, fingerprint: str | None) -> None:
        """A unit opened by its head, once its listing is known: verified when
        ``fingerprint`` (of the listing) is the shard's, else its files are read
        (``fingerprint`` None: not known). Raises as :meth:`open`."""
        if fingerprint is not None and fingerprint == unit.expected:
            unit.verified = True
            self.ctx.stats.state_objects_verified += 1
            return
        await self.read_files(unit)
        self._prepare(unit, whole_listing=unit.complete)

    async def read_files(self, unit: Unit) -> None:
        """Read the files of a unit opened by its head."""
        assert unit.folder is not None
        span = unit.span if unit.ranged else None
        loaded = await self._read_whole(unit.store, unit.folder, span, unit.shard)
        unit.state, unit.etag, unit.budget = loaded.state, loaded.etag, loaded.budget
        unit.expected = None

    def _prepare(self, unit: Unit, *, whole_listing: bool) -> None:
        """The first-run policy of a new folder; what a listing of all its keys prunes."""
        if unit.head_only:
            return
        if not unit.existed and not unit.ranged and self.first is not None:
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

    async def commit(self, unit: Unit) -> None:
        """Write ``unit`` if this run changed it (split when it grew past
        ``SHARD_MAX_FILES``, removed when emptied), and drop it from memory. Entries
        not listed are pruned when its listings covered it (``PRUNE_MISSING``)."""
        ctx = self.ctx
        assert unit.folder is not None
        ctx.shards.pop((unit.folder, unit.span.after), None)
        if not unit.ranged:
            self.forget(unit.folder)  # the folder's one unit is done: free it
        if unit.head_only:
            return  # unchanged by its fingerprint, or cut short before it was read
        cfg = ctx.config
        changes = StateChanges(
            prefix=cfg.prefix, source_bucket=cfg.source_bucket, upserts=unit.upserts
        )
        if unit.complete and unit.unseen:
            changes.removed = {key: unit.state.files[key].etag for key in unit.unseen}
            ctx.stats.pruned += len(changes.removed)
        rebind = unit.existed and unit.state.source_bucket != cfg.source_bucket
        oversized = len(unit.state.files) > cfg.shard_max_files
        if cfg.dry_run or (changes.is_empty() and not rebind and not oversized):
            return
        try:
            await self.restructure.write(unit, changes)
        except DiscoveryError as exc:
            log.error(
                "shard write failed",
                extra={"event": "state_write_error", "folder": unit.folder, "error": str(exc)},
            )
            ctx.fail(StateError(f"state write failed: {exc}"))

    async def commit_rest(self) -> None:
        """Write the units still held: those that settled late, and those cut short
        (no pruning there)."""
        for key, unit in list(self.ctx.shards.items()):
            unit.complete = unit.complete and key in self.settled_late
            await self.commit(unit)

    def learn(self, folder: str, shard: str, etag: str, digest: str | None) -> None:
        """Shard ``shard`` of ``folder`` has fingerprint ``digest`` at ETag ``etag``."""
        if digest is not None:
            self._learned.setdefault(folder, {})[shard] = (strip_etag(etag), digest)

    async def refresh_indexes(self) -> None:
        """Bring the digests of the indexes read this run up to date with what it learned
        (a cache: a write that conflicts is tried once more on the index read again,
        then left for a later run)."""
        learned, self._learned = self._learned, {}
        if self.ctx.config.dry_run:
            return
        for name, shards in learned.items():
            for attempt in (1, 2):
                found = self._folders.get(name)
                if attempt == 2 or not isinstance(found, Folder):
                    try:
                        found = await self.read_folder(name)
                    except DiscoveryError:
                        break
                if found.index is None or found.etag is None:
                    break
                refs = [
                    dataclasses.replace(r, etag=shards[r.shard][0], digest=shards[r.shard][1])
                    if r.shard in shards and (r.etag, r.digest) != shards[r.shard]
                    else r
                    for r in found.index.ranges
                ]
                if refs == found.index.ranges:
                    break
                index = dataclasses.replace(found.index, ranges=refs)
                try:
                    await self.restructure.save_index(found.store, index, found.etag)
                    break
                except StateConflict:
                    continue
                except DiscoveryError as exc:
                    log.warning(
                        "index digests not refreshed",
                        extra={"event": "index_refresh", "folder": name, "error": str(exc)},
                    )
                    break

    # -- vanished folders ---------------------------------------------------------------

    async def prune_vanished(self, plan: Plan, lister: Lister) -> None:
        """Delete the state of folders no longer under the prefix (after a complete
        discovery and a complete run; skipped folders' shards are never touched).

        A folder's object is deleted only once a listing made after it was seen shows
        the folder gone, and only if it is still the object seen (``If-Match``): a run
        that recorded a new file of the folder meanwhile keeps it."""
        ctx, cfg = self.ctx, self.ctx.config
        if not (cfg.prune_missing and plan.discovery_complete) or cfg.dry_run:
            return
        names = plan.seen | cfg.skip_folders
        keep = {shard_key(self.state_prefix, self.prefix, f) for f in names}
        head = shards_prefix(self.state_prefix, self.prefix)
        for key, etag in (await self.objects.etags(head)).items():
            if not is_shard_of(key, self.state_prefix, self.prefix) or key in keep:
                continue
            if await self.restructure.delete_vanished(key, etag, lister):
                ctx.stats.state_objects_deleted += 1
                log.info("shard of a vanished folder deleted", extra={"event": "shard_pruned"})
