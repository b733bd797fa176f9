"""Change detection (SPEC "Change detection"): new, updated or unchanged, by ETag."""

from __future__ import annotations

import enum


class Change(enum.Enum):
    """How a candidate compares with the state."""

    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def strip_etag(etag: str) -> str:
    """ETags are compared without their surrounding quotes (S3 returns ``"abc"``)."""
    if len(etag) >= 2 and etag[0] == '"' and etag[-1] == '"':
        return etag[1:-1]
    return etag


def detect(etag: str, stored_etag: str | None) -> Change:
    """Compare a listed ETag with the one in state (None when the key is not in state)."""
    if stored_etag is None:
        return Change.NEW
    if strip_etag(stored_etag) != strip_etag(etag):
        return Change.UPDATED
    return Change.UNCHANGED
