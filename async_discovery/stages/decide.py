"""What to do with one candidate, as a value; counters and explain lines read from it.

:func:`decide` is pure: the listed object, its state entry, the run's policy and the
clock in, a :class:`Decision` out. :class:`Tally` is the one place that turns decisions
(and ignored keys) into the run's counters and ``--explain`` lines.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..changes import Change, detect
from ..discovery import Verdict
from ..models import ListedObject, Outgoing
from ..state import FileEntry
from ..summary import RunStats

Explain = Callable[[dict[str, Any]], None]


class Action(enum.Enum):
    """What happens to one candidate."""

    SEND = "send"  # new or updated: enqueue it
    SKIP = "skip"  # unchanged
    DEFER = "defer"  # too young (MIN_OBJECT_AGE_SECONDS): a later run takes it
    MARK = "mark"  # the first-run policy records it without sending
    HOLD = "hold"  # the state is full (STATE_MAX_BYTES): neither sent nor recorded


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """One candidate's fate and why (``reason``: new, updated, unchanged, min-age,
    initial-scan, state-full)."""

    action: Action
    reason: str
    previous_etag: str | None = None
    age_seconds: float | None = None


def decide(
    obj: ListedObject,
    entry: FileEntry | None,
    *,
    now: datetime,
    min_age_seconds: float,
    mark_before: datetime | None,
) -> Decision:
    """The decision for one candidate (SPEC "Change detection", settle time, first run).

    ``mark_before``: under a first-run policy, objects modified before this instant are
    marked instead of sent (None: no policy).
    """
    previous = entry.etag if entry is not None else None
    change = detect(obj.etag, previous)
    if change is Change.UNCHANGED:
        return UNCHANGED
    if min_age_seconds > 0:
        age = (now - obj.last_modified).total_seconds()
        if age < min_age_seconds:
            return Decision(Action.DEFER, "min-age", age_seconds=age)
    if mark_before is not None and obj.last_modified < mark_before:
        return Decision(Action.MARK, "initial-scan")
    return Decision(Action.SEND, change.value, previous_etag=previous)


HELD = Decision(Action.HOLD, "state-full")
UNCHANGED = Decision(Action.SKIP, "unchanged")


class Tally:
    """Counts decisions and ignored keys into :class:`RunStats`; writes explain lines.

    Every explain line passes through here, so the run can end with per-reason counts
    (``{"explain_counts": {action: {reason: n}}}``).
    """

    def __init__(
        self,
        stats: RunStats,
        explain: Explain | None = None,
        *,
        min_age_seconds: float = 0.0,
        dry_run: bool = False,
        found_before: datetime | None = None,
    ) -> None:
        self.stats = stats
        # A file sent that was modified before this was found by reconciliation: the
        # events (if any) missed it (RECONCILIATION_WINDOW_SECONDS).
        self._found_before = found_before
        self._sink = explain
        self._counts: dict[str, Counter[str]] = {}
        self._min_age = min_age_seconds
        self._dry_run = dry_run
        self.policy = ""  # the first-run policy, as explain lines name it

    @property
    def explaining(self) -> bool:
        """True when explain lines are wanted (building them costs time otherwise)."""
        return self._sink is not None

    def _line(self, doc: dict[str, Any]) -> None:
        assert self._sink is not None
        self._counts.setdefault(str(doc["action"]), Counter())[str(doc["reason"])] += 1
        self._sink(doc)

    def ignored(self, key: str, verdict: Verdict, n: int = 1) -> None:
        """``n`` keys (or one rolled-up prefix) the discovery rule excludes."""
        self.stats.count_ignored(verdict, n)
        if self._sink is not None:
            self._line({"key": key, "action": "ignore", "reason": verdict.value})

    def decided(self, obj: ListedObject, decision: Decision) -> None:
        """Count one candidate's decision (a send is counted as queued only once SQS
        accepted it, or here in a dry run)."""
        stats, action = self.stats, decision.action
        stats.candidates += 1
        if action is Action.SKIP:
            stats.skipped += 1
        elif action is Action.DEFER:
            stats.deferred += 1
        elif action is Action.MARK:
            stats.marked += 1
        elif action is Action.HOLD:
            stats.held_back += 1
        elif self._dry_run:
            self._queued(decision.reason)
        if self._sink is not None:
            self._line(self._explained(obj, decision))

    def unchanged(self, n: int) -> None:
        """Count ``n`` candidates found unchanged at once (a verified folder's page; no
        explain lines: :meth:`decided` one by one when they are wanted)."""
        self.stats.candidates += n
        self.stats.skipped += n

    def _explained(self, obj: ListedObject, decision: Decision) -> dict[str, Any]:
        action = decision.action
        doc: dict[str, Any] = {"key": obj.key, "action": action.value, "reason": decision.reason}
        if action is Action.HOLD:
            doc["action"] = "defer"  # not sent, taken by a later run: a deferral
        elif action is Action.DEFER:
            doc["age_seconds"] = round(decision.age_seconds or 0.0, 3)
            doc["min_age_seconds"] = self._min_age
        elif action is Action.MARK:
            doc["policy"] = self.policy
            doc["etag"] = obj.etag
        else:
            doc["etag"] = obj.etag
            if action is Action.SEND:
                doc["previous_etag"] = decision.previous_etag
        return doc

    def accepted(self, out: Outgoing) -> None:
        """SQS accepted one message."""
        self._queued(out.event)
        if self._found_before is not None and out.obj.last_modified < self._found_before:
            self.stats.found_by_reconciliation += 1

    def _queued(self, event: str) -> None:
        self.stats.queued += 1
        if event == "new":
            self.stats.new += 1
        else:
            self.stats.updated += 1

    def close(self) -> None:
        """The final explain line: counts per action and reason."""
        if self._sink is not None:
            counts = {action: dict(c) for action, c in sorted(self._counts.items())}
            self._sink({"explain_counts": counts})
