"""The run objects of the folders layout, beside the shards under ``<state prefix>runs/<P>``.

- ``cursor.json``: where a truncated pass continues (:mod:`async_discovery.resume`).
- ``initial.json``: the first-run policy, fixed by the prefix's first run or plan.
- ``items/<id>.json``: how far a fan-out item got (a child cut short by the deadline);
  the next child given the same item continues from it, and removes it once the item
  is done.

Each is small JSON, version 2, read whole. See SPEC "State layout `folders`" and
:mod:`async_discovery.layout` for the keys.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from ..errors import StateConflict, StateCorrupt
from ..layout import is_shard_of, item_key, runs_key, shards_prefix
from ..messages import iso_utc
from ..ports import StateObjects, StateStore
from ..resume import Pending, cursor_problem, pending_from_cursor, todo_of
from ..settings import InitialScan
from ..state import SHARD_VERSION
from .context import RunContext
from .plan import FirstRun, Job


class RunObjects:
    """The run objects of one run over prefix ``config.prefix``."""

    def __init__(self, ctx: RunContext, objects: StateObjects) -> None:
        self.ctx = ctx
        self.objects = objects
        self.state_prefix, self.prefix = ctx.config.state_prefix, ctx.config.prefix

    def _store(self, name: str) -> StateStore:
        return self.objects.store(runs_key(self.state_prefix, self.prefix, name))

    # -- the cursor ----------------------------------------------------------------

    async def load_cursor(self) -> tuple[dict[str, Any] | None, str | None]:
        """The saved cursor of the prefix and the ETag of its object (raises
        ``StateCorrupt`` naming the object when it is not a folders-strategy cursor)."""
        store = self._store("cursor.json")
        doc, etag = await read_doc(store)
        if doc is None:
            return None, None
        cursor = doc.get("cursor")
        problem = cursor_problem(cursor)
        if problem is None and isinstance(cursor, dict) and cursor["strategy"] != "folders":
            problem = f"has strategy {cursor['strategy']!r}; this layout lists folder by folder"
        if problem is not None:
            raise StateCorrupt(f"state object {store.name}: the cursor {problem}")
        assert isinstance(cursor, dict)
        return cursor, etag

    async def save_cursor(self, cursor: dict[str, Any] | None, etag: str | None) -> None:
        """Write (a dict), delete (``{}``) or leave (None) the prefix's cursor object."""
        cfg = self.ctx.config
        if cursor is None or cfg.dry_run:
            return
        if not cursor:
            await self.objects.delete(runs_key(self.state_prefix, self.prefix, "cursor.json"))
            self.ctx.stats.state_objects_deleted += 1
            return
        doc = {"version": SHARD_VERSION, "prefix": self.prefix, "cursor": cursor}
        await write_doc(self._store("cursor.json"), doc, etag, last_writer_wins=True)

    # -- a fan-out item's progress ---------------------------------------------------

    def _item_store(self, job: Job) -> StateStore:
        return self.objects.store(item_key(self.state_prefix, self.prefix, item_id(job)))

    async def items_progress(self, items: list[Job]) -> dict[Job, tuple[list[Job], str | None]]:
        """For each fan-out item, the parts still to do (:meth:`item_progress`): one
        listing finds which items have progress at all, only those are read."""
        head = item_key(self.state_prefix, self.prefix, "")[: -len(".json")]
        found = await self.objects.keys(head)
        out: dict[Job, tuple[list[Job], str | None]] = {}
        for item in items:
            key = item_key(self.state_prefix, self.prefix, item_id(item))
            out[item] = await self.item_progress(item) if key in found else ([item], None)
        return out

    async def item_progress(self, job: Job) -> tuple[list[Job], str | None]:
        """The parts of fan-out item ``job`` still to do when a child before was cut
        short (``[job]`` when none was), and the ETag of the progress object."""
        store = self._item_store(job)
        doc, etag = await read_doc(store)
        if doc is None:
            return [job], None
        cursor = {"strategy": "folders", "todo": {job.folder: doc.get("todo")}}
        problem = cursor_problem(cursor)
        parts = pending_from_cursor(cursor) if problem is None else []
        if problem is not None or any(p.folder != job.folder for p in parts):
            raise StateCorrupt(f"state object {store.name}: not the progress of this item")
        return [Job(p.folder, p.after, p.until, p.whole) for p in parts], etag

    async def save_item_progress(
        self, job: Job, parts: list[Pending] | None, etag: str | None
    ) -> None:
        """Record what of item ``job`` is still to do (``parts``), or remove its progress
        once it is done (``[]``); None leaves it (the item failed: the next child starts
        where this one did)."""
        if parts is None or self.ctx.config.dry_run:
            return
        if not parts:
            if etag is not None:
                key = item_key(self.state_prefix, self.prefix, item_id(job))
                await self.objects.delete(key)
                self.ctx.stats.state_objects_deleted += 1
            return
        doc = {"version": SHARD_VERSION, "prefix": self.prefix, "item": item_of(job)}
        doc["todo"] = todo_of(parts)[str(job.folder)]
        await write_doc(self._item_store(job), doc, etag, last_writer_wins=True)

    # -- the first-run policy --------------------------------------------------------

    async def first_run(self, started: datetime) -> FirstRun | None:
        """The first-run policy of the prefix, fixed (``initial.json``) by its first run:
        the run that finds no shard of the prefix."""
        policy = self.ctx.config.initial_scan
        if policy.mode == "all":
            return None
        store = self._store("initial.json")
        doc, _ = await read_doc(store)
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
                    await write_doc(store, doc, None)
                except StateConflict:  # another run (a fan-out child) fixed it first
                    doc, _ = await read_doc(store)
        return _policy_of(doc, store.name)


def item_parts(item: Job, rest: list[Job]) -> list[Pending]:
    """The parts of ``rest`` (what a run did not finish) that belong to fan-out item
    ``item``: the same folder, within the item's keys."""
    parts: list[Pending] = []
    for job in rest:
        if job.folder != item.folder:
            continue
        if item.start_after is not None and (
            job.start_after is None or job.start_after < item.start_after
        ):
            continue
        if item.until is not None and (job.until is None or job.until > item.until):
            continue
        parts.append(Pending(str(job.folder), job.start_after, job.until, job.whole))
    return parts


def item_of(job: Job) -> dict[str, Any]:
    """A fan-out item as the plan writes it: ``{"folder": F}``, and for one range of a
    split folder its bounds, ``"after"`` and ``"until"``."""
    item: dict[str, Any] = {"folder": job.folder}
    if job.start_after is not None or job.until is not None:
        item.update(after=job.start_after, until=job.until)
    return item


def item_id(job: Job) -> str:
    """The name of a fan-out item's progress object: the SHA-256 of the item."""
    text = json.dumps(item_of(job), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


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


async def read_doc(store: StateStore) -> tuple[dict[str, Any] | None, str | None]:
    """A run object: a version 2 JSON object, and its ETag; (None, None) when absent."""
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


async def write_doc(
    store: StateStore, doc: dict[str, Any], etag: str | None, *, last_writer_wins: bool = False
) -> None:
    """Write a run object conditionally; ``last_writer_wins``: over another run's."""
    body = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        await store.save(body, if_match=etag)
    except StateConflict:
        if not last_writer_wins:
            raise
        _, fresh = await store.load()  # another run's: this run's is newer
        await store.save(body, if_match=fresh)
