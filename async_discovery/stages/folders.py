"""Reading the folders layout's state objects: a folder's ``<F>.json`` and its ranges.

A folder's object ``<state prefix>folders/<P><F>.json`` is read once per run, when its
first job starts: it is the folder's one shard (a *leaf*), the index of its key ranges
(:mod:`async_discovery.ranges`), or absent (a new folder). Its first ``HEAD_BYTES`` are
read (a ranged ``GetObject``): all of a small shard or index; of a larger shard, the
fields before ``files`` and its fingerprint, enough when the folder's listing matches it.
An index's range shards are listed once (their ETags), so a range whose shard still has
the ETag the index recorded with its digest is verified without reading it at all.
"""

from __future__ import annotations

import dataclasses

import anyio

from ..changes import strip_etag
from ..errors import DiscoveryError, StateError, StateMoved
from ..fingerprint import META_KEY
from ..layout import range_key, ranges_prefix, shard_key
from ..ports import ObjectHead, StateObjects, StateStore, StreamingStateStore
from ..ranges import INDEX_VERSION, Index, Span, decode_index, version_at_start
from ..state import SHARD_VERSION, State, check_source
from ..state_codec import decode, decode_head
from .commit import count_read, load_state, unit_of
from .context import RunContext
from .units import Unit

# A shard's first bytes read when its listing starts at its lower bound: the fields
# before "files" (a few hundred bytes as written here), or the whole of a small shard;
# and all of an index of up to ~100 ranges.
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


class Folders:
    """The folders' state objects of one run over prefix ``config.prefix``, each read
    once (unless forgotten) and shared by the run's jobs."""

    def __init__(self, ctx: RunContext, objects: StateObjects) -> None:
        self.ctx = ctx
        self.objects = objects
        self.state_prefix, self.prefix = ctx.config.state_prefix, ctx.config.prefix
        self._folders: dict[str, Folder | DiscoveryError] = {}
        self._reading: dict[str, anyio.Event] = {}

    async def folder(self, name: str) -> Folder:
        """The folder's object as this run read it; raises the ``DiscoveryError`` that
        makes it unusable each time asked."""
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

    def cached(self, name: str) -> Folder | None:
        """The folder's object if this run holds it."""
        found = self._folders.get(name)
        return found if isinstance(found, Folder) else None

    def forget(self, name: str) -> None:
        """Read the folder's object again when next asked (done with it, or it changed
        under this run)."""
        self._folders.pop(name, None)

    def known_index(self, store: StateStore, etag: str, index: Index) -> None:
        """This run wrote a folder's index: later jobs see what it wrote."""
        old = self.cached(index.folder)
        listed = dict(old.listed) if old is not None else {}
        listed.update((r.shard, r.etag) for r in index.ranges if r.shard and r.etag)
        self._folders[index.folder] = Folder(index.folder, store, etag, index=index, listed=listed)

    async def read_folder(self, name: str) -> Folder:
        """Read ``<F>.json`` by its first ``HEAD_BYTES`` (more when that is not enough);
        an index's range shards are listed too (their ETags validate its digests)."""
        folder = await self._read(name)
        if folder.index is not None:
            head = ranges_prefix(self.state_prefix, self.prefix, name)
            listed = await self.objects.etags(head)
            folder.listed = {key[len(head) :]: strip_etag(etag) for key, etag in listed.items()}
        return folder

    async def _read(self, name: str) -> Folder:
        ctx = self.ctx
        store = self.objects.store(shard_key(self.state_prefix, self.prefix, name))
        if not isinstance(store, StreamingStateStore):
            raw, etag = await store.load()
            if raw is None:
                return Folder(name, store, None, leaf=unit_of(ctx, store, None, None, 0, name))
            count_read(ctx, len(raw))
            return self._decoded(name, store, raw, etag)
        head = await store.load_head(HEAD_BYTES)
        if head is None:
            return Folder(name, store, None, leaf=unit_of(ctx, store, None, None, 0, name))
        count_read(ctx, head.size)
        if head.size <= len(head.data):
            return self._decoded(name, store, head.data, head.etag)
        if version_at_start(head.data) == INDEX_VERSION:
            raw, etag = await store.load()  # an index of more than ~100 ranges
            if raw is None:
                raise StateError(f"state object {store.name} was deleted while read")
            return self._decoded(name, store, raw, etag)
        leaf = self._from_head(store, name, head)
        if leaf is None:  # the head was not enough: read the whole shard
            leaf = await self.read_whole(store, name)
        return Folder(name, store, leaf.etag, leaf=leaf)

    def _decoded(self, name: str, store: StateStore, raw: bytes, etag: str | None) -> Folder:
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

    async def read_whole(
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

    async def read_files(self, unit: Unit) -> None:
        """Read the files of a unit opened by its head."""
        assert unit.folder is not None
        span = unit.span if unit.ranged else None
        loaded = await self.read_whole(unit.store, unit.folder, span, unit.shard)
        unit.state, unit.etag, unit.budget = loaded.state, loaded.etag, loaded.budget
        unit.expected = None

    def range_key(self, folder: str, shard: str) -> str:
        """The key of range shard ``shard`` of ``folder``."""
        return range_key(self.state_prefix, self.prefix, folder, shard)

    def range_store(self, folder: str, shard: str) -> StateStore:
        """The store of range shard ``shard`` of ``folder``."""
        return self.objects.store(self.range_key(folder, shard))

    async def range_unit(
        self,
        folder: Folder,
        position: int,
        *,
        head: bool = False,
        forwarded_ok: bool = False,
        digests: dict[str, tuple[str, str]] | None = None,
    ) -> Unit:
        """The unit of the range at ``position`` of the folder's index: verified by the
        index's digest when its shard still has the recorded ETag, else by its head when
        ``head`` (its fingerprint learned into ``digests``), else read whole
        (``forwarded_ok``: a forwarding body is returned, not raised as ``StateMoved``)."""
        assert folder.index is not None
        span, ref = folder.index.span_at(position), folder.index.ranges[position]
        if ref.shard is None:  # a range with no file recorded yet
            store = self.range_store(folder.name, "-")
            return unit_of(self.ctx, store, None, None, 0, folder.name, span, None)
        store = self.range_store(folder.name, ref.shard)
        if head and ref.digest is not None and folder.listed.get(ref.shard) == ref.etag:
            fields = State(
                source_bucket=folder.index.source_bucket,
                version=SHARD_VERSION,
                extra={"prefix": self.prefix, "folder": folder.name},
            )
            unit = unit_of(self.ctx, store, fields, ref.etag, 0, folder.name, span, ref.shard)
            unit.expected = ref.digest
            return unit
        if head and isinstance(store, StreamingStateStore):
            found = await store.load_head(HEAD_BYTES)
            if found is None:
                raise StateMoved(f"state object {store.name}, a range of the index, is gone")
            count_read(self.ctx, found.size)
            digest = found.metadata.get(META_KEY)
            if digest is not None and digests is not None:
                digests[ref.shard] = (strip_etag(found.etag), digest)
            if found.size <= len(found.data):
                state = decode(found.data, name=store.name, version=SHARD_VERSION)
                return unit_of(
                    self.ctx, store, state, found.etag, found.size, folder.name, span, ref.shard
                )
            by_head = self._from_head(store, folder.name, found, span, ref.shard)
            if by_head is not None:
                return by_head
            return await self.read_whole(store, folder.name, span, ref.shard)
        return await self.read_whole(
            store, folder.name, span, ref.shard, count=True, forwarded_ok=forwarded_ok
        )
