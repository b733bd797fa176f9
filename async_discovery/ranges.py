"""Key ranges of a folder (SPEC "Key ranges"): spans of keys and a split folder's index.

Under ``STATE_LAYOUT=folders`` a folder of at most ``SHARD_MAX_FILES`` files keeps one
shard, ``<state prefix>folders/<P><F>.json``. A larger one is split by key range: that
object becomes the folder's **index** (version 3), naming its ranges in key order, each
kept in a **range shard** of its own (a version 2 shard body), so that listing, state and
fan-out items all split at the same keys: the keys the scanner recorded last time.

Range ``i`` holds the keys ``k`` with ``until[i-1] < k <= until[i]`` (the first range is
open below, the last one above), so every key of the folder falls in exactly one range,
whatever was deleted or added since the split. Bounds are keys compared as Python
strings: code point order, which is the UTF-8 byte order S3 lists in.

An index, as written::

    {"version": 3, "updated_at": …, "source_bucket": B, "prefix": P, "folder": F,
     "ranges": [{"until": "<P>F/k1.csv", "shard": "<id>"}, …, {"until": null, "shard": …}]}

``shard`` is the id of the range's object (:func:`async_discovery.layout.range_key`), or
null for a range with no file recorded yet. A range may also carry ``etag`` and
``digest``: the fingerprint (:mod:`async_discovery.fingerprint`) of its shard when the
shard had that ETag. It is a cache: one listing of the folder's range shards gives
their ETags, and a range whose shard still has that ETag is verified against the digest
with no ``GetObject``; any other writer of the shard changes its ETag, so a stale digest
is never trusted. Pure: no I/O.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import StateCorrupt

INDEX_VERSION = 3
_SHARD_ID = re.compile(r"^[0-9a-z][0-9a-z-]{0,63}$")
_VERSION_AT_START = re.compile(rb'^\s*\{\s*"version"\s*:\s*(\d{1,3})\s*[,}]')


@dataclasses.dataclass(frozen=True, slots=True)
class Span:
    """The keys ``k`` with ``after < k <= until`` (None: unbounded on that side).

    ``after`` is where a listing of the span starts (``StartAfter``); a listing stops
    past ``until``.
    """

    after: str | None = None
    until: str | None = None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return (self.after is None or key > self.after) and (
            self.until is None or key <= self.until
        )

    def past(self, key: str) -> bool:
        """True when ``key`` lies beyond the span's upper bound."""
        return self.until is not None and key > self.until

    def intersect(self, other: Span) -> Span | None:
        """The keys in both spans (None: none can be)."""
        after = _max_lower(self.after, other.after)
        until = _min_upper(self.until, other.until)
        if after is not None and until is not None and until <= after:
            return None
        return Span(after, until)

    def to_json(self) -> dict[str, str | None]:
        """``{"after": …, "until": …}``."""
        return {"after": self.after, "until": self.until}


