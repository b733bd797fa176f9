"""A folder's fingerprint: one digest of its files' keys and ETags, in key order.

A shard is written with the fingerprint of its files (object metadata
``files-digest``). A run that lists the folder from its start computes the same over
the listed candidates, page by page, at a small fraction of what decoding the shard
costs. Equal fingerprints mean the listing holds exactly the shard's files, each with
the ETag recorded: every candidate is unchanged, and the shard's files need not be
read (see docs/state-layout.md, "Unchanged folders").

The form: the keys and the ETags (unquoted) each joined, every item followed by a NUL,
hashed with SHA-256 (as UTF-8); the two digests and the count make the value. An item
holding a NUL would make the joined form ambiguous, so it gives no fingerprint at all
(checked on every page: such a folder is read whole, as without fingerprints). S3
lists keys in UTF-8 byte order, which is the code point order ``sorted`` gives the
shard's keys; a store that lists in another order never matches, with the same result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from .changes import strip_etag
from .state import SHARD_VERSION, FileEntry, State

META_KEY = "files-digest"  # the shard's user metadata (x-amz-meta-files-digest)
_SEP = "\x00"  # keeps ASCII keys ASCII: their UTF-8 is a copy
_FORM = "1"  # the value's first field: the form above


class Fingerprint:
    """The fingerprint of a sequence of (key, ETag), fed in runs (``add``)."""

    __slots__ = ("_etags", "_keys", "count", "usable")

    def __init__(self) -> None:
        self._keys = hashlib.sha256()
        self._etags = hashlib.sha256()
        self.count = 0
        self.usable = True  # False once an item held the separator

    def add(self, keys: Sequence[str], etags: Sequence[str]) -> None:
        """The next keys and their ETags (unquoted), in order."""
        if not keys:
            return
        joined_keys = _SEP.join(keys) + _SEP
        joined_etags = _SEP.join(etags) + _SEP
        if joined_keys.count(_SEP) != len(keys) or joined_etags.count(_SEP) != len(etags):
            self.usable = False
        self._keys.update(joined_keys.encode("utf-8", "surrogatepass"))
        self._etags.update(joined_etags.encode("utf-8", "surrogatepass"))
        self.count += len(keys)

    def value(self) -> str | None:
        """``"1 <count> <sha256 hex>"``; None when an item held the separator."""
        if not self.usable:
            return None
        digest = hashlib.sha256(self._keys.digest() + self._etags.digest()).hexdigest()
        return f"{_FORM} {self.count} {digest}"


def recorded_count(value: str) -> int:
    """The number of files a fingerprint value says its shard records (a value not of
    this form counts as any number)."""
    parts = value.split(" ")
    if len(parts) == 3 and parts[0] == _FORM and parts[1].isdigit():
        return int(parts[1])
    return 1 << 62


def of_files(files: Mapping[str, FileEntry], *, run: int = 4096) -> str | None:
    """The fingerprint of a shard's files, as a listing of exactly them gives it."""
    fingerprint = Fingerprint()
    keys = sorted(files)
    for start in range(0, len(keys), run):
        part = keys[start : start + run]
        fingerprint.add(part, [strip_etag(files[key].etag) for key in part])
    return fingerprint.value()


def object_metadata(state: State) -> dict[str, str]:
    """The user metadata to write with a state object: a shard's fingerprint."""
    if state.version != SHARD_VERSION:
        return {}
    value = of_files(state.files)
    return {} if value is None else {META_KEY: value}
