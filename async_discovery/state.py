"""The state object (SPEC "State object") in memory: entries, changes, merge; no I/O.

Memory matters here: a state of 100,000 entries is held for the whole run, so its size
per entry is the scanner's memory slope. :class:`Files` keeps each entry as one packed
bytes value per key. Reading and writing the JSON form, chunk by chunk, is
:mod:`async_discovery.state_codec`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, NamedTuple

from .errors import StateBucketMismatch
from .resume import CURSOR_FIELDS

STATE_VERSION = 1
SHARD_VERSION = 2
STATUSES = frozenset({"queued", "marked"})


class FileEntry(NamedTuple):
    """One file recorded in state. ``status`` is ``queued`` (sent) or ``marked``
    (recorded without sending, by ``INITIAL_SCAN=mark-existing|since:``)."""

    etag: str
    size: int
    folder: str
    queued_at: str
    status: str = "queued"


_SEP = b"\x1f"  # packs etag, size and a metadata id into one bytes value (see Files)
_MD5 = b"\xff"  # marks a 32-hex-digit ETag stored as its 16 bytes (never in UTF-8)


def _pack_etag(etag: str) -> bytes:
    if len(etag) == 32:
        try:
            digest = bytes.fromhex(etag)
        except ValueError:
            pass
        else:
            if digest.hex() == etag:  # lowercase: the stored form gives it back exactly
                return _MD5 + digest
    return etag.encode("utf-8", "surrogatepass")


def _unpack_etag(packed: bytes) -> str:
    if len(packed) == 17 and packed[:1] == _MD5:
        return packed[1:].hex()
    return packed.decode("utf-8", "surrogatepass")


def implied_folder(key: str) -> str:
    """The folder a candidate key names (SPEC: key = P + folder + "/" + name)."""
    parts = key.rsplit("/", 2)
    return parts[-2] if len(parts) > 1 else ""


class Files(MutableMapping[str, FileEntry]):
    """The state's entries: a mapping of key to :class:`FileEntry`, stored compactly.

    A state of 100,000 entries is held for the whole run, so its size per entry is the
    scanner's memory slope. A ``FileEntry`` tuple per key costs ~96 bytes plus ~81 for
    its etag str; here each key maps to one bytes value ``etag␟size␟meta`` instead
    (~56 bytes), where ``meta`` indexes a small table of shared ``(folder, queued_at,
    status)`` triples (few distinct values: one timestamp per batch, two statuses), and
    an MD5-style ETag (32 lowercase hex digits, what S3 gives single-part uploads) is
    kept as its 16 bytes. ``folder`` is stored as None when it is the one the key
    implies, so the common case shares one triple across folders. Entries are rebuilt
    as ``FileEntry`` on access; the etag comes first and size and meta are digits, so
    an etag holding the separator byte still splits right.
    """

    __slots__ = ("_meta_ids", "_metas", "_packed")

    def __init__(self, entries: Mapping[str, FileEntry] | None = None) -> None:
        self._packed: dict[str, bytes] = {}
        self._metas: list[tuple[str | None, str, str]] = []
        self._meta_ids: dict[tuple[str | None, str, str], int] = {}
        if entries:
            self.update(entries)

    def __setitem__(self, key: str, entry: FileEntry) -> None:
        folder = None if entry.folder == implied_folder(key) else entry.folder
        meta = (folder, entry.queued_at, entry.status)
        index = self._meta_ids.get(meta)
        if index is None:
            index = self._meta_ids[meta] = len(self._metas)
            self._metas.append(meta)
        self._packed[key] = b"%b\x1f%d\x1f%d" % (_pack_etag(entry.etag), entry.size, index)

    def __getitem__(self, key: str) -> FileEntry:
        etag, size, index = self._packed[key].rsplit(_SEP, 2)
        folder, queued_at, status = self._metas[int(index)]
        return FileEntry(
            _unpack_etag(etag),
            int(size),
            implied_folder(key) if folder is None else folder,
            queued_at,
            status,
        )

    def __delitem__(self, key: str) -> None:
        del self._packed[key]

    def __contains__(self, key: object) -> bool:
        return key in self._packed

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def __repr__(self) -> str:
        return f"Files({dict(self.items())!r})"


@dataclasses.dataclass(slots=True)
class State:
    """The decoded state object. ``cursors`` maps a scanned prefix to where a truncated
    pass stopped (see :mod:`async_discovery.resume`); ``extra`` keeps unknown top-level
    fields so a newer writer's additions survive this version's rewrite. ``files`` may
    be given as any mapping; it is held as a compact :class:`Files`."""

    files: MutableMapping[str, FileEntry] = dataclasses.field(default_factory=Files)
    source_bucket: str | None = None
    updated_at: str | None = None
    cursors: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    version: int = STATE_VERSION  # 1: the single state object; 2: a folder's shard

    def __post_init__(self) -> None:
        if not isinstance(self.files, Files):
            self.files = Files(self.files)


@dataclasses.dataclass(slots=True)
class StateChanges:
    """What one run changes in the state, kept apart so it can be merged into a
    freshly reloaded state after a conditional-write conflict.

    ``removed`` maps a pruned key to the ETag this run saw in state: the removal only
    applies if the fresh state still holds that ETag (nobody re-recorded it meanwhile).
    ``cursor`` is None to leave the prefix's cursor alone, ``{}`` to clear it.
    """

    prefix: str
    source_bucket: str
    upserts: dict[str, FileEntry] = dataclasses.field(default_factory=dict)
    removed: dict[str, str] = dataclasses.field(default_factory=dict)
    cursor: dict[str, Any] | None = None

    def is_empty(self) -> bool:
        """True when writing would change nothing but the timestamp."""
        return not self.upserts and not self.removed and self.cursor is None


def check_source(state: State, bucket: str, *, name: str, force_rebind: bool) -> None:
    """Refuse a state object recorded for another source bucket (unless rebinding)."""
    if state.source_bucket not in (None, bucket) and not force_rebind:
        raise StateBucketMismatch(
            f"state object {name} describes bucket {state.source_bucket!r}, not {bucket!r}; "
            "use another S3_STATE_KEY, or --force-rebind to move it deliberately"
        )


def apply(state: State, changes: StateChanges) -> State:
    """Merge one run's changes into ``state`` (mutated and returned).

    Entries outside ``changes.prefix`` are untouched by construction: the run only
    produces upserts and removals for keys it listed under its prefix. A new cursor
    replaces the prefix's known cursor fields and keeps its unknown ones; ``{}`` drops
    the whole cursor (the pass it described is finished).
    """
    state.files.update(changes.upserts)
    for key, seen_etag in changes.removed.items():
        current = state.files.get(key)
        if current is not None and current.etag == seen_etag and key not in changes.upserts:
            del state.files[key]
    if changes.cursor is not None:
        if changes.cursor:
            # Fields this version does not know (a newer writer's) outlive the rewrite.
            old = state.cursors.get(changes.prefix, {})
            kept = {k: v for k, v in old.items() if k not in CURSOR_FIELDS}
            state.cursors[changes.prefix] = {**kept, **changes.cursor}
        else:
            state.cursors.pop(changes.prefix, None)
    state.source_bucket = changes.source_bucket
    return state
