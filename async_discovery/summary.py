"""Run counters and the summary a run returns (SPEC "Summary"); an events batch's."""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from typing import Any

from .discovery import Verdict

OK, PARTIAL, FAILED = 200, 207, 500


@dataclasses.dataclass(slots=True)
class RunStats:
    """Counters filled during one run."""

    listed: int = 0
    candidates: int = 0
    queued: int = 0
    skipped: int = 0
    errors: int = 0
    deferred: int = 0
    marked: int = 0
    pruned: int = 0
    new: int = 0
    updated: int = 0
    folder_errors: int = 0
    # Files left unsent and unrecorded because the state reached STATE_MAX_BYTES.
    held_back: int = 0
    # The state object's size in bytes: as loaded, then as written.
    state_bytes: int = 0
    ignored: Counter[str] = dataclasses.field(default_factory=Counter)
    api_calls: Counter[str] = dataclasses.field(default_factory=Counter)
    truncated: bool = False
    state_written: bool = False
    state_objects_read: int = 0  # state objects (or shards) that existed and were read
    state_objects_written: int = 0
    # Shards of which only the head was read: their folder matched their fingerprint.
    state_objects_verified: int = 0
    state_objects_deleted: int = 0  # shards of vanished folders, a finished cursor
    # Messages for a 207: what failed without failing the run (e.g. an unreadable shard).
    warnings: list[str] = dataclasses.field(default_factory=list)
    # What an operator should look at although nothing failed (the summary's
    # ``notices``; the statusCode stays 200), e.g. a prefix under which nothing was listed.
    notices: list[str] = dataclasses.field(default_factory=list)
    state_write_attempts: int = 0
    # Files a scan sent that were older than RECONCILIATION_WINDOW_SECONDS: the events
    # missed them (or none are configured).
    found_by_reconciliation: int = 0

    def count_ignored(self, verdict: Verdict, n: int = 1) -> None:
        """Count ``n`` ignored objects under the rule that excluded them."""
        self.ignored[verdict.value] += n


def status_code(stats: RunStats, error: str | None) -> int:
    """200 when complete and clean, 207 when some files or folders failed, 500 on error."""
    if error is not None:
        return FAILED
    if stats.errors or stats.folder_errors or stats.held_back or stats.warnings:
        return PARTIAL
    return OK


def build_summary(
    stats: RunStats, seconds: float, *, error: str | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """The summary dict: SPEC's five keys first, then the extra counters."""
    summary: dict[str, Any] = {
        "statusCode": status_code(stats, error),
        "queued": stats.queued,
        "skipped": stats.skipped,
        "errors": stats.errors,
        "execution_time_seconds": round(seconds, 3),
        "listed": stats.listed,
        "candidates": stats.candidates,
        "ignored": sum(stats.ignored.values()),
        "new": stats.new,
        "updated": stats.updated,
        "deferred": stats.deferred,
        "marked": stats.marked,
        "pruned": stats.pruned,
        "found_by_reconciliation": stats.found_by_reconciliation,
        "folder_errors": stats.folder_errors,
        "held_back": stats.held_back,
        "state_bytes": stats.state_bytes,
        "state_objects_read": stats.state_objects_read,
        "state_objects_written": stats.state_objects_written,
        "state_objects_verified": stats.state_objects_verified,
        "truncated": stats.truncated,
        "dry_run": dry_run,
        "api_calls": dict(sorted(stats.api_calls.items())),
    }
    if error is None and stats.warnings:
        error = "; ".join(stats.warnings[:5])
        if len(stats.warnings) > 5:
            error += f"; and {len(stats.warnings) - 5} more"
    if error is None and stats.held_back:
        error = (
            f"the state reached STATE_MAX_BYTES: {stats.held_back} new or updated files were "
            "not sent (the next run finds them again); raise STATE_MAX_BYTES or split the "
            "state: STATE_LAYOUT=folders (one shard per folder), or a separate S3_STATE_KEY "
            "per prefix"
        )
    if error is not None:
        summary["error"] = error
    if stats.notices:
        summary["notices"] = list(stats.notices)
    return summary


@dataclasses.dataclass(slots=True)
class EventStats:
    """Counters of one events batch (SPEC "Events"), beside its :class:`RunStats`."""

    records: int = 0
    failed_records: int = 0
    deleted: int = 0  # candidates whose object no longer exists: nothing sent
    superseded: int = 0  # events for a version since overwritten: the current one decided
    state_units: int = 0  # state units (the object, shards) its candidates fall in
    lags: list[float] = dataclasses.field(default_factory=list)  # event time to send, s

    def lag(self) -> tuple[float | None, float | None]:
        """The median and the largest lag in seconds (None without a send)."""
        if not self.lags:
            return None, None
        return round(statistics.median(self.lags), 3), round(max(self.lags), 3)


def build_events_summary(
    stats: RunStats, events: EventStats, seconds: float, *, error: str | None = None
) -> dict[str, Any]:
    """An events batch in one dict (the log line): 200 when every record was handled,
    207 when some are to be delivered again, 500 when the batch could not run."""
    status = FAILED if error is not None else PARTIAL if events.failed_records else OK
    p50, worst = events.lag()
    summary: dict[str, Any] = {
        "statusCode": status,
        "records": events.records,
        "failed_records": events.failed_records,
        "queued": stats.queued,
        "skipped": stats.skipped,
        "errors": stats.errors,
        "execution_time_seconds": round(seconds, 3),
        "candidates": stats.candidates,
        "ignored": sum(stats.ignored.values()),
        "ignored_by_reason": dict(sorted(stats.ignored.items())),
        "new": stats.new,
        "updated": stats.updated,
        "deferred": stats.deferred,
        "marked": stats.marked,
        "held_back": stats.held_back,
        "deleted": events.deleted,
        "superseded": events.superseded,
        "lag_p50_seconds": p50,
        "lag_max_seconds": worst,
        "state_units": events.state_units,
        "state_objects_read": stats.state_objects_read,
        "state_objects_written": stats.state_objects_written,
        "api_calls": dict(sorted(stats.api_calls.items())),
    }
    if error is not None:
        summary["error"] = error
    return summary