def _max_lower(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _min_upper(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


WHOLE = Span()  # every key of a folder


@dataclasses.dataclass(frozen=True, slots=True)
class RangeRef:
    """One range of an index: its upper bound and its shard's id (None: no object), and
    the shard's fingerprint (``digest``) as of its ETag ``etag`` (both None: unknown)."""

    until: str | None
    shard: str | None
    etag: str | None = None
    digest: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """The range as the index lists it."""
        doc = {"until": self.until, "shard": self.shard}
        if self.etag is not None and self.digest is not None:
            doc.update(etag=self.etag, digest=self.digest)
        return doc


@dataclasses.dataclass(slots=True)
class Index:
    """A split folder's ranges, in key order; the last one's ``until`` is None."""

    folder: str
    prefix: str
    source_bucket: str | None
    ranges: list[RangeRef]
    updated_at: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def spans(self) -> Iterator[tuple[Span, RangeRef]]:
        """Each range with the span of keys it holds."""
        after: str | None = None
        for ref in self.ranges:
            yield Span(after, ref.until), ref
            after = ref.until

    def span_at(self, position: int) -> Span:
        """The span of the range at ``position``."""
        after = self.ranges[position - 1].until if position > 0 else None
        return Span(after, self.ranges[position].until)

    def position(self, key: str) -> int:
        """The position of the range holding ``key``."""
        bounds = [ref.until or "" for ref in self.ranges[:-1]]  # only the last is None
        return bisect.bisect_left(bounds, key)

    def position_of(self, shard: str) -> int | None:
        """The position of the range whose shard is ``shard`` (None: not in the index)."""
        for position, ref in enumerate(self.ranges):
            if ref.shard == shard:
                return position
        return None

    def overlapping(self, span: Span) -> list[tuple[int, Span]]:
        """The ranges that hold keys of ``span``, each with the part of ``span`` it holds."""
        found: list[tuple[int, Span]] = []
        start = 0 if span.after is None else self.position(span.after)
        for position in range(start, len(self.ranges)):
            part = self.span_at(position).intersect(span)
            if part is not None:
                found.append((position, part))
            until = self.ranges[position].until
            if span.until is not None and until is not None and until >= span.until:
                break
        return found


def version_at_start(data: bytes) -> int | None:
    """The ``version`` a state object's first bytes declare, when it comes first (as
    every object this scanner writes has it); None otherwise."""
    match = _VERSION_AT_START.match(data)
    return int(match.group(1)) if match else None


def encode_index(index: Index, updated_at: str) -> bytes:
    """The index's JSON form (unknown fields of a newer writer kept)."""
    doc: dict[str, Any] = {
        "version": INDEX_VERSION,
        "updated_at": updated_at,
        "source_bucket": index.source_bucket,
        "prefix": index.prefix,
        "folder": index.folder,
        "ranges": [r.to_json() for r in index.ranges],
    }
    doc.update({k: v for k, v in index.extra.items() if k not in doc})
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


_INDEX_FIELDS = frozenset({"version", "updated_at", "source_bucket", "prefix", "folder", "ranges"})


def decode_index(raw: bytes, *, name: str, prefix: str, folder: str | None) -> Index:
    """Parse a folder's index; raises :class:`StateCorrupt` for anything that is not
    one for ``folder`` (None: the folder it names) of ``prefix``: bounds must be keys of
    the folder in strictly ascending order, the last range open above, shard ids as
    this scanner makes them and used once."""
    try:
        doc = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise StateCorrupt(f"state object {name} is not valid JSON") from None
    if not isinstance(doc, dict) or type(doc.get("version")) is not int:
        raise StateCorrupt(f"state object {name} is not a folder index")
    if doc["version"] != INDEX_VERSION:
        raise StateCorrupt(
            f"state object {name} has version {doc['version']!r}; a folder index has "
            f"version {INDEX_VERSION}"
        )
    if folder is None and isinstance(doc.get("folder"), str):
        folder = doc["folder"]
    if folder is None or doc.get("folder") != folder or doc.get("prefix") != prefix:
        raise StateCorrupt(
            f"state object {name} is the index of folder {doc.get('folder')!r} of "
            f"{doc.get('prefix')!r}, not of {folder!r} of {prefix!r}"
        )
    for field in ("updated_at", "source_bucket"):
        if doc.get(field) is not None and not isinstance(doc[field], str):
            raise StateCorrupt(f"state object {name}: {field} is not a string")
    ranges = doc.get("ranges")
    if not isinstance(ranges, list) or not ranges:
        raise StateCorrupt(f"state object {name}: ranges is not a non-empty list")
    refs = [_range_ref(item, name) for item in ranges]
    _check_bounds(refs, name, prefix + folder + "/")
    return Index(
        folder=folder,
        prefix=prefix,
        source_bucket=doc.get("source_bucket"),
        ranges=refs,
        updated_at=doc.get("updated_at"),
        extra={k: v for k, v in doc.items() if k not in _INDEX_FIELDS},
    )


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _range_ref(item: Any, name: str) -> RangeRef:
    if not isinstance(item, dict) or set(item) - {"until", "shard", "etag", "digest"}:
        raise StateCorrupt(
            f"state object {name}: a range is not {{'until', 'shard', 'etag', 'digest'}}"
        )
    until, shard = item.get("until"), item.get("shard")
    if until is not None and not isinstance(until, str):
        raise StateCorrupt(f"state object {name}: a range's until is not a key")
    if shard is not None and not (isinstance(shard, str) and _SHARD_ID.match(shard)):
        raise StateCorrupt(f"state object {name}: a range's shard {shard!r} is not a shard id")
    etag, digest = item.get("etag"), item.get("digest")
    if not (isinstance(etag, str) and isinstance(digest, str)):
        etag = digest = None  # a cache: what is not usable is not used
    return RangeRef(until, shard, etag, digest)


def _check_bounds(refs: Sequence[RangeRef], name: str, folder_prefix: str) -> None:
    bounds = [ref.until for ref in refs[:-1]]
    if refs[-1].until is not None or any(b is None for b in bounds):
        raise StateCorrupt(f"state object {name}: only the last range may be open above")
    for bound in bounds:
        assert bound is not None
        if not bound.startswith(folder_prefix) or "/" in bound[len(folder_prefix) :]:
            raise StateCorrupt(f"state object {name}: bound {bound!r} is not a key of the folder")
    if any(b >= a for a, b in zip(bounds[1:], bounds, strict=False)):  # type: ignore[operator]
        raise StateCorrupt(f"state object {name}: bounds are not in ascending key order")
    ids = [ref.shard for ref in refs if ref.shard is not None]
    if len(ids) != len(set(ids)):
        raise StateCorrupt(f"state object {name}: a shard id is used twice")


def piece_sizes(count: int, max_files: int) -> list[int]:
    """How ``count`` files are cut into ranges: as few pieces as hold at most half of
    ``max_files`` each (so a range split now has room to grow before its next split),
    of near-equal sizes."""
    target = max(1, max_files // 2)
    pieces = max(1, -(-count // target))
    base, extra = divmod(count, pieces)
    return [base + 1 if i < extra else base for i in range(pieces)]
