"""Writing the folders layout's units: conditional writes, splits, emptied ranges, moves.

Every write is conditional (``If-Match`` the ETag read, ``If-None-Match: *`` for a new
object); on a conflict the object is read again, this run's changes are merged into it
and the write is retried, as for the single state object (:func:`.commit.write_state`).
What the folders layout adds is the ranges' structure (:mod:`async_discovery.ranges`):

- A unit that grows past ``SHARD_MAX_FILES`` is **split**: its files are cut into ranges
  of at most half that many, each written as a new range shard under a new id; then the
  folder's index names them in place of the old unit. A folder's own shard becomes the
  index in one conditional write of ``<F>.json``. A range shard is first overwritten,
  conditionally, by a *forwarding* body (``moved_to``: the ranges now holding its keys),
  then the index is rewritten, then the old shard deleted. Another run that loaded the
  old range and writes it meets the forwarding body (its ``If-Match`` fails, it reads
  again) and takes its changes to the new ranges instead: no run's entries are lost.
- A range **emptied** by pruning is removed the same way: forwarded to none, its keys
  given to a neighbour by the index (the next range's lower bound moves down, or the
  previous range becomes the last).
- A range with no object yet (``shard`` null) gets one under a new id, named by the
  index in a conditional write.
- A unit found moved (forwarded, or ``<F>.json`` now an index) takes its changes to
  wherever the folder's index now puts each key (:meth:`Restructure.redirect`); an index
  that still names a forwarded range is repaired first.

Leftovers of a write that failed half-way (a new range the index never named, a
forwarding body never deleted) are never read: the index decides what is state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
from collections.abc import Iterable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio

from ..changes import strip_etag
from ..discovery import folder_prefix
from ..errors import StateConflict, StateCorrupt, StateError, StateMoved, StorageError
from ..fingerprint import META_KEY
from ..layout import range_key, ranges_prefix, shard_key
from ..messages import iso_utc
from ..ports import Lister, StateObjects, StateStore, StreamingStateStore
from ..ranges import INDEX_VERSION, Index, RangeRef, encode_index, piece_sizes, version_at_start
from ..state import SHARD_VERSION, Files, State, StateChanges, apply
from ..state_codec import decode_head
from .commit import save_state
from .context import RunContext, backoff
from .units import Unit

if TYPE_CHECKING:
    from .shards import Folder, Shards

log = logging.getLogger("async_discovery")

MOVED = "moved_to"  # the field of a forwarding body: the ranges now holding its keys
_DEPTH = 4  # redirects followed for one unit's changes before giving up


def new_shard_id() -> str:
    """A new range shard's id: 16 random hex digits (never reused, so a conditional
    create cannot meet another run's range)."""
    return secrets.token_hex(8)


