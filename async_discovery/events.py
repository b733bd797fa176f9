"""The event path: one batch of S3 notifications through the scan's stages.

SPEC "Events". Where a scan produces candidates from a listing, a batch produces them
from notifications, then hands them to the same decide, send and commit stages:

1. **parse**: each record's body (:mod:`async_discovery.notifications`); a body that is
   not JSON or not a notification fails its record;
2. **select**: the discovery rule, one candidate per key however many events name it
   (a file written twice, a record delivered twice);
3. **head**: ``HeadObject`` per candidate, so what is decided and sent is the object's
   *current* version: an event for an overwritten version sends the current one, a
   deleted object sends nothing;
4. **open**: each candidate's state unit, once per batch (the single object, or the
   shard :meth:`Shards.open_for <async_discovery.stages.shards.Shards.open_for>` maps
   the key to);
5. **decide and send**: the candidates in event order, as pages of one unit each,
   through the scan's decider and senders (same :func:`decide`, same message and
   ``id``, ``Failed`` entries retried, FIFO groups);
6. **commit**: each changed unit written once, with the scan's conditional write
   (reload, merge and retry on a conflict): a batch of n events for one folder is at
   most one write of it.

A record is delivered again (``batchItemFailures``) when its body is bad, or a
candidate it names could not be read, decided, sent or recorded; the others count as
handled, including candidates deferred by ``MIN_OBJECT_AGE_SECONDS`` (the scan takes
them) and deleted objects.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio

from .config import Config
from .deadline import Deadline
from .errors import DiscoveryError, StateConflict
from .messages import iso_utc
from .models import ListedObject
from .notifications import Candidate, SqsRecord, parse_record, select
from .pipeline import check_ports, decide_and_send
from .ports import ObjectHeads, Sender, StateObjects, StateStore
from .resume import ListingProgress
from .stages.commit import open_unit, restart_cursor, write_state
from .stages.context import RunContext
from .stages.decide import Action, Decision, Tally
from .stages.plan import FirstRun, Job
from .stages.runs import RunObjects
from .stages.shards import Shards
from .stages.units import Listing, Page, Unit
from .state import State, StateChanges, apply
from .state_codec import encode
from .summary import EventStats, RunStats

__all__ = ["EventBatch"]

log = logging.getLogger("async_discovery")

T = TypeVar("T")
_LATEST = datetime.max.replace(tzinfo=UTC)


class _Decisions(Tally):
    """The run's tally, keeping each candidate's decision by key."""

    def __init__(self, stats: RunStats, *, dry_run: bool) -> None:
        super().__init__(stats, dry_run=dry_run)
        self.by_key: dict[str, Decision] = {}

    def decided(self, obj: ListedObject, decision: Decision) -> None:
        self.by_key[obj.key] = decision
        super().decided(obj, decision)


class EventBatch:
    """One batch of event records. Construct with the ports, call :meth:`run` once, read
    :attr:`stats` and :attr:`events`. ``store`` is the single state object; ``objects``
    the state prefix (``STATE_LAYOUT=folders``)."""

    def __init__(
        self,
        config: Config,
        heads: ObjectHeads,
        store: StateStore,
        sender: Sender | None,
        *,
        objects: StateObjects | None = None,
        stats: RunStats | None = None,
        deadline: Deadline | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        check_ports(config, sender, objects)
        self.heads, self.store, self.sender = heads, store, sender
        self.stats = stats if stats is not None else RunStats()
        self.events = EventStats()
        self.tally = _Decisions(self.stats, dry_run=config.dry_run)
        self.ctx = RunContext(config, self.stats, self.tally, deadline or Deadline(), clock)
        folders = objects if config.state_layout == "folders" else None
        self.shards = Shards(self.ctx, folders) if folders is not None else None
        self.runs = RunObjects(self.ctx, folders) if folders is not None else None
        self._failed: set[str] = set()

    async def run(self, records: Sequence[Mapping[str, Any] | SqsRecord]) -> list[str]:
        """Handle the batch; return the message ids to deliver again, in record order."""
        cfg = self.ctx.config
        parsed = [parse_record(record) for record in records]
        self.events.records = len(parsed)
        for record in parsed:
            if record.problem is not None:
                log.error(
                    "unreadable record", extra={"event": "bad_record", "error": record.problem}
                )
                self._failed.add(record.message_id)
        candidates, ignored = select(
            parsed, bucket=cfg.source_bucket, prefix=cfg.prefix, skip_folders=cfg.skip_folders
        )
        self.stats.ignored.update(ignored)
        current, units = await self._read(candidates)
        self.events.state_units = len({id(unit) for unit in units.values()})
        await self._decide_and_send(candidates, current, units)
        await self._commit(candidates, units)
        self.ctx.tally.close()
        failed = list(dict.fromkeys(p.message_id for p in parsed if p.message_id in self._failed))
        self.events.failed_records = len(failed)
        return failed

    def _fail(self, candidate: Candidate, why: str) -> None:
        self._failed.update(candidate.records)  # delivered again
        log.error(why, extra={"event": "event_failed", "key": candidate.key})

    async def _current(self, candidates: Mapping[str, Candidate]) -> dict[str, ListedObject]:
        """Each candidate's current version (``HeadObject``); deleted ones left out."""
        found: dict[str, ListedObject] = {}

        async def head(candidate: Candidate) -> None:
            try:
                obj = await self.heads.head(candidate.key)
            except DiscoveryError as exc:
                self._fail(candidate, f"object not read: {exc}")
                return
            if obj is None:
                self.events.deleted += 1
                return
            if candidate.etags - {obj.etag}:
                self.events.superseded += 1  # an event named a version since overwritten
            found[candidate.key] = obj

        await _each(candidates.values(), self.ctx.config.workers, head)
        return found

    async def _read(
        self, candidates: Mapping[str, Candidate]
    ) -> tuple[dict[str, ListedObject], dict[str, Unit]]:
        """Each candidate's current version and its state unit (none for a deleted one).

        Both are read at once (the unit of an object found deleted is then read for
        nothing, which is rare), except under a first-run policy: there the oldest
        current version may fix the policy's instant, so the units are read after.
        """
        now = self.ctx.clock()
        if self.ctx.config.initial_scan.mode != "all":
            current = await self._current(candidates)
            # The first-run instant when this batch is the prefix's first run: its files
            # are the first to arrive, every older one existed before (INITIAL_SCAN).
            started = min([now, *(obj.last_modified for obj in current.values())])
            units, unusable = await self._units(candidates, list(current), started)
        else:
            current, units, unusable = {}, {}, {}

            async def heads() -> None:
                current.update(await self._current(candidates))

            async def states() -> None:
                opened, failed = await self._units(candidates, list(candidates), now)
                units.update(opened)
                unusable.update(failed)

            async with anyio.create_task_group() as tg:
                tg.start_soon(heads)
                tg.start_soon(states)
        for key, why in unusable.items():
            if key in current:
                self._fail(candidates[key], why)
        return current, {key: unit for key, unit in units.items() if key in current}

    async def _units(
        self, candidates: Mapping[str, Candidate], keys: list[str], started: datetime
    ) -> tuple[dict[str, Unit], dict[str, str]]:
        """The state unit of each of ``keys``, each unit loaded once, and why the keys
        whose unit cannot be loaded have none."""
        units: dict[str, Unit] = {}
        unusable: dict[str, str] = {}
        if not keys:
            return units, unusable
        try:
            if self.shards is None:
                unit = await open_single(self.ctx, self.store, started)
                return dict.fromkeys(keys, unit), unusable
            assert self.runs is not None
            self.shards.first = await self.runs.first_run(started)
        except DiscoveryError as exc:
            return units, dict.fromkeys(keys, f"state unusable: {exc}")
        shards = self.shards
        by_folder: dict[str, list[str]] = {}
        for key in sorted(keys):
            by_folder.setdefault(candidates[key].folder, []).append(key)

        async def open_folder(keys: list[str]) -> None:
            for index, key in enumerate(keys):
                try:
                    units[key] = await shards.open_for(candidates[key].folder, key)
                except DiscoveryError as exc:
                    unusable.update(dict.fromkeys(keys[index:], f"state unusable: {exc}"))
                    return

        await _each(by_folder.values(), self.ctx.config.workers, open_folder)
        return units, unusable

    async def _decide_and_send(
        self,
        candidates: Mapping[str, Candidate],
        current: Mapping[str, ListedObject],
        units: Mapping[str, Unit],
    ) -> None:
        """Every candidate with a unit through the decide and send stages, in event
        order (a FIFO group keeps it; :func:`_pages`); then each one's outcome."""
        chosen = [(candidates[key], obj) for key, obj in current.items() if key in units]
        chosen.sort(key=lambda pair: (pair[0].event_time or _LATEST, pair[0].key))
        pages_in, pages_out = anyio.create_memory_object_stream[Page](1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(decide_and_send, self.ctx, self.sender, pages_out)
            async with pages_in:
                for page in _pages([(c.folder, obj, units[obj.key]) for c, obj in chosen]):
                    await pages_in.send(page)
        dry_run = self.ctx.config.dry_run
        for candidate, obj in chosen:
            decision = self.tally.by_key.get(obj.key)
            if decision is None:
                self._fail(candidate, "not decided: deadline reached or queue unusable")
            elif decision.action is Action.SEND and not dry_run:
                entry = units[obj.key].upserts.get(obj.key)
                if entry is None or entry.etag != obj.etag:
                    self._fail(candidate, "message not sent")
                elif candidate.event_time is not None:
                    sent = datetime.fromisoformat(entry.queued_at.replace("Z", "+00:00"))
                    lag = (sent - candidate.event_time).total_seconds()
                    self.events.lags.append(max(0.0, lag))

    async def _commit(self, candidates: Mapping[str, Candidate], units: Mapping[str, Unit]) -> None:
        """Write each unit the batch changed, once; a failed write fails the records of
        the files it would have recorded (they are sent again, with the same ``id``)."""
        distinct = list({id(unit): unit for unit in units.values()}.values())

        async def commit(unit: Unit) -> None:
            if not await write_unit(self.ctx, self.shards, unit):
                for key in unit.upserts:
                    if key in candidates:
                        self._fail(candidates[key], "state write failed")

        await _each(distinct, self.ctx.config.workers, commit)


async def write_unit(ctx: RunContext, shards: Shards | None, unit: Unit) -> bool:
    """One unit's conditional write, if the batch changed it; False when it failed."""
    if shards is not None and unit.folder is not None:
        return await shards.commit(unit)
    cfg = ctx.config
    if cfg.dry_run or not unit.upserts:
        return True
    changes = StateChanges(cfg.prefix, cfg.source_bucket, upserts=unit.upserts)
    try:
        await write_state(ctx, unit, changes)
    except DiscoveryError as exc:
        log.error("state write failed", extra={"event": "state_write_error", "error": str(exc)})
        return False
    return True


async def open_single(ctx: RunContext, store: StateStore, started: datetime) -> Unit:
    """The single state object, with the prefix's first-run policy as a scan has it.

    When the object does not exist and ``INITIAL_SCAN`` is not ``all``, this batch is
    the prefix's first run: it creates the object with the policy in the prefix's
    cursor first, so the next scan still marks (not sends) what existed before.
    """
    cfg = ctx.config
    unit = ctx.single = await open_unit(ctx, store)
    cursor = unit.state.cursors.get(cfg.prefix) or None
    first = FirstRun.of(cfg, first=not unit.existed, cursor=cursor, started=started)
    if first is not None and not unit.existed:
        strategy = "flat" if cfg.list_strategy == "flat" else "folders"
        policy = {**restart_cursor(strategy), "initial_scan": first.cursor_text()}
        changes = StateChanges(cfg.prefix, cfg.source_bucket, cursor=policy)
        body = encode(apply(State(), changes), iso_utc(ctx.clock()))
        with contextlib.suppress(StateConflict):  # another run created it: its stands
            await store.save(body, if_match=None)
        unit = ctx.single = await open_unit(ctx, store)
    unit.mark_before = first.mark_before if first is not None else None
    return unit


def _pages(chosen: Sequence[tuple[str, ListedObject, Unit]]) -> Iterable[Page]:
    """The chosen candidates as pages for the decider, in their order: a new page where
    the unit changes (the decider decides a page against one unit), so a folder's
    messages keep the batch's event order across its ranges too."""
    listings: dict[int, Listing] = {}
    run: list[tuple[str, ListedObject]] = []
    for index, (folder, obj, unit) in enumerate(chosen):
        run.append((folder, obj))
        if index + 1 < len(chosen) and chosen[index + 1][2] is unit:
            continue
        listing = listings.get(id(unit))
        if listing is None:
            listing = listings[id(unit)] = Listing(Job(folder), ListingProgress(), unit)
        seq = listing.progress.pages_listed
        listing.progress.listed(seq, None)
        yield Page(listing, seq, None, run, {}, 0)
        run = []


async def _each(items: Iterable[T], limit: int, work: Callable[[T], Awaitable[None]]) -> None:
    """``work`` on every item, at most ``limit`` at once: workers over one iterator,
    not a task per item (a batch may name thousands of files). The batch's reads
    (``HeadObject``, state units) and writes go ``WORKERS`` at a time: small requests,
    each its own object."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await work(item)

    async with anyio.create_task_group() as tg:
        for _ in range(limit):
            tg.start_soon(worker)
