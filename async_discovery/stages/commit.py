"""The commit stage: state units loaded, the run's changes, the conditional write.

A unit (the single state object, one folder's shard, or one range of a split folder) is
loaded before its first
candidate is decided and written at most once, with ``If-Match`` the ETag it was loaded
with (``If-None-Match: *`` when none existed); when another run wrote meanwhile
(``StateConflict``), the fresh object is reloaded, this run's changes merged in, and the
write retried (bounded, jittered). An object that would be larger than
``STATE_MAX_BYTES`` is never written: :class:`~.units.StateBudget` stops a run from
recording more than fits, and the write checks the final size.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import anyio

from ..errors import StateConflict, StateCorrupt, StateError, StateMoved, StateTooLarge
from ..fingerprint import object_metadata
from ..messages import iso_utc
from ..ports import StateStore, StreamingStateStore
from ..ranges import WHOLE, Span
from ..resume import Pending, todo_of
from ..state import SHARD_VERSION, STATE_VERSION, State, StateChanges, apply, check_source
from ..state_codec import EncodedBody, StateDecoder, decode, encode
from .context import RunContext, backoff
from .plan import FirstRun, Job, Plan
from .units import StateBudget, Unit

MOVED = "moved_to"  # a range shard's forwarding body names where its keys went (.split)

log = logging.getLogger("async_discovery")

ENCODE_WHOLE_BELOW = 20_000  # entries (~3.5 MB encoded); see _save


class _CountingSink:
    """Feeds a decoder and counts the bytes of the state object as loaded."""

    def __init__(self, decoder: StateDecoder) -> None:
        self.decoder = decoder
        self.received = 0

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        self.decoder.feed(chunk)


async def load_state(
    ctx: RunContext, store: StateStore, *, version: int = STATE_VERSION, count: bool = True
) -> tuple[State | None, str | None, int]:
    """The decoded object, its ETag and size, or (None, None, 0) when it does not exist.

    A streaming store feeds the decoder as the object arrives: the raw bytes are as
    large as the decoded state, so they are never held whole next to it. ``count``:
    add it to the objects read (False when its head was read and counted already).
    """
    name, max_bytes = store.name, ctx.config.state_max_bytes
    if isinstance(store, StreamingStateStore):
        sink = _CountingSink(StateDecoder(name=name, max_bytes=max_bytes, version=version))
        found, etag = await store.load_into(sink)
        state, size = (sink.decoder.close() if found else None), sink.received
    else:
        raw, etag = await store.load()
        found, size = raw is not None, len(raw or b"")
        state = decode(raw, name=name, max_bytes=max_bytes, version=version) if raw else None
    if found:
        count_read(ctx, size, count=count)
    return state, etag, size


def count_read(ctx: RunContext, size: int, *, count: bool = True) -> None:
    """A state object of ``size`` bytes was read (``count``: add it to the objects read)."""
    if count:
        ctx.stats.state_objects_read += 1
    ctx.stats.state_bytes = max(ctx.stats.state_bytes, size)


async def open_unit(ctx: RunContext, store: StateStore, *, folder: str | None = None) -> Unit:
    """Load a unit: the single state object (``folder`` None) or ``folder``'s shard.

    Raises a ``StateError`` for an object that cannot be used (corrupt, too large,
    bound to another source bucket) and a ``StorageError`` when S3 refuses the read.
    """
    version = STATE_VERSION if folder is None else SHARD_VERSION
    state, etag, size = await load_state(ctx, store, version=version)
    return unit_of(ctx, store, state, etag, size, folder)


def unit_of(
    ctx: RunContext,
    store: StateStore,
    state: State | None,
    etag: str | None,
    size: int,
    folder: str | None,
    span: Span | None = None,
    shard: str | None = None,
    *,
    forwarded_ok: bool = False,
) -> Unit:
    """The unit of an object as loaded (``state`` None: it does not exist yet): the
    single object (``folder`` None), a folder's shard (``span`` None) or one range.

    A shard that records another folder is refused (``h-<sha256>`` names can meet a
    folder literally so named), and a range shard another run has forwarded raises
    ``StateMoved`` (unless ``forwarded_ok``).
    """
    cfg = ctx.config
    if state is not None:
        check_source(state, cfg.source_bucket, name=store.name, force_rebind=cfg.force_rebind)
        recorded = state.extra.get("folder")
        if folder is not None and recorded is not None and recorded != folder:
            raise StateCorrupt(
                f"state object {store.name} records folder {recorded!r}, not {folder!r}"
            )
        if MOVED in state.extra and not forwarded_ok:
            raise StateMoved(f"state object {store.name} was split by another run")
    else:
        state = State(version=STATE_VERSION if folder is None else SHARD_VERSION)
        if folder is not None:
            state.extra = {"prefix": cfg.prefix, "folder": folder}
    budget = StateBudget(cfg.state_max_bytes, size)
    return Unit(store, state, etag, budget, folder, span or WHOLE, shard, ranged=span is not None)


async def save_state(
    ctx: RunContext, store: StateStore, state: State, etag: str | None
) -> tuple[int, str, dict[str, str]]:
    """One conditional write of ``state``; returns its size in bytes, its new ETag and
    the metadata written with it (a shard's fingerprint).

    A streaming store gets a body that encodes the state as it is read, so the
    encoded bytes (as large as the state) never exist whole next to it. A state of
    fewer than ``ENCODE_WHOLE_BELOW`` entries (a few MB: a shard, a small single object)
    is encoded once to bytes instead: streaming encodes it once per read of the body
    (its length, the checksum, the send).
    """
    updated_at = iso_utc(ctx.clock())
    metadata = object_metadata(state)
    if isinstance(store, StreamingStateStore) and len(state.files) >= ENCODE_WHOLE_BELOW:
        body = EncodedBody(state, updated_at)
        _check_size(ctx, store, len(body))
        new_etag = await store.save_stream(body, if_match=etag, metadata=metadata)
        return len(body), new_etag, metadata
    raw = encode(state, updated_at)
    _check_size(ctx, store, len(raw))
    new_etag = await store.save(raw, if_match=etag, metadata=metadata)
    return len(raw), new_etag, metadata


def _check_size(ctx: RunContext, store: StateStore, size: int) -> None:
    """The last guard against a state later runs refuse (the budget keeps a run well
    below the cap; a merge with a state another run grew meanwhile can still cross it)."""
    cap = ctx.config.state_max_bytes
    if size > cap:
        raise StateTooLarge(
            f"{store.name} would be {size} bytes, over STATE_MAX_BYTES={cap}: not written "
            "(the files sent by this run are sent again by the next); raise "
            "STATE_MAX_BYTES or split the state (STATE_LAYOUT=folders)"
        )


async def write_state(ctx: RunContext, unit: Unit, changes: StateChanges) -> None:
    """One conditional write; on conflict reload, merge, retry (bounded, jittered)."""
    cfg, store = ctx.config, unit.store
    base, etag = unit.state, unit.etag
    for attempt in range(1, cfg.state_write_attempts + 1):
        ctx.stats.state_write_attempts = max(ctx.stats.state_write_attempts, attempt)
        try:
            size, _, _ = await save_state(ctx, store, apply(base, changes), etag)
        except StateConflict as exc:
            log.warning(
                "state changed meanwhile: reload and merge",
                extra={"event": "state_conflict", "attempt": attempt, "error": str(exc)},
            )
            if attempt == cfg.state_write_attempts:
                raise
            await anyio.sleep(backoff(attempt))
            # The stale state is dropped before the fresh one is decoded.
            version, extra = base.version, base.extra
            base = unit.state = State()
            fresh, etag, _ = await load_state(ctx, store, version=version)
            base = unit.state = fresh if fresh is not None else State(version=version, extra=extra)
            # The writer that won may have bound the object to another bucket.
            check_source(base, cfg.source_bucket, name=store.name, force_rebind=cfg.force_rebind)
            continue
        ctx.stats.state_written = True
        ctx.stats.state_objects_written += 1
        ctx.stats.state_bytes = max(ctx.stats.state_bytes, size)
        log.info(
            "state written",
            extra={
                "event": "state_written",
                "object": store.name,
                "entries": len(base.files),
                "bytes": size,
                "attempts": attempt,
            },
        )
        return
    raise StateError("state write attempts exhausted")  # pragma: no cover


def run_changes(
    ctx: RunContext, unit: Unit, plan: Plan, cursor: dict[str, Any] | None, first: FirstRun | None
) -> StateChanges:
    """What this run changes in the single state object: accepted and marked entries,
    pruned keys, the prefix's cursor."""
    cfg, stats = ctx.config, ctx.stats
    changes = StateChanges(prefix=cfg.prefix, source_bucket=cfg.source_bucket, upserts=unit.upserts)
    if unit.unseen is not None and pass_complete(ctx):
        changes.removed = {key: unit.state.files[key].etag for key in unit.unseen}
        stats.pruned = len(changes.removed)
    changes.cursor = next_cursor(ctx, plan, cursor, first)
    return changes


def pass_complete(ctx: RunContext) -> bool:
    """The run listed and handled everything it planned, without error."""
    stats = ctx.stats
    return (
        not stats.truncated
        and ctx.fatal is None
        and stats.folder_errors == 0
        and all(listing.progress.complete for listing in ctx.listings)
    )


def next_cursor(
    ctx: RunContext, plan: Plan, cursor: dict[str, Any] | None, first: FirstRun | None
) -> dict[str, Any] | None:
    """The prefix's cursor after this run: None to leave it, ``{}`` to clear it."""
    stats = ctx.stats
    # A first pass under INITIAL_SCAN that did not complete (a failed folder, a fatal
    # error, files held back) also saves a cursor: the policy must outlive it, or the
    # next run would send what this one was meant to mark.
    unfinished_first = first is not None and (
        ctx.fatal is not None or stats.folder_errors > 0 or stats.held_back > 0
    )
    if stats.truncated or unfinished_first:
        if stats.held_back and not stats.truncated:
            # Files of finished folders went unrecorded: the first pass starts over.
            new = restart_cursor(plan.strategy)
        else:
            new = _cursor(ctx, plan, cursor)
        if first is not None:
            new["initial_scan"] = first.cursor_text()
        return new
    if cursor is not None and ctx.fatal is None:
        return {}  # the resumed pass is finished; next run starts afresh
    return None


def _cursor(ctx: RunContext, plan: Plan, cursor: dict[str, Any] | None) -> dict[str, Any]:
    """Where the next run of this pass continues (see :mod:`async_discovery.resume`)."""
    if plan.strategy == "flat":
        flat = [listing for listing in ctx.listings if listing.job.folder is None]
        start = flat[0].progress.start_after if flat else None
        if not flat and cursor is not None:
            start = cursor.get("start_after")
        return {"strategy": "flat", "start_after": start}
    rest = remaining(ctx, plan)
    new: dict[str, Any] = {
        "strategy": "folders",
        "pending": {job.folder: job.start_after for job in rest if job.folder is not None},
        "after_folder": plan.after_folder,
    }
    if plan.discovered_until is not None:
        new["discovered_until"] = plan.discovered_until
    return new


def remaining(ctx: RunContext, plan: Plan) -> list[Job]:
    """What this run planned and did not finish: the jobs not taken, and the rest of
    each listing that did not complete, from its last handled key (``whole`` when it
    stopped while its pages were held for a fingerprint: listed held again, it would be
    cut at the same place every time)."""
    jobs = list(plan.untaken)
    for listing in ctx.listings:
        if listing.progress.complete:
            continue
        job = listing.job
        jobs.append(
            dataclasses.replace(
                job, start_after=listing.progress.start_after, whole=job.whole or listing.held
            )
        )
    return jobs


def folders_cursor(
    ctx: RunContext, plan: Plan, cursor: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The folders layout's cursor after this run: None to leave it, ``{}`` to clear it.

    Only a run cut short by the deadline saves one. A run that completes its pass with
    a folder or range failing clears it like any other, so the next pass lists every
    folder again: the failing one fails alone, the others proceed. (The first-run
    policy needs no cursor to outlive a pass here: ``initial.json`` holds it.)
    """
    if not ctx.stats.truncated:
        return {} if cursor is not None and ctx.fatal is None else None
    parts = [
        Pending(job.folder, job.start_after, job.until, job.whole)
        for job in remaining(ctx, plan)
        if job.folder is not None
    ]
    new: dict[str, Any] = {
        "strategy": "folders",
        "todo": todo_of(_joined(parts)),
        "after_folder": plan.after_folder,
    }
    if plan.discovered_until is not None:
        new["discovered_until"] = plan.discovered_until
    return new


def _joined(parts: list[Pending]) -> list[Pending]:
    """Adjacent spans of one folder joined (the next run cuts them at the range bounds
    again), so the cursor stays small whatever the number of ranges."""
    joined: list[Pending] = []
    for part in sorted(parts, key=lambda p: (p.folder, p.after is not None, p.after or "")):
        last = joined[-1] if joined else None
        if (
            last is not None
            and last.folder == part.folder
            and not (last.whole or part.whole)
            and last.until is not None
            and last.until == part.after
        ):
            joined[-1] = Pending(part.folder, last.after, part.until)
        else:
            joined.append(part)
    return joined


def restart_cursor(strategy: str) -> dict[str, Any]:
    """A cursor that starts its pass over (and so keeps a first-run policy alive)."""
    if strategy == "flat":
        return {"strategy": "flat", "start_after": None}
    return {"strategy": "folders", "pending": {}, "after_folder": None}