class Restructure:
    """Writes the units of one run (see the module docstring)."""

    def __init__(self, ctx: RunContext, objects: StateObjects, shards: Shards) -> None:
        self.ctx = ctx
        self.objects = objects
        self.shards = shards
        cfg = ctx.config
        self.state_prefix, self.prefix = cfg.state_prefix, cfg.prefix

    # -- one unit --------------------------------------------------------------------

    async def write(self, unit: Unit, changes: StateChanges, depth: int = 0) -> None:
        """Write ``changes`` into ``unit``: conditionally, merged with what another run
        wrote meanwhile, split or removed as its size asks, or taken where its keys
        moved. Raises a ``DiscoveryError`` once the attempts are spent."""
        ctx, cfg = self.ctx, self.ctx.config
        for attempt in range(1, cfg.state_write_attempts + 1):
            ctx.stats.state_write_attempts = max(ctx.stats.state_write_attempts, attempt)
            merged = apply(unit.state, changes)
            try:
                await self._write_once(unit, merged)
                return
            except StateMoved:
                await self.redirect(unit, changes, depth)
                return
            except StateConflict as exc:
                log.warning(
                    "shard changed meanwhile: reload and merge",
                    extra={"event": "state_conflict", "attempt": attempt, "error": str(exc)},
                )
                if attempt == cfg.state_write_attempts:
                    raise
            await anyio.sleep(backoff(attempt))
            try:
                await self._reload(unit)
            except StateMoved:
                await self.redirect(unit, changes, depth)
                return
        raise StateError("state write attempts exhausted")  # pragma: no cover

    async def _write_once(self, unit: Unit, merged: State) -> None:
        count, cap = len(merged.files), self.ctx.config.shard_max_files
        if count > cap:
            await self._split(unit, merged)
        elif unit.ranged and not merged.files and unit.etag is not None:
            await self._replace(unit, [])
        elif unit.ranged and unit.shard is None:
            await self._replace(unit, [(unit.span.until, Files(merged.files))])
        else:
            etag, digest = await self._save(unit.store, merged, unit.etag)
            if unit.ranged and unit.folder is not None and unit.shard is not None:
                self.shards.learn(unit.folder, unit.shard, etag, digest)
        self._forget_leaf(unit)

    async def _save(
        self, store: StateStore, state: State, etag: str | None
    ) -> tuple[str, str | None]:
        """Write a shard; its new ETag and fingerprint."""
        size, new_etag, metadata = await save_state(self.ctx, store, state, etag)
        stats = self.ctx.stats
        stats.state_written = True
        stats.state_objects_written += 1
        stats.state_bytes = max(stats.state_bytes, size)
        return new_etag, metadata.get(META_KEY)

    async def _reload(self, unit: Unit) -> None:
        """Read ``unit`` again after a conflict (raises ``StateMoved`` when its keys now
        belong elsewhere: the folder's shard became an index, or the range moved)."""
        assert unit.folder is not None
        if not unit.ranged:
            folder = await self.shards.read_folder(unit.folder)
            if folder.leaf is None:
                raise StateMoved(f"{unit.store.name} is now the index of split ranges")
            fresh = folder.leaf
            if fresh.head_only:
                await self.shards.read_files(fresh)
        elif unit.shard is None:
            raise StateMoved(f"a range of {unit.folder!r} was created meanwhile")
        else:
            fresh = await self.shards.load_range(unit.store, unit.folder, unit.span, unit.shard)
        unit.state, unit.etag = fresh.state, fresh.etag

    def _forget_leaf(self, unit: Unit) -> None:
        if unit.folder is not None and not unit.ranged:
            self.shards.forget(unit.folder)  # written: a later job reads what it is now

    # -- structure -------------------------------------------------------------------

    async def _split(self, unit: Unit, merged: State) -> None:
        """Cut ``merged`` (the unit with this run's changes) into new ranges."""
        keys = sorted(merged.files)
        pieces: list[tuple[str | None, Files]] = []
        start = 0
        for size in piece_sizes(len(keys), self.ctx.config.shard_max_files):
            part = keys[start : start + size]
            start += size
            until = part[-1] if start < len(keys) else unit.span.until
            pieces.append((until, Files({k: merged.files[k] for k in part})))
        log.info(
            "shard split",
            extra={"event": "shard_split", "folder": unit.folder, "ranges": len(pieces)},
        )
        await self._replace(unit, pieces)

    async def _replace(self, unit: Unit, pieces: list[tuple[str | None, Files]]) -> None:
        """Put ``pieces`` (each: its upper bound and files) in the place of ``unit``."""
        folder_name = unit.folder
        assert folder_name is not None
        refs: list[RangeRef] = []
        try:
            for until, files in pieces:
                shard = new_shard_id()
                store = self.objects.store(self._range_key(folder_name, shard))
                body = State(
                    files=files,
                    source_bucket=self.ctx.config.source_bucket,
                    version=SHARD_VERSION,
                    extra={"prefix": self.prefix, "folder": folder_name},
                )
                etag, digest = await self._save(store, body, None)
                refs.append(RangeRef(until, shard, strip_etag(etag), digest))
            if not unit.ranged:  # the folder's own shard becomes the index
                index = Index(folder_name, self.prefix, self.ctx.config.source_bucket, refs)
                await self.save_index(unit.store, index, unit.etag)
                return
            if unit.shard is not None:
                await self._forward(unit, refs)
        except (StateConflict, StorageError):
            await self._delete_quietly(folder_name, [r.shard for r in refs])
            raise
        await self.replace_in_index(folder_name, unit, refs)
        if unit.shard is not None:
            await self._delete_quietly(folder_name, [unit.shard])

    async def _forward(self, unit: Unit, refs: list[RangeRef]) -> None:
        """Overwrite the range shard, if unchanged, with its forwarding body."""
        assert unit.folder is not None
        body = State(
            files=Files(),
            source_bucket=self.ctx.config.source_bucket,
            version=SHARD_VERSION,
            extra={
                "prefix": self.prefix,
                "folder": unit.folder,
                MOVED: [{"until": r.until, "shard": r.shard} for r in refs],
            },
        )
        await self._save(unit.store, body, unit.etag)
        self.ctx.stats.state_objects_written -= 1  # not a shard of state: not counted

    async def replace_in_index(self, folder: str, unit: Unit, refs: list[RangeRef]) -> None:
        """Rewrite the folder's index with ``refs`` in place of ``unit``'s range:
        conditionally, on the index read again after a conflict. Raises ``StateMoved``
        when the index no longer names that range as this run read it."""
        cfg = self.ctx.config
        current = await self.shards.folder(folder)
        for attempt in range(1, 2 * cfg.state_write_attempts + 1):
            index = current.index
            if index is None:
                raise StateMoved(f"the index of {folder!r} is gone")
            position = _position(index, unit)
            if position is None:
                raise StateMoved(f"a range of {folder!r} changed in the index meanwhile")
            new = _replaced(index, position, refs)
            try:
                await self.save_index(current.store, new, current.etag)
            except StateConflict:
                if attempt == 2 * cfg.state_write_attempts:
                    raise
                await anyio.sleep(backoff(attempt))
                current = await self.shards.read_folder(folder)
                continue
            return

    async def save_index(self, store: StateStore, index: Index, etag: str | None) -> str:
        """Write a folder's index conditionally; its new ETag."""
        body = encode_index(index, iso_utc(self.ctx.clock()))
        new_etag = await store.save(body, if_match=etag)
        self.ctx.stats.state_objects_written += 1
        self.shards.known_index(store, new_etag, index)
        return new_etag

    def _range_key(self, folder: str, shard: str) -> str:
        return range_key(self.state_prefix, self.prefix, folder, shard)

    async def _delete_quietly(self, folder: str, shards: Iterable[str | None]) -> None:
        """Delete range shards nothing names any more (a failure only leaves garbage)."""
        for shard in shards:
            if shard is None:
                continue
            try:
                await self.objects.delete(self._range_key(folder, shard))
            except StorageError as exc:
                log.warning(
                    "leftover range shard not deleted",
                    extra={"event": "range_leftover", "folder": folder, "error": str(exc)},
                )

    # -- changes whose unit moved -------------------------------------------------------

    async def redirect(self, unit: Unit, changes: StateChanges, depth: int) -> None:
        """Take ``changes`` to wherever the folder's index now holds each key."""
        folder_name = unit.folder
        assert folder_name is not None
        if depth >= _DEPTH:
            raise StateError(f"the state of folder {folder_name!r} keeps moving: not written")
        self.shards.forget(folder_name)
        folder = await self.shards.folder(folder_name)
        if folder.index is None:
            leaf = folder.leaf
            assert leaf is not None
            if leaf.head_only:
                await self.shards.read_files(leaf)
            await self.write(leaf, changes, depth + 1)
            return
        folder = await self._repaired(folder)
        index = folder.index
        assert index is not None
        for position, part in _split_changes(index, changes):
            target = await self.shards.range_unit(folder, position)
            await self.write(target, part, depth + 1)

    async def _repaired(self, folder: Folder) -> Folder:
        """The folder's index with every forwarded range it still names replaced by the
        ranges it forwards to (a split that stopped between its two writes)."""
        assert folder.index is not None
        for _ in range(len(folder.index.ranges)):
            index = folder.index
            assert index is not None
            for position, ref in enumerate(index.ranges):
                if ref.shard is None:
                    continue
                unit = await self.shards.range_unit(folder, position, forwarded_ok=True)
                moved = unit.state.extra.get(MOVED)
                if moved is None:
                    continue
                refs = [RangeRef(m["until"], m["shard"]) for m in moved]
                await self.replace_in_index(folder.name, unit, refs)
                folder = await self.shards.folder(folder.name)
                break
            else:
                return folder
        return folder

    # -- a vanished folder -----------------------------------------------------------------

    async def delete_vanished(self, key: str, etag: str, lister: Lister) -> bool:
        """Delete the state of the vanished folder whose object is ``key`` (ETag ``etag``
        when seen): only once a listing shows the folder gone, and only if the object is
        still the one seen. True when deleted."""
        store = self.objects.store(key)
        name, index = await self._named(store, etag)
        if name is None or shard_key(self.state_prefix, self.prefix, name) != key:
            return False
        listing = lister.pages(folder_prefix(self.prefix, name), delimiter=True)
        async with aclosing(listing) as pages:
            async for page in pages:
                if page.objects or page.common_prefixes:
                    return False  # the folder is back: a run recorded it meanwhile
                break
        try:
            await self.objects.delete(key, if_match=etag)
        except StateConflict:
            return False
        if index:
            head = ranges_prefix(self.state_prefix, self.prefix, name)
            for range_object in await self.objects.etags(head):
                await self.objects.delete(range_object)
        return True

    async def _named(self, store: StateStore, etag: str) -> tuple[str | None, bool]:
        """The folder an object of the shards prefix records, and whether it is an
        index; (None, False) when it is not the object seen or names no folder."""
        if isinstance(store, StreamingStateStore):
            head = await store.load_head(16 * 1024)
            if head is None or head.etag.strip('"') != etag.strip('"'):
                return None, False
            data, whole = head.data, head.size <= len(head.data)
        else:
            raw, found = await store.load()
            if raw is None or (found or "").strip('"') != etag.strip('"'):
                return None, False
            data, whole = raw, True
        if version_at_start(data) == INDEX_VERSION:
            if not whole:
                raw, _ = await store.load()
                data = raw or b"{}"
            doc = _json_object(data)
            folder = doc.get("folder") if doc is not None else None
            return (folder, True) if isinstance(folder, str) else (None, False)
        try:
            fields = decode_head(data, name=store.name, version=SHARD_VERSION)
        except StateCorrupt:
            return None, False
        folder = fields.extra.get("folder") if fields is not None else None
        return (folder, False) if isinstance(folder, str) else (None, False)


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _position(index: Index, unit: Unit) -> int | None:
    """Where ``unit``'s range stands in ``index`` (None: no longer as this run read it)."""
    if unit.shard is not None:
        position = index.position_of(unit.shard)
        if position is None or index.span_at(position) != unit.span:
            return None
        return position
    position = index.position(unit.span.after or "") if unit.span.after is not None else 0
    if index.ranges[position].shard is not None or index.span_at(position) != unit.span:
        return None
    return position


def _replaced(index: Index, position: int, refs: list[RangeRef]) -> Index:
    """``index`` with the range at ``position`` replaced by ``refs`` (none: its keys go
    to the next range, or, for the last range, to the one before it)."""
    ranges = list(index.ranges)
    if refs:
        ranges[position : position + 1] = refs
    elif position < len(ranges) - 1:
        del ranges[position]
    elif position > 0:
        ranges[position - 1 : position + 1] = [
            dataclasses.replace(ranges[position - 1], until=None)
        ]
    else:
        ranges = [RangeRef(None, None)]
    return dataclasses.replace(index, ranges=ranges)


def _split_changes(index: Index, changes: StateChanges) -> list[tuple[int, StateChanges]]:
    """``changes`` partitioned by the range of ``index`` holding each key."""
    parts: dict[int, StateChanges] = {}

    def part(key: str) -> StateChanges:
        position = index.position(key)
        if position not in parts:
            parts[position] = StateChanges(
                prefix=changes.prefix, source_bucket=changes.source_bucket
            )
        return parts[position]

    for key, entry in changes.upserts.items():
        part(key).upserts[key] = entry
    for key, etag in changes.removed.items():
        part(key).removed[key] = etag
    return sorted(parts.items())
