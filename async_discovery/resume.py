"""Where a listing pass stands: per-listing page progress and the resume cursor.

Workers take pages of one listing out of order (several workers, one stream), so the
point a truncated pass can resume from is the last key of the last page such that
every page before it was processed: :class:`ListingProgress` keeps exactly that.
The cursor saved in state (per scanned prefix) is a small JSON object:

* folders strategy: ``{"strategy": "folders", "pending": {folder: start_after},
  "after_folder": name-or-null, "discovered_until": key-or-absent, "initial_scan":
  policy-or-absent}``: folders at or before ``after_folder`` (in S3 order) are done
  unless pending; later ones not begun. ``discovered_until`` is the last key or folder
  the pass's folder discovery listing saw: a resumed run continues that listing there.
  Under ``STATE_LAYOUT=folders`` (``runs/<P>cursor.json``) a started folder may have
  several unfinished parts, its key ranges: ``"todo": {folder: [{"after": key-or-null,
  "until": key-or-null, "whole": true-or-absent}, …]}`` lists each span of keys still to
  list (``whole``: read its state whole, see :class:`~.stages.plan.Job`); ``pending``
  is still read, as spans to the folder's end.
* flat strategy: ``{"strategy": "flat", "start_after": key}``.

Other fields (a newer writer's) are kept as they are; :func:`cursor_problem` is the
schema the state codec checks every saved cursor against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .config import parse_initial_scan

CURSOR_FIELDS = frozenset(
    {
        "strategy",
        "pending",
        "todo",
        "after_folder",
        "discovered_until",
        "start_after",
        "initial_scan",
    }
)


def cursor_problem(cursor: Any) -> str | None:
    """What makes ``cursor`` (one value of the state's ``cursors``) not a resume cursor,
    or None when it is one.

    ``strategy`` is required (``folders`` or ``flat``); ``pending`` (an object of folder
    to start-after key or null), ``after_folder``, ``discovered_until`` and
    ``start_after`` (string or null)
    and ``initial_scan`` (a policy ``INITIAL_SCAN`` accepts) are optional; other fields
    are not checked.
    """
    if not isinstance(cursor, dict):
        return "is not an object"
    if cursor.get("strategy") not in ("folders", "flat"):
        return f"has strategy {cursor.get('strategy')!r}, not 'folders' or 'flat'"
    pending = cursor.get("pending", {})
    if not isinstance(pending, dict) or not all(
        v is None or isinstance(v, str) for v in pending.values()
    ):
        return "has a pending field that is not an object of folder to string or null"
    todo = cursor.get("todo", {})
    if not isinstance(todo, dict) or not all(_spans_ok(v) for v in todo.values()):
        return (
            'has a todo field that is not an object of folder to [{"after", "until", "whole"}, …]'
        )
    for folder in [*pending, *todo]:
        if not folder or "/" in folder:
            return f"names {folder!r}, which is not a folder name (empty, or holds '/')"
    for field in ("after_folder", "discovered_until", "start_after"):
        value = cursor.get(field)
        if value is not None and not isinstance(value, str):
            return f"has a {field} that is not a string or null"
    if "initial_scan" in cursor:
        policy = cursor["initial_scan"]
        problems: list[str] = []
        if isinstance(policy, str):
            parse_initial_scan(policy, problems)
        if not isinstance(policy, str) or problems:
            return f"has initial_scan {policy!r}, not all, mark-existing or since:<ISO 8601>"
    return None


@dataclasses.dataclass(slots=True)
class ListingProgress:
    """Page bookkeeping for one listing (one subfolder, or the flat prefix)."""

    start_after: str | None = None
    pages_listed: int = 0
    listing_finished: bool = False
    failed: bool = False
    _handled: set[int] = dataclasses.field(default_factory=set)
    _last_keys: dict[int, str | None] = dataclasses.field(default_factory=dict)
    _upto: int = -1
    # Called once when the listing becomes complete (a shard can then be written).
    on_complete: Callable[[], None] | None = None

    def listed(self, seq: int, last_key: str | None) -> None:
        """A page was listed (and is about to be queued for a worker)."""
        self.pages_listed = max(self.pages_listed, seq + 1)
        self._last_keys[seq] = last_key

    def handled(self, seq: int) -> None:
        """A worker took the page's candidates into its send buffer."""
        self._handled.add(seq)
        while self._upto + 1 in self._handled:
            self._upto += 1
            self._handled.discard(self._upto)
            key = self._last_keys.pop(self._upto, None)
            if key is not None:
                self.start_after = key
        self._check_complete()

    def finish(self) -> None:
        """The listing returned its last page."""
        self.listing_finished = True
        self._check_complete()

    def _check_complete(self) -> None:
        if self.on_complete is not None and self.complete:
            callback, self.on_complete = self.on_complete, None
            callback()

    @property
    def complete(self) -> bool:
        """The whole listing was listed and every page handled."""
        return self.listing_finished and not self.failed and self._upto + 1 == self.pages_listed


def folder_sort_key(folder: str) -> str:
    """S3 orders the common prefix ``F/``, not ``F``: compare folders the same way."""
    return folder + "/"


def _spans_ok(value: Any) -> bool:
    if not isinstance(value, list):
        return False
    for item in value:
        if not isinstance(item, dict) or set(item) - {"after", "until", "whole"}:
            return False
        bounds = (item.get("after"), item.get("until"))
        if any(b is not None and not isinstance(b, str) for b in bounds):
            return False
        if not isinstance(item.get("whole", False), bool):
            return False
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """One unfinished part of a folder in a saved cursor: its keys after ``after`` up to
    ``until``; ``whole``: its state is to be read whole."""

    folder: str
    after: str | None = None
    until: str | None = None
    whole: bool = False

    def to_json(self) -> dict[str, Any]:
        """The part as the cursor's ``todo`` lists it."""
        doc: dict[str, Any] = {"after": self.after, "until": self.until}
        if self.whole:
            doc["whole"] = True
        return doc


def pending_from_cursor(cursor: dict[str, Any] | None) -> list[Pending]:
    """The unfinished parts of a saved folders-strategy cursor, folder by folder in the
    order saved (``pending`` first, then ``todo``)."""
    if not cursor or cursor.get("strategy") != "folders":
        return []
    found = [
        Pending(str(f), str(k) if k else None) for f, k in (cursor.get("pending") or {}).items()
    ]
    for folder, spans in (cursor.get("todo") or {}).items():
        found.extend(
            Pending(str(folder), s.get("after"), s.get("until"), bool(s.get("whole")))
            for s in spans
        )
    return found


def todo_of(parts: list[Pending]) -> dict[str, list[dict[str, Any]]]:
    """The cursor's ``todo`` for ``parts``, each folder's spans in key order."""
    todo: dict[str, list[Pending]] = {}
    for part in parts:
        todo.setdefault(part.folder, []).append(part)
    return {
        folder: [p.to_json() for p in sorted(spans, key=lambda p: (p.after is not None, p.after))]
        for folder, spans in todo.items()
    }
