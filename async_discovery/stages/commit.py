"""The commit stage: the state as loaded, the run's changes, the conditional write.

The state is loaded once before listing and written at most once at the end, with
``If-Match`` the ETag it was loaded with (``If-None-Match: *`` when none existed); when
another run wrote meanwhile (``StateConflict``), the fresh state is reloaded, this
run's changes merged in, and the write retried (bounded, jittered). A state that would
be larger than ``STATE_MAX_BYTES`` is never written: :class:`StateBudget` stops a run
from recording more than fits, and the write checks the final size.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio

from ..errors import StateConflict, StateError, StateTooLarge
from ..messages import iso_utc
from ..models import ListedObject
from ..ports import StateStore, StreamingStateStore
from ..state import FileEntry, State, StateChanges, apply, check_source
from ..state_codec import EncodedBody, StateDecoder, decode, encode
from .context import FLAT, RunContext, backoff
from .plan import FirstRun, Plan

log = logging.getLogger("async_discovery")

_HEADROOM = 1 << 20  # state bytes kept free for the cursor and top-level fields
# An entry as the codec writes it, less its three strings: ',\n ' + ': {"status": "queued",
# "etag": , "size": <up to 20 digits>, "folder": , "queued_at": "<ISO with µs>Z"}'.
_ENTRY_OVERHEAD = 140
_quoted = json.encoder.encode_basestring


def _entry_bytes(key: str, etag: str, folder: str) -> int:
    """One entry's size in the encoded state (an upper bound, within a few bytes)."""
    return _ENTRY_OVERHEAD + sum(
        len(_quoted(text).encode("utf-8", "surrogatepass")) for text in (key, etag, folder)
    )


