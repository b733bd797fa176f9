"""The scan pipeline: bounded streaming from listing to SQS, then one state write.

Shape (SPEC): listers stream classified pages into a bounded anyio memory stream;
``workers`` coroutines compare ETags with the loaded state and send batches of at most
ten; the coordinator (:meth:`Scanner.run`) waits for the task group to finish, merges
what the workers recorded and performs one conditional state write, reloading and
merging on a conflict. Memory for listing is bounded by ``queue_size`` pages (plus one
page per lister), whatever the bucket size; what grows with the bucket is only the
state itself and this run's accepted entries, which the write needs.

The pipeline talks to the outside only through :mod:`async_discovery.ports`; it never
imports an AWS library.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .changes import Change, detect
from .config import Config, InitialScan, parse_initial_scan
from .deadline import Deadline
from .discovery import Verdict, classify, folder_prefix
from .errors import DiscoveryError, ListingError, QueueError, StateConflict, StateError
from .messages import MAX_BATCH, build_outgoing, iso_utc
from .models import ListedObject, Outgoing, Page
from .ports import Lister, RawPage, Sender, StateStore, StreamingStateStore
from .resume import ListingProgress, folder_sort_key, pending_from_cursor
from .state import FileEntry, State, StateChanges, apply, check_source
from .state_codec import EncodedBody, StateDecoder, decode, encode
from .summary import RunStats

log = logging.getLogger("async_discovery")

Explain = Callable[[dict[str, Any]], None]
_FLAT = "\x00flat"  # progress key of the flat listing (no folder name can contain NUL)


class Scanner:
    """One run of the scanner over ``config.prefix``.

    Construct with the three adapters, call :meth:`run` once, read :attr:`stats` (live
    while running, for progress displays) and the returned error (None on success).
    """

    def __init__(
        self,
        config: Config,
        lister: Lister,
        store: StateStore,
        sender: Sender | None,
        *,
        stats: RunStats | None = None,
        deadline: Deadline | None = None,
        explain: Explain | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if sender is None and not config.dry_run:
            raise ValueError("a sender is required unless dry_run")
        self.config = config
        self.lister = lister
        self.store = store
        self.sender = sender
        self.stats = stats if stats is not None else RunStats()
        self.deadline = deadline or Deadline()
        # Every explain line passes through a tally, so the run can end with per-reason
        # counts ({"explain_counts": {action: {reason: n}}}).
        self._explain_sink = explain
        self._explain_counts: dict[str, Counter[str]] = {}
        self.explain: Explain | None = self._explained if explain is not None else None
        self.clock = clock
        self._started = clock()
        self._loaded = State()
        self._upserts: dict[str, FileEntry] = {}
        self._unseen: set[str] | None = None
        self._progress: dict[str, ListingProgress] = {}
        self._policy: InitialScan | None = None
        self._fatal: str | None = None
        self._task_group: TaskGroup | None = None
        self._after_folder: str | None = None
        self._untaken: dict[str, str | None] = {}
        self._resumed = False
        self._strategy = "folders"

    # -- coordinator ---------------------------------------------------------------

    async def run(self) -> str | None:
        """Run the scan; returns None on success or the error that makes it a 500."""
        cfg = self.config
        try:
            loaded, etag = await self._load_state()
            if loaded is not None:
                check_source(
                    loaded, cfg.source_bucket, name=self.store.name, force_rebind=cfg.force_rebind
                )
        except DiscoveryError as exc:
            log.error("state unusable", extra={"event": "state_error", "error": str(exc)})
            return str(exc)
        self._loaded = loaded if loaded is not None else State()
        cursor = self._loaded.cursors.get(cfg.prefix) or None
        self._resumed = cursor is not None
        if loaded is None:
            self._policy = cfg.initial_scan
        elif cursor and cursor.get("initial_scan"):
            # A first pass cut short by the deadline keeps its first-run policy.
            self._policy = parse_initial_scan(str(cursor["initial_scan"]), [])
        if self._policy is not None and self._policy.mode == "all":
            self._policy = None
        log.info(
            "scan start",
            extra={
                "event": "scan_start",
                "bucket": cfg.source_bucket,
                "prefix": cfg.prefix,
                "state_entries": len(self._loaded.files),
                "resumed": self._resumed,
                "dry_run": cfg.dry_run,
            },
        )

        try:
            jobs = await self._plan(cursor)
        except ListingError as exc:
            log.error("listing failed", extra={"event": "listing_error", "error": str(exc)})
            return str(exc)

        if cfg.prune_missing and not self._resumed:
            # Only keys that would be this scan's candidates: not other prefixes' keys,
            # not skipped folders (never listed), and not deeper keys, which belong to a
            # scan of a longer prefix sharing this state object (never enumerated here).
            self._unseen = {
                key
                for key in self._loaded.files
                if classify(key, cfg.prefix, cfg.skip_folders)[0] is Verdict.CANDIDATE
            }

        await self._stream(jobs)

        changes = self._changes(cursor)
        self._unseen = None  # copied into changes.removed; free it before the encode
        error = self._fatal
        if self._explain_sink is not None:
            counts = {action: dict(c) for action, c in sorted(self._explain_counts.items())}
            self._explain_sink({"explain_counts": counts})
        # Write even with nothing else to record when the state must say something new:
        # that a first run with a policy happened (or the next run would be a first run
        # again and mark what it should send), or which bucket it describes now.
        must_write = (loaded is None and self._policy is not None) or (
            loaded is not None and loaded.source_bucket != cfg.source_bucket
        )
        del loaded  # self._loaded alone holds the state, so a reload can drop it
        if not cfg.dry_run and (must_write or not changes.is_empty()):
            try:
                await self._write(changes, etag)
            except DiscoveryError as exc:
                log.error("state write failed", extra={"event": "state_write_error"})
                error = f"state write failed: {exc}" if error is None else error
        return error

    async def _plan(self, cursor: dict[str, Any] | None) -> list[tuple[str | None, str | None]]:
        """Decide the listing strategy; return the listing jobs (folder, start_after).

        A job with folder None is the flat listing of the whole prefix.
        """
        cfg = self.config
        if cursor and cursor.get("strategy") == "flat":
            self._strategy = "flat"
            start = cursor.get("start_after")
            return [(None, str(start) if start else None)]
        if cfg.list_strategy == "flat":
            self._strategy = "flat"
            return [(None, None)]
        folders: list[str] = []
        skipped: list[str] = []
        limit = cfg.folder_threshold if cfg.list_strategy == "auto" else None
        top_level: list[ListedObject] = []
        async with aclosing(self.lister.pages(cfg.prefix, delimiter=True)) as pages:
            async for raw in pages:
                for cp in raw.common_prefixes:
                    name = cp[len(cfg.prefix) :].rstrip("/")
                    if "/" in name or not name:
                        self.stats.count_ignored(Verdict.DEEP)
                    elif name in cfg.skip_folders:
                        skipped.append(cp)
                    else:
                        folders.append(name)
                top_level.extend(raw.objects)
                if limit is not None and len(folders) > limit:
                    log.info(
                        "many folders: flat listing",
                        extra={"event": "strategy", "strategy": "flat", "threshold": limit},
                    )
                    self._strategy = "flat"
                    return [(None, None)]
        # Top-level objects were listed once here; the folder listings never see them.
        self._account(self._classify(RawPage(top_level, []), None, 0))
        # A skipped folder is never listed: its common prefix counts once, as ignored.
        for cp in skipped:
            self.stats.count_ignored(Verdict.SKIPPED_FOLDER)
            if self.explain is not None:
                self.explain({"key": cp, "action": "ignore", "reason": "skipped-folder"})
        pending = pending_from_cursor(cursor)
        after = cursor.get("after_folder") if cursor else None
        self._after_folder = str(after) if after else None
        jobs: list[tuple[str | None, str | None]] = [
            (f, k) for f, k in pending.items() if f not in cfg.skip_folders
        ]
        for name in folders:
            if name in pending:
                continue
            if self._after_folder is not None and folder_sort_key(name) <= folder_sort_key(
                self._after_folder
            ):
                continue
            jobs.append((name, None))
        self._untaken = {f: k for f, k in jobs if f is not None}
        return jobs

    async def _stream(self, jobs: list[tuple[str | None, str | None]]) -> None:
        cfg = self.config
        send, recv = anyio.create_memory_object_stream[Page](cfg.queue_size)
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            async with recv:
                for _ in range(cfg.workers):
                    tg.start_soon(self._worker, recv.clone())
            async with send:
                tg.start_soon(self._feed, jobs, send.clone())
        self._task_group = None

    def _stopping(self) -> bool:
        if self.deadline.expired():
            if not self.stats.truncated:
                log.warning("deadline reached: stop listing", extra={"event": "deadline"})
            self.stats.truncated = True
            return True
        return False

    # -- producers -----------------------------------------------------------------

    async def _feed(
        self, jobs: list[tuple[str | None, str | None]], send: MemoryObjectSendStream[Page]
    ) -> None:
        """Hand listing jobs to ``list_concurrency`` listers, in S3 order."""
        job_send, job_recv = anyio.create_memory_object_stream[tuple[str | None, str | None]](0)
        async with send, anyio.create_task_group() as tg:
            async with job_recv:
                for _ in range(min(self.config.list_concurrency, max(len(jobs), 1))):
                    tg.start_soon(self._lister_loop, job_recv.clone(), send.clone())
            async with job_send:
                for folder, start_after in jobs:
                    if self._fatal is not None or self._stopping():
                        break
                    await job_send.send((folder, start_after))
                    # Taken by a lister: from now on its progress decides the cursor.
                    if folder is not None:
                        self._untaken.pop(folder, None)
                        if self._after_folder is None or folder_sort_key(folder) > folder_sort_key(
                            self._after_folder
                        ):
                            self._after_folder = folder

    async def _lister_loop(
        self,
        jobs: MemoryObjectReceiveStream[tuple[str | None, str | None]],
        send: MemoryObjectSendStream[Page],
    ) -> None:
        async with jobs, send:
            async for folder, start_after in jobs:
                await self._list(folder, start_after, send)

    async def _list(
        self, folder: str | None, start_after: str | None, send: MemoryObjectSendStream[Page]
    ) -> None:
        cfg = self.config
        progress = ListingProgress(start_after=start_after)
        self._progress[_FLAT if folder is None else folder] = progress
        prefix = cfg.prefix if folder is None else folder_prefix(cfg.prefix, folder)
        seq = 0
        if self._fatal is not None or self._stopping():
            return  # taken just as the run stopped: stays pending from start_after
        try:
            async with aclosing(
                self.lister.pages(prefix, delimiter=folder is not None, start_after=start_after)
            ) as pages:
                async for raw in pages:
                    page = self._classify(raw, folder, seq)
                    progress.listed(seq, page.last_key)
                    await send.send(page)
                    seq += 1
                    if self._stopping():
                        return
            progress.listing_finished = True
        except ListingError as exc:
            progress.failed = True
            if folder is None:
                self._fatal = f"the prefix could not be listed: {exc}"
            else:
                self.stats.folder_errors += 1
            log.error(
                "listing failed",
                extra={"event": "listing_error", "folder": folder, "error": str(exc)},
            )

    def _classify(self, raw: RawPage, folder: str | None, seq: int) -> Page:
        cfg = self.config
        candidates: list[tuple[str, ListedObject]] = []
        ignored: Counter[Verdict] = Counter()
        explained: list[tuple[str, Verdict]] = []
        explain = self.explain is not None
        prefix, skip = cfg.prefix, cfg.skip_folders
        for obj in raw.objects:
            verdict, name = classify(obj.key, prefix, skip)
            if verdict is Verdict.CANDIDATE:
                candidates.append((name, obj))
            else:
                ignored[verdict] += 1
                if explain:
                    explained.append((obj.key, verdict))
        for cp in raw.common_prefixes:
            # A deeper level rolled up by the delimiter: never enumerated, counted once.
            ignored[Verdict.DEEP] += 1
            if explain:
                explained.append((cp, Verdict.DEEP))
        last = raw.objects[-1].key if raw.objects else None
        if raw.common_prefixes and (last is None or raw.common_prefixes[-1] > last):
            last = raw.common_prefixes[-1]
        return Page(
            folder=folder,
            seq=seq,
            last_key=last,
            candidates=candidates,
            ignored=dict(ignored),
            listed=len(raw.objects),
            explained=explained,
        )

    def _explained(self, doc: dict[str, Any]) -> None:
        counts = self._explain_counts.setdefault(str(doc["action"]), Counter())
        counts[str(doc["reason"])] += 1
        assert self._explain_sink is not None
        self._explain_sink(doc)

    def _account(self, page: Page) -> None:
        self.stats.listed += page.listed
        for verdict, n in page.ignored.items():
            self.stats.count_ignored(verdict, n)
        if self.explain is not None:
            for key, verdict in page.explained:
                self.explain({"key": key, "action": "ignore", "reason": verdict.value})

    # -- workers -------------------------------------------------------------------

    async def _worker(self, pages: MemoryObjectReceiveStream[Page]) -> None:
        pending: list[Outgoing] = []
        async with pages:
            async for page in pages:
                if self._fatal is not None or self._stopping():
                    continue  # not handled: the cursor stays before this page
                self._account(page)
                for folder, obj in page.candidates:
                    out = self._consider(folder, obj)
                    if out is not None:
                        pending.append(out)
                        if len(pending) >= MAX_BATCH:
                            batch, pending = pending, []
                            await self._flush(batch)
                self._progress[_FLAT if page.folder is None else page.folder].handled(page.seq)
        if pending:
            # In-flight work is finished even past the deadline: these were handed off.
            with anyio.CancelScope(shield=self._fatal is None):
                await self._flush(pending)

    def _consider(self, folder: str, obj: ListedObject) -> Outgoing | None:
        """Decide one candidate: skip, defer, mark, or return the message to send."""
        stats, cfg = self.stats, self.config
        stats.candidates += 1
        if self._unseen is not None:
            self._unseen.discard(obj.key)
        entry = self._loaded.files.get(obj.key)
        change = detect(obj.etag, entry.etag if entry is not None else None)
        if change is Change.UNCHANGED:
            stats.skipped += 1
            if self.explain is not None:
                self.explain(
                    {"key": obj.key, "action": "skip", "reason": "unchanged", "etag": obj.etag}
                )
            return None
        if cfg.min_object_age_seconds > 0:
            age = (self.clock() - obj.last_modified).total_seconds()
            if age < cfg.min_object_age_seconds:
                stats.deferred += 1
                if self.explain is not None:
                    self.explain(
                        {
                            "key": obj.key,
                            "action": "defer",
                            "reason": "min-age",
                            "age_seconds": round(age, 3),
                            "min_age_seconds": cfg.min_object_age_seconds,
                        }
                    )
                return None
        policy = self._policy
        if policy is not None and (
            policy.mode == "mark-existing"
            or (policy.since is not None and obj.last_modified < policy.since)
        ):
            stats.marked += 1
            if self.explain is not None:
                self.explain(
                    {
                        "key": obj.key,
                        "action": "mark",
                        "reason": "initial-scan",
                        "policy": str(policy),
                        "etag": obj.etag,
                    }
                )
            if not cfg.dry_run:
                self._upserts[obj.key] = FileEntry(
                    obj.etag, obj.size, folder, iso_utc(self.clock()), "marked"
                )
            return None
        previous = entry.etag if entry is not None else None
        if self.explain is not None:
            self.explain(
                {
                    "key": obj.key,
                    "action": "send",
                    "reason": change.value,
                    "etag": obj.etag,
                    "previous_etag": previous,
                }
            )
        if cfg.dry_run:
            stats.queued += 1
            self._count_event(change.value)
            return None
        return build_outgoing(cfg.source_bucket, obj, folder, change.value, previous)

    def _count_event(self, event: str) -> None:
        if event == "new":
            self.stats.new += 1
        else:
            self.stats.updated += 1

    async def _flush(self, batch: Sequence[Outgoing]) -> None:
        """Send one batch; re-send only retryable failed entries, with jittered backoff."""
        assert self.sender is not None
        to_send = list(batch)
        attempt = 0
        while to_send:
            attempt += 1
            try:
                result = await self.sender.send_batch(to_send)
            except QueueError as exc:
                if self._fatal is None:
                    self._fatal = str(exc)
                    log.error("queue unusable", extra={"event": "queue_error", "error": str(exc)})
                self.stats.errors += len(to_send)
                if self._task_group is not None:
                    self._task_group.cancel_scope.cancel()
                return
            if result.accepted:
                at = iso_utc(self.clock())
                for out in result.accepted:
                    obj = out.obj
                    self._upserts[obj.key] = FileEntry(obj.etag, obj.size, out.folder, at)
                    self.stats.queued += 1
                    self._count_event(out.event)
            for out, reason in result.rejected:
                self.stats.errors += 1
                log.error(
                    "message refused",
                    extra={"event": "send_failed", "key": out.obj.key, "reason": reason},
                )
            to_send = [out for out, _ in result.retryable]
            if to_send and attempt >= self.config.send_attempts:
                for out, reason in result.retryable:
                    self.stats.errors += 1
                    log.error(
                        "message failed after retries",
                        extra={
                            "event": "send_failed",
                            "key": out.obj.key,
                            "reason": reason,
                            "attempts": attempt,
                        },
                    )
                return
            if to_send:
                await anyio.sleep(backoff(attempt))

    # -- state write ---------------------------------------------------------------

    def _changes(self, cursor: dict[str, Any] | None) -> StateChanges:
        cfg, stats = self.config, self.stats
        changes = StateChanges(
            prefix=cfg.prefix, source_bucket=cfg.source_bucket, upserts=self._upserts
        )
        complete = (
            not stats.truncated
            and self._fatal is None
            and stats.folder_errors == 0
            and all(p.complete for p in self._progress.values())
        )
        if self._unseen is not None and complete:
            changes.removed = {key: self._loaded.files[key].etag for key in self._unseen}
            stats.pruned = len(changes.removed)
        # A first pass under INITIAL_SCAN that did not complete (a failed folder, a
        # fatal error) also saves a cursor: the policy must outlive it, or the next run
        # would send what this one was meant to mark.
        unfinished_policy = self._policy is not None and (
            self._fatal is not None or stats.folder_errors > 0
        )
        if stats.truncated or unfinished_policy:
            new_cursor: dict[str, Any]
            if self._strategy == "flat":
                flat = self._progress.get(_FLAT)
                start = flat.start_after if flat is not None else None
                if flat is None and cursor is not None:
                    start = cursor.get("start_after")
                new_cursor = {"strategy": "flat", "start_after": start}
            else:
                pending: dict[str, str | None] = dict(self._untaken)
                for folder, progress in self._progress.items():
                    if not progress.complete:
                        pending[folder] = progress.start_after
                new_cursor = {
                    "strategy": "folders",
                    "pending": pending,
                    "after_folder": self._after_folder,
                }
            if self._policy is not None:
                new_cursor["initial_scan"] = self._cursor_policy()
            changes.cursor = new_cursor
        elif cursor is not None and self._fatal is None:
            changes.cursor = {}  # the resumed pass is finished; next run starts afresh
        return changes

    def _cursor_policy(self) -> str:
        """The first-run policy a resumed pass continues with.

        ``mark-existing`` continues as ``since:<start of this pass>``: a file that
        arrives between two runs of one pass is sent, not marked. The start is rounded
        down to the second, as S3's LastModified is, so a file written in the second the
        pass began is sent (rather than possibly never).
        """
        policy = self._policy
        assert policy is not None
        if policy.mode == "mark-existing":
            return "since:" + iso_utc(self._started.replace(microsecond=0))
        return str(policy)

    async def _load_state(self) -> tuple[State | None, str | None]:
        """The decoded state and its ETag, or (None, None) when no state object exists.

        A streaming store feeds the decoder as the object arrives: the raw bytes are as
        large as the decoded state, so they are never held whole next to it.
        """
        name, max_bytes = self.store.name, self.config.state_max_bytes
        if isinstance(self.store, StreamingStateStore):
            decoder = StateDecoder(name=name, max_bytes=max_bytes)
            found, etag = await self.store.load_into(decoder)
            return (decoder.close() if found else None), etag
        raw, etag = await self.store.load()
        return (decode(raw, name=name, max_bytes=max_bytes) if raw is not None else None), etag

    async def _save_state(self, state: State, etag: str | None) -> int:
        """One conditional write of ``state``; returns its size in bytes.

        A streaming store gets a body that encodes the state as it is read, so the
        encoded bytes (as large as the state) never exist whole next to it.
        """
        updated_at = iso_utc(self.clock())
        if isinstance(self.store, StreamingStateStore):
            body = EncodedBody(state, updated_at)
            await self.store.save_stream(body, if_match=etag)
            return len(body)
        raw = encode(state, updated_at)
        await self.store.save(raw, if_match=etag)
        return len(raw)

    async def _write(self, changes: StateChanges, etag: str | None) -> None:
        """One conditional write; on conflict reload, merge, retry (bounded, jittered)."""
        cfg = self.config
        base = self._loaded
        for attempt in range(1, cfg.state_write_attempts + 1):
            self.stats.state_write_attempts = attempt
            try:
                size = await self._save_state(apply(base, changes), etag)
            except StateConflict as exc:
                log.warning(
                    "state changed meanwhile: reload and merge",
                    extra={"event": "state_conflict", "attempt": attempt, "error": str(exc)},
                )
                if attempt == cfg.state_write_attempts:
                    raise
                await anyio.sleep(backoff(attempt))
                # The stale state is dropped before the fresh one is decoded.
                base = self._loaded = State()
                fresh, etag = await self._load_state()
                base = self._loaded = fresh if fresh is not None else State()
                # The writer that won may have bound the object to another bucket.
                check_source(
                    base, cfg.source_bucket, name=self.store.name, force_rebind=cfg.force_rebind
                )
                continue
            self.stats.state_written = True
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


def backoff(attempt: int, base: float = 0.1, cap: float = 2.0) -> float:
    """Full-jitter exponential backoff (AWS architecture blog): uniform in [0, min(cap, b*2^n)]."""
    return random.uniform(0, min(cap, base * (2**attempt)))


def elapsed_since(start: float) -> float:
    """Seconds since a ``time.perf_counter()`` reading."""
    return time.perf_counter() - start
