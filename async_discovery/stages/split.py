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
  that still names a forwarded range is repaired first (:mod:`.indexes`).

Leftovers of a write that failed half-way (a new range the index never named, a
forwarding body never deleted) are never read: the index decides what is state.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable

import anyio

from ..changes import strip_etag
from ..errors import StateConflict, StateError, StateMoved, StorageError
from ..fingerprint import META_KEY
from ..ports import StateStore
from ..ranges import Index, RangeRef, piece_sizes
from ..state import SHARD_VERSION, Files, State, StateChanges, apply
from .commit import save_state
from .context import RunContext, backoff
from .folders import Folders
from .indexes import MOVED, Indexes
from .units import Unit

log = logging.getLogger("async_discovery")

_DEPTH = 4  # redirects followed for one unit's changes before giving up


def new_shard_id() -> str:
    """A new range shard's id: 16 random hex digits (never reused, so a conditional
    create cannot meet another run's range)."""
    return secrets.token_hex(8)


class Restructure:
    """Writes the units of one run (see the module docstring)."""

    def __init__(self, ctx: RunContext, folders: Folders, indexes: Indexes) -> None:
        self.ctx = ctx
        self.folders = folders
        self.indexes = indexes

    async def write(self, unit: Unit, changes: StateChanges, depth: int = 0) -> None:
        """Write ``changes`` into ``unit``: conditionally, merged with what another run
        wrote meanwhile, split or removed as its size asks, or taken where its keys
        moved. Raises a ``DiscoveryError`` once the attempts are spent."""
        ctx, cfg = self.ctx, self.ctx.config
        for attempt in range(1, cfg.state_write_attempts + 1):
            ctx.stats.state_write_attempts = max(ctx.stats.state_write_attempts, attempt)
            try:
                await self._write_once(unit, apply(unit.state, changes))
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
        if len(merged.files) > self.ctx.config.shard_max_files:
            await self._split(unit, merged)
        elif unit.ranged and not merged.files and unit.etag is not None:
            await self._replace(unit, [])
        elif unit.ranged and unit.shard is None:
            await self._replace(unit, [(unit.span.until, Files(merged.files))])
        else:
            etag, digest = await self._save(unit.store, merged, unit.etag)
            if unit.folder is not None and unit.shard is not None:
                self.indexes.learn(unit.folder, unit.shard, etag, digest)
        if unit.folder is not None and not unit.ranged:
            self.folders.forget(unit.folder)  # written: a later job reads what it is now

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
            folder = await self.folders.read_folder(unit.folder)
            if folder.leaf is None:
                raise StateMoved(f"{unit.store.name} is now the index of split ranges")
            fresh = folder.leaf
            if fresh.head_only:
                await self.folders.read_files(fresh)
        elif unit.shard is None:
            raise StateMoved(f"a range of {unit.folder!r} was created meanwhile")
        else:
            fresh = await self.folders.read_whole(
                unit.store, unit.folder, unit.span, unit.shard, count=True
            )
        unit.state, unit.etag = fresh.state, fresh.etag

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
        folder = unit.folder
        assert folder is not None
        refs: list[RangeRef] = []
        try:
            for until, files in pieces:
                shard = new_shard_id()
                body = State(
                    files=files,
                    source_bucket=self.ctx.config.source_bucket,
                    version=SHARD_VERSION,
                    extra={"prefix": self.ctx.config.prefix, "folder": folder},
                )
                etag, digest = await self._save(self.folders.range_store(folder, shard), body, None)
                refs.append(RangeRef(until, shard, strip_etag(etag), digest))
            if not unit.ranged:  # the folder's own shard becomes the index
                index = Index(folder, self.ctx.config.prefix, self.ctx.config.source_bucket, refs)
                await self.indexes.save(unit.store, index, unit.etag)
                return
            if unit.shard is not None:
                await self._forward(unit, refs)
        except (StateConflict, StorageError):
            await self._delete_quietly(folder, [r.shard for r in refs])
            raise
        await self.indexes.replace(folder, unit, refs)
        if unit.shard is not None:
            await self._delete_quietly(folder, [unit.shard])

    async def _forward(self, unit: Unit, refs: list[RangeRef]) -> None:
        """Overwrite the range shard, if unchanged, with its forwarding body."""
        assert unit.folder is not None
        body = State(
            files=Files(),
            source_bucket=self.ctx.config.source_bucket,
            version=SHARD_VERSION,
            extra={
                "prefix": self.ctx.config.prefix,
                "folder": unit.folder,
                MOVED: [{"until": r.until, "shard": r.shard} for r in refs],
            },
        )
        await self._save(unit.store, body, unit.etag)
        self.ctx.stats.state_objects_written -= 1  # not a shard of state: not counted

    async def _delete_quietly(self, folder: str, shards: Iterable[str | None]) -> None:
        """Delete range shards nothing names any more (a failure only leaves garbage)."""
        for shard in shards:
            if shard is None:
                continue
            try:
                await self.folders.objects.delete(self.folders.range_key(folder, shard))
            except StorageError as exc:
                log.warning(
                    "leftover range shard not deleted",
                    extra={"event": "range_leftover", "folder": folder, "error": str(exc)},
                )

    # -- changes whose unit moved -------------------------------------------------------

    async def redirect(self, unit: Unit, changes: StateChanges, depth: int) -> None:
        """Take ``changes`` to wherever the folder's index now holds each key."""
        name = unit.folder
        assert name is not None
        if depth >= _DEPTH:
            raise StateError(f"the state of folder {name!r} keeps moving: not written")
        self.folders.forget(name)
        folder = await self.folders.folder(name)
        if folder.index is None:
            leaf = folder.leaf
            assert leaf is not None
            if leaf.head_only:
                await self.folders.read_files(leaf)
            await self.write(leaf, changes, depth + 1)
            return
        folder = await self.indexes.repaired(folder)
        assert folder.index is not None
        for position, part in split_changes(folder.index, changes):
            target = await self.folders.range_unit(folder, position)
            await self.write(target, part, depth + 1)


def split_changes(index: Index, changes: StateChanges) -> list[tuple[int, StateChanges]]:
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