class StateBudget:
    """How much the state may still grow before it reaches ``STATE_MAX_BYTES``.

    A state over the cap is one every later run refuses to load, so every file to
    record (sent or marked) first takes its entry's encoded size from this budget: the
    cap minus the state as loaded minus a headroom for the cursor and the top-level
    fields (5% of the cap, at most 1 MiB). Once it is spent no new file is sent or
    marked; those stay unrecorded, and a later run finds them again.
    """

    def __init__(self, cap: int, loaded_bytes: int) -> None:
        self.cap = cap
        self.room = cap - loaded_bytes - min(cap // 20, _HEADROOM)
        self.full = False

    def take(self, obj: ListedObject, folder: str, entry: FileEntry | None) -> bool:
        """Room for recording ``obj`` (replacing ``entry``); False once the state is full."""
        size = _entry_bytes(obj.key, obj.etag, folder)
        if entry is not None:
            size -= _entry_bytes(obj.key, entry.etag, entry.folder)
        if self.room - size < 0:
            if not self.full:
                self.full = True
                log.error("state full: no more files sent", extra={"event": "state_full"})
            return False
        self.room -= size
        return True


class _CountingSink:
    """Feeds a decoder and counts the bytes of the state object as loaded."""

    def __init__(self, decoder: StateDecoder) -> None:
        self.decoder = decoder
        self.received = 0

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        self.decoder.feed(chunk)


async def load_state(ctx: RunContext, store: StateStore) -> tuple[State | None, str | None]:
    """The decoded state and its ETag, or (None, None) when no state object exists.

    A streaming store feeds the decoder as the object arrives: the raw bytes are as
    large as the decoded state, so they are never held whole next to it.
    """
    name, max_bytes = store.name, ctx.config.state_max_bytes
    if isinstance(store, StreamingStateStore):
        sink = _CountingSink(StateDecoder(name=name, max_bytes=max_bytes))
        found, etag = await store.load_into(sink)
        ctx.stats.state_bytes = sink.received
        return (sink.decoder.close() if found else None), etag
    raw, etag = await store.load()
    ctx.stats.state_bytes = len(raw) if raw is not None else 0
    return (decode(raw, name=name, max_bytes=max_bytes) if raw is not None else None), etag


async def _save(ctx: RunContext, store: StateStore, state: State, etag: str | None) -> int:
    """One conditional write of ``state``; returns its size in bytes.

    A streaming store gets a body that encodes the state as it is read, so the
    encoded bytes (as large as the state) never exist whole next to it.
    """
    updated_at = iso_utc(ctx.clock())
    if isinstance(store, StreamingStateStore):
        body = EncodedBody(state, updated_at)
        _check_size(ctx, len(body))
        await store.save_stream(body, if_match=etag)
        return len(body)
    raw = encode(state, updated_at)
    _check_size(ctx, len(raw))
    await store.save(raw, if_match=etag)
    return len(raw)


def _check_size(ctx: RunContext, size: int) -> None:
    """The last guard against a state later runs refuse (the budget keeps a run well
    below the cap; a merge with a state another run grew meanwhile can still cross it)."""
    cap = ctx.config.state_max_bytes
    if size > cap:
        raise StateTooLarge(
            f"the state would be {size} bytes, over STATE_MAX_BYTES={cap}: not written "
            "(the files sent by this run are sent again by the next); raise "
            "STATE_MAX_BYTES or split the state (a separate S3_STATE_KEY per prefix)"
        )


async def write_state(
    ctx: RunContext, store: StateStore, changes: StateChanges, etag: str | None
) -> None:
    """One conditional write; on conflict reload, merge, retry (bounded, jittered)."""
    cfg = ctx.config
    base = ctx.loaded
    for attempt in range(1, cfg.state_write_attempts + 1):
        ctx.stats.state_write_attempts = attempt
        try:
            size = await _save(ctx, store, apply(base, changes), etag)
        except StateConflict as exc:
            log.warning(
                "state changed meanwhile: reload and merge",
                extra={"event": "state_conflict", "attempt": attempt, "error": str(exc)},
            )
            if attempt == cfg.state_write_attempts:
                raise
            await anyio.sleep(backoff(attempt))
            # The stale state is dropped before the fresh one is decoded.
            base = ctx.loaded = State()
            fresh, etag = await load_state(ctx, store)
            base = ctx.loaded = fresh if fresh is not None else State()
            # The writer that won may have bound the object to another bucket.
            check_source(base, cfg.source_bucket, name=store.name, force_rebind=cfg.force_rebind)
            continue
        ctx.stats.state_written = True
        ctx.stats.state_bytes = size
        log.info(
            "state written",
            extra={
                "event": "state_written",
                "entries": len(base.files),
                "bytes": size,
                "attempts": attempt,
            },
        )
        return
    raise StateError("state write attempts exhausted")  # pragma: no cover


def run_changes(
    ctx: RunContext, plan: Plan | None, cursor: dict[str, Any] | None, first: FirstRun | None
) -> StateChanges:
    """What this run changes: accepted and marked entries, pruned keys, the cursor."""
    cfg, stats = ctx.config, ctx.stats
    changes = StateChanges(prefix=cfg.prefix, source_bucket=cfg.source_bucket, upserts=ctx.upserts)
    complete = (
        plan is not None
        and not stats.truncated
        and ctx.fatal is None
        and stats.folder_errors == 0
        and all(p.complete for p in ctx.progress.values())
    )
    if ctx.unseen is not None and complete:
        changes.removed = {key: ctx.loaded.files[key].etag for key in ctx.unseen}
        stats.pruned = len(changes.removed)
    # A first pass under INITIAL_SCAN that did not complete (a failed folder, a fatal
    # error, files held back) also saves a cursor: the policy must outlive it, or the
    # next run would send what this one was meant to mark.
    unfinished_first = first is not None and (
        ctx.fatal is not None or stats.folder_errors > 0 or stats.held_back > 0
    )
    if plan is not None and (stats.truncated or unfinished_first):
        if stats.held_back and not stats.truncated:
            # Files of finished folders went unrecorded: the first pass starts over.
            changes.cursor = _restart(plan.strategy)
        else:
            changes.cursor = _cursor(ctx, plan, cursor)
        if first is not None:
            changes.cursor["initial_scan"] = first.cursor_text()
    elif cursor is not None and ctx.fatal is None:
        changes.cursor = {}  # the resumed pass is finished; next run starts afresh
    return changes


def _cursor(ctx: RunContext, plan: Plan, cursor: dict[str, Any] | None) -> dict[str, Any]:
    """Where the next run of this pass continues (see :mod:`async_discovery.resume`)."""
    if plan.strategy == "flat":
        flat = ctx.progress.get(FLAT)
        start = flat.start_after if flat is not None else None
        if flat is None and cursor is not None:
            start = cursor.get("start_after")
        return {"strategy": "flat", "start_after": start}
    pending: dict[str, str | None] = dict(plan.untaken)
    for folder, progress in ctx.progress.items():
        if not progress.complete:
            pending[folder] = progress.start_after
    new: dict[str, Any] = {
        "strategy": "folders",
        "pending": pending,
        "after_folder": plan.after_folder,
    }
    if plan.discovered_until is not None:
        new["discovered_until"] = plan.discovered_until
    return new


def _restart(strategy: str) -> dict[str, Any]:
    """A cursor that starts its pass over (and so keeps a first-run policy alive)."""
    if strategy == "flat":
        return {"strategy": "flat", "start_after": None}
    return {"strategy": "folders", "pending": {}, "after_folder": None}
