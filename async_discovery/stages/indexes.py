"""Writing a split folder's index: its ranges replaced, repaired, their digests refreshed.

Every index write is conditional (``If-Match`` the index read). A range replaced (split,
emptied, created) is rewritten in the index read again after a conflict, for as long as
the index still names that range as this run read it; else the range moved under this
run (``StateMoved``). An index that still names a forwarded range (a split that stopped
between its writes) is repaired from the forwarding body. The digests the index caches
(:mod:`async_discovery.ranges`) are refreshed once per run, best effort: a cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

import anyio

from ..changes import strip_etag
from ..errors import DiscoveryError, StateConflict, StateMoved, StorageError
from ..messages import iso_utc
from ..ports import StateStore
from ..ranges import Index, RangeRef, encode_index
from .context import RunContext, backoff
from .folders import Folder, Folders
from .units import Unit

log = logging.getLogger("async_discovery")

MOVED = "moved_to"  # the field of a forwarding body: the ranges now holding its keys


class Indexes:
    """The index writes of one run."""

    def __init__(self, ctx: RunContext, folders: Folders) -> None:
        self.ctx = ctx
        self.folders = folders
        # Range digests learned this run: folder -> shard -> (ETag, digest).
        self.learned: dict[str, dict[str, tuple[str, str]]] = {}

    async def save(self, store: StateStore, index: Index, etag: str | None) -> str:
        """Write a folder's index conditionally; its new ETag."""
        body = encode_index(index, iso_utc(self.ctx.clock()))
        new_etag = await store.save(body, if_match=etag)
        self.ctx.stats.state_objects_written += 1
        self.folders.known_index(store, new_etag, index)
        return new_etag

    async def replace(self, folder: str, unit: Unit, refs: list[RangeRef]) -> None:
        """Rewrite the folder's index with ``refs`` in place of ``unit``'s range (none:
        its keys go to a neighbour). Raises ``StateMoved`` when the index no longer names
        that range as this run read it."""
        attempts = 2 * self.ctx.config.state_write_attempts
        current = await self.folders.folder(folder)
        for attempt in range(1, attempts + 1):
            index = current.index
            position = None if index is None else _position(index, unit)
            if index is None or position is None:
                raise StateMoved(f"a range of {folder!r} changed in the index meanwhile")
            try:
                await self.save(current.store, _replaced(index, position, refs), current.etag)
                return
            except StateConflict:
                if attempt == attempts:
                    raise
            await anyio.sleep(backoff(attempt))
            current = await self.folders.read_folder(folder)

    async def repaired(self, folder: Folder) -> Folder:
        """The folder's index with every forwarded range it still names replaced by the
        ranges it forwards to (a split that stopped between its two writes)."""
        assert folder.index is not None
        for _ in range(len(folder.index.ranges)):
            index = folder.index
            assert index is not None
            for position, ref in enumerate(index.ranges):
                if ref.shard is None:
                    continue
                unit = await self.folders.range_unit(folder, position, forwarded_ok=True)
                moved = unit.state.extra.get(MOVED)
                if moved is None:
                    continue
                refs = [RangeRef(m["until"], m["shard"]) for m in moved]
                await self.replace(folder.name, unit, refs)
                with contextlib.suppress(StorageError):  # else: garbage the index never names
                    await self.folders.objects.delete(
                        self.folders.range_key(folder.name, ref.shard)
                    )
                log.info("index repaired", extra={"event": "index_repaired", "folder": folder.name})
                folder = await self.folders.folder(folder.name)
                break
            else:
                return folder
        return folder

    def learn(self, folder: str, shard: str, etag: str, digest: str | None) -> None:
        """Shard ``shard`` of ``folder`` has fingerprint ``digest`` at ETag ``etag``."""
        if digest is not None:
            self.learned.setdefault(folder, {})[shard] = (strip_etag(etag), digest)

    async def refresh(self) -> None:
        """Bring the digests of the indexes read this run up to date with what it learned
        (a write that conflicts is tried once more on the index read again, then left
        for a later run)."""
        learned, self.learned = self.learned, {}
        if self.ctx.config.dry_run:
            return
        for name, digests in learned.items():
            try:
                await self._refresh(name, digests)
            except DiscoveryError as exc:
                log.warning(
                    "index digests not refreshed",
                    extra={"event": "index_refresh", "folder": name, "error": str(exc)},
                )

    async def _refresh(self, name: str, digests: dict[str, tuple[str, str]]) -> None:
        found = self.folders.cached(name)
        for attempt in (1, 2):
            if attempt == 2 or found is None:
                found = await self.folders.read_folder(name)
            if found.index is None or found.etag is None:
                return
            refs = [
                dataclasses.replace(r, etag=digests[r.shard][0], digest=digests[r.shard][1])
                if r.shard in digests and (r.etag, r.digest) != digests[r.shard]
                else r
                for r in found.index.ranges
            ]
            if refs == found.index.ranges:
                return
            try:
                await self.save(
                    found.store, dataclasses.replace(found.index, ranges=refs), found.etag
                )
                return
            except StateConflict:
                continue


def _position(index: Index, unit: Unit) -> int | None:
    """Where ``unit``'s range stands in ``index`` (None: no longer as this run read it)."""
    if unit.shard is not None:
        position = index.position_of(unit.shard)
        if position is None or index.span_at(position) != unit.span:
            return None
        return position
    # A range with no shard yet: found by its lower bound (the previous range's until).
    position = 0 if unit.span.after is None else index.position(unit.span.after) + 1
    if position >= len(index.ranges) or index.ranges[position].shard is not None:
        return None
    return position if index.span_at(position) == unit.span else None


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
