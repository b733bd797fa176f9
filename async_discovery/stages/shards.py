"""The ``folders`` state layout: a shard per folder, and the run objects beside them.

A folder job opens its shard while its first page is listed; the folder's candidates
are decided against it; once every page of the folder is settled the shard is written
(if it changed) and dropped, so memory follows the shards in flight, not the bucket.
A shard that cannot be read fails its folder only. The run objects under
``<state prefix>runs/<P>``: ``cursor.json`` (where a truncated pass continues) and
``initial.json`` (the first-run policy, fixed by the prefix's first run). See SPEC
"State layout `folders`" and :mod:`async_discovery.layout` for the keys.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from ..errors import DiscoveryError, StateConflict, StateCorrupt, StateError
from ..fingerprint import META_KEY
from ..layout import is_shard_of, runs_key, shard_key, shards_prefix
from ..messages import iso_utc
from ..ports import ObjectHead, StateObjects, StateStore, StreamingStateStore
from ..resume import cursor_problem
from ..settings import InitialScan
from ..state import SHARD_VERSION, StateChanges
from ..state_codec import decode, decode_head
from .commit import count_read, load_state, open_unit, unit_of, write_state
from .context import RunContext
from .plan import FirstRun, Job, Plan
from .units import Unit

log = logging.getLogger("async_discovery")

# A shard's first bytes read when its folder is listed from the start: the fields
# before "files" (a few hundred bytes as written here), or the whole of a small shard.
HEAD_BYTES = 16 * 1024
# The field of a shard the event path created under a first-run policy: the folder has
# not been listed since, so a scan still marks (not sends) what it finds older.
FIRST_PASS = "initial_scan"


class Shards:
    """The shards and run objects of one run over prefix ``config.prefix``."""

    def __init__(self, ctx: RunContext, objects: StateObjects) -> None:
        self.ctx = ctx
        self.objects = objects
        cfg = ctx.config
        self.state_prefix, self.prefix = cfg.state_prefix, cfg.prefix
        self.first: FirstRun | None = None
        # Folders that settled while every committer was busy: complete, written last.
        self.settled_late: set[str] = set()

    def _run_object(self, name: str) -> StateStore:
        return self.objects.store(runs_key(self.state_prefix, self.prefix, name))

    # -- per folder ------------------------------------------------------------------

    async def open(self, job: Job) -> Unit:
        """Load ``job``'s folder's shard and register it (raises when unusable).

        A folder listed from its start reads only the shard's first bytes: all of a
        small shard; of a larger one with a fingerprint, its head (the files are read
        by :meth:`settle` only if the folder's listing does not match it)."""
        ctx, folder = self.ctx, job.folder
        assert folder is not None
        store = self.objects.store(shard_key(self.state_prefix, self.prefix, folder))
        if job.start_after is None and isinstance(store, StreamingStateStore):
            unit = self._from_head(store, folder, await store.load_head(HEAD_BYTES))
            if unit is None:  # the head was not enough: read the whole shard
                unit = await self._read_whole(store, folder)
        else:
            unit = await open_unit(ctx, store, folder=folder)
        self._prepare(unit, whole_listing=job.start_after is None)
        ctx.shards[folder] = unit
        return unit

    async def open_for(self, folder: str, key: str) -> Unit:
        """The unit recording ``key`` of ``folder`` (its shard, read whole), loaded once
        per run (raises as :meth:`open`): the event path's one way from a key to its
        unit. A shard it creates under a first-run policy carries :data:`FIRST_PASS`."""
        unit = self.ctx.shards.get(folder)
        if unit is None:
            store = self.objects.store(shard_key(self.state_prefix, self.prefix, folder))
            unit = await open_unit(self.ctx, store, folder=folder)
            self._prepare(unit, whole_listing=False)
            if self.first is not None and not unit.existed:
                unit.state.extra[FIRST_PASS] = self.first.cursor_text()
            self.ctx.shards[folder] = unit
        return unit

    def _from_head(self, store: StateStore, folder: str, head: ObjectHead | None) -> Unit | None:
        """The unit from the shard's first ``HEAD_BYTES``; None when the whole shard must
        be read (no fingerprint, fields after ``files``, another source bucket)."""
        ctx, cfg = self.ctx, self.ctx.config
        if head is None:
            return unit_of(ctx, store, None, None, 0, folder)
        count_read(ctx, head.size)
        if head.size <= len(head.data):  # a small shard: read whole
            state = decode(head.data, name=store.name, version=SHARD_VERSION)
            return unit_of(ctx, store, state, head.etag, head.size, folder)
        expected = head.metadata.get(META_KEY)
        fields = decode_head(head.data, name=store.name, version=SHARD_VERSION)
        if expected is None or fields is None or fields.source_bucket != cfg.source_bucket:
            return None
        unit = unit_of(ctx, store, fields, head.etag, head.size, folder)
        unit.expected = expected
        return unit

    async def settle(self, unit: Unit, fingerprint: str | None) -> None:
        """A shard opened by its head, once its folder's listing is known: verified
        when ``fingerprint`` (of the listing) is the shard's, else its files are read
        (``fingerprint`` None: the listing was too long to hold). Raises as :meth:`open`."""
        if fingerprint is not None and fingerprint == unit.expected:
            unit.verified = True
            self.ctx.stats.state_objects_verified += 1
            return
        assert unit.folder is not None
        loaded = await self._read_whole(unit.store, unit.folder)
        unit.state, unit.etag, unit.budget = loaded.state, loaded.etag, loaded.budget
        unit.expected = None
        self._prepare(unit, whole_listing=True)

    async def _read_whole(self, store: StateStore, folder: str) -> Unit:
        """The unit of a shard whose head was read (and counted) already."""
        state, etag, size = await load_state(self.ctx, store, version=SHARD_VERSION, count=False)
        return unit_of(self.ctx, store, state, etag, size, folder)

    def _prepare(self, unit: Unit, *, whole_listing: bool) -> None:
        """The first-run policy of a new folder; what a listing from its start prunes."""
        if unit.head_only:
            return
        if self.first is not None and (not unit.existed or FIRST_PASS in unit.state.extra):
            unit.mark_before = self.first.mark_before  # a folder new since the first run
        if self.ctx.config.prune_missing and whole_listing:
            unit.unseen = set(unit.state.files)  # listed from its start: may prune

    async def commit(self, folder: str, *, complete: bool) -> bool:
        """Write ``folder``'s shard if this run changed it, and drop it from memory;
        False when the write failed (the run is then failed too).

        ``complete``: every page of the folder was listed and settled, so entries not
        listed are gone from S3 and are pruned (``PRUNE_MISSING``).
        """
        ctx = self.ctx
        unit = ctx.shards.pop(folder, None)
        if unit is None or unit.head_only:
            return True  # unchanged by its fingerprint, or cut short before it was read
        cfg = ctx.config
        changes = StateChanges(
            prefix=cfg.prefix, source_bucket=cfg.source_bucket, upserts=unit.upserts
        )
        if complete and unit.unseen:
            changes.removed = {key: unit.state.files[key].etag for key in unit.unseen}
            ctx.stats.pruned += len(changes.removed)
        rebind = unit.existed and unit.state.source_bucket != cfg.source_bucket
        if cfg.dry_run or (changes.is_empty() and not rebind):
            return True
        try:
            await write_state(ctx, unit, changes)
        except DiscoveryError as exc:
            log.error("shard write failed", extra={"event": "state_write_error", "folder": folder})
            ctx.fail(StateError(f"state write failed: {exc}"))
            return False
        return True

    async def commit_rest(self) -> None:
        """Write the shards still held: folders that settled late, and folders cut
        short (no pruning there)."""
        for folder in list(self.ctx.shards):
            await self.commit(folder, complete=folder in self.settled_late)

    async def prune_vanished(self, plan: Plan) -> None:
        """Delete the shards of folders no longer under the prefix (after a complete
        discovery and a complete run; skipped folders' shards are never touched)."""
        ctx, cfg = self.ctx, self.ctx.config
        if not (cfg.prune_missing and plan.discovery_complete) or cfg.dry_run:
            return
        names = plan.seen | cfg.skip_folders
        keep = {shard_key(self.state_prefix, self.prefix, f) for f in names}
        head = shards_prefix(self.state_prefix, self.prefix)
        for key in await self.objects.keys(head):
            if is_shard_of(key, self.state_prefix, self.prefix) and key not in keep:
                await self.objects.delete(key)
                ctx.stats.state_objects_deleted += 1
                log.info("shard of a vanished folder deleted", extra={"event": "shard_pruned"})

    # -- the run objects -------------------------------------------------------------

    async def load_cursor(self) -> tuple[dict[str, Any] | None, str | None]:
        """The saved cursor of the prefix and the ETag of its object."""
        store = self._run_object("cursor.json")
        doc, etag = await _read(store)
        if doc is None:
            return None, None
        cursor = doc.get("cursor")
        problem = cursor_problem(cursor)
        if problem is not None:
            raise StateCorrupt(f"state object {store.name}: the cursor {problem}")
        assert isinstance(cursor, dict)
        return cursor, etag

    async def save_cursor(self, cursor: dict[str, Any] | None, etag: str | None) -> None:
        """Write (a dict), delete (``{}``) or leave (None) the prefix's cursor object."""
        cfg = self.ctx.config
        if cursor is None or cfg.dry_run or cfg.folders is not None:
            return  # fan-out children share the prefix: the execution is the pass
        store = self._run_object("cursor.json")
        if not cursor:
            await self.objects.delete(runs_key(self.state_prefix, self.prefix, "cursor.json"))
            self.ctx.stats.state_objects_deleted += 1
            return
        doc = {"version": SHARD_VERSION, "prefix": self.prefix, "cursor": cursor}
        await _write(store, doc, etag, last_writer_wins=True)

    async def first_run(self, started: datetime) -> FirstRun | None:
        """The first-run policy of the prefix, fixed (``initial.json``) by its first run:
        the run that finds no shard of the prefix."""
        policy = self.ctx.config.initial_scan
        if policy.mode == "all":
            return None
        store = self._run_object("initial.json")
        doc, _ = await _read(store)
        if doc is None:
            head = shards_prefix(self.state_prefix, self.prefix)
            keys = await self.objects.keys(head)
            if any(is_shard_of(k, self.state_prefix, self.prefix) for k in keys):
                return None  # shards exist but no policy was fixed: not a first run
            since = policy.since or started.replace(microsecond=0)
            doc = {"version": SHARD_VERSION, "prefix": self.prefix}
            doc["initial_scan"] = "since:" + iso_utc(since)
            if not self.ctx.config.dry_run:
                try:
                    await _write(store, doc, None)
                except StateConflict:  # another run (a fan-out child) fixed it first
                    doc, _ = await _read(store)
        self.first = _policy_of(doc, store.name)
        return self.first


def _policy_of(doc: dict[str, Any] | None, name: str) -> FirstRun:
    text = doc.get("initial_scan") if doc else None
    since: datetime | None = None
    if isinstance(text, str) and text.startswith("since:"):
        try:
            since = datetime.fromisoformat(text[len("since:") :].replace("Z", "+00:00"))
        except ValueError:
            since = None
    if since is None or since.tzinfo is None:
        raise StateCorrupt(f"state object {name}: initial_scan {text!r} is not since:<instant>")
    return FirstRun(InitialScan(mode="since", since=since), since)


async def _read(store: StateStore) -> tuple[dict[str, Any] | None, str | None]:
    raw, etag = await store.load()
    if raw is None:
        return None, None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or doc.get("version") != SHARD_VERSION:
        raise StateCorrupt(f"state object {store.name} is not a version 2 JSON object")
    return doc, etag


async def _write(
    store: StateStore, doc: dict[str, Any], etag: str | None, *, last_writer_wins: bool = False
) -> None:
    body = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        await store.save(body, if_match=etag)
    except StateConflict:
        if not last_writer_wins:
            raise
        _, fresh = await store.load()  # another run's cursor: this run's is newer
        await store.save(body, if_match=fresh)
