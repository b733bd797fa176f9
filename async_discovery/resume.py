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
    {"strategy", "pending", "after_folder", "discovered_until", "start_after", "initial_scan"}
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


def pending_from_cursor(cursor: dict[str, Any] | None) -> dict[str, str | None]:
    """Unfinished folders of a saved folders-strategy cursor, with their resume keys."""
    if not cursor or cursor.get("strategy") != "folders":
        return {}
    pending = cursor.get("pending") or {}
    return {str(f): (str(k) if k else None) for f, k in pending.items()}
