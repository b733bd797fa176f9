"""The state object (SPEC "State object"): decode, encode and merge, without I/O.

Memory matters here: a state of 100,000 entries is held for the whole run. Entries are
decoded straight into a compact tuple (:class:`FileEntry`) by a ``json`` object hook,
so the transient dict of each entry is dropped as soon as it is parsed, and repeated
strings (folders, timestamps, status) are shared rather than stored once per entry.
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .errors import StateBucketMismatch, StateCorrupt, StateTooLarge

STATE_VERSION = 1
STATUSES = frozenset({"queued", "marked"})
_ENTRY_FIELDS = frozenset({"status", "etag", "size", "folder", "queued_at"})
_encode_str = json.encoder.encode_basestring
_WS = re.compile(r"[ \t\n\r]*")
_WINDOW = 1 << 20  # bytes of the raw state decoded to text at a time


class FileEntry(NamedTuple):
    """One file recorded in state. ``status`` is ``queued`` (sent) or ``marked``
    (recorded without sending, by ``INITIAL_SCAN=mark-existing|since:``)."""

    etag: str
    size: int
    folder: str
    queued_at: str
    status: str = "queued"


@dataclasses.dataclass(slots=True)
class State:
    """The decoded state object. ``cursors`` maps a scanned prefix to where a truncated
    pass stopped (see :mod:`async_discovery.resume`); ``extra`` keeps unknown top-level
    fields so a newer writer's additions survive this version's rewrite."""

    files: dict[str, FileEntry] = dataclasses.field(default_factory=dict)
    source_bucket: str | None = None
    updated_at: str | None = None
    cursors: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


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


def decode(raw: bytes, *, name: str, max_bytes: int | None = None) -> State:
    """Parse a state object; ``name`` (``s3://bucket/key``) is quoted in errors.

    Raises :class:`StateCorrupt` for anything that is not JSON of the state schema and
    :class:`StateTooLarge` past ``max_bytes``.
    """
    if max_bytes is not None and len(raw) > max_bytes:
        raise StateTooLarge(
            f"state object {name} is {len(raw)} bytes, over STATE_MAX_BYTES={max_bytes}"
        )
    shared: dict[str, str] = {}

    def hook(obj: dict[str, Any]) -> Any:
        if "etag" in obj and "status" in obj and obj.keys() <= _ENTRY_FIELDS | {"last_modified"}:
            etag, size, folder = obj.get("etag"), obj.get("size", 0), obj.get("folder", "")
            status, at = obj.get("status"), obj.get("queued_at", "")
            if (
                isinstance(etag, str)
                and isinstance(size, int)
                and not isinstance(size, bool)
                and isinstance(folder, str)
                and isinstance(status, str)
                and status in STATUSES
                and isinstance(at, str)
            ):
                return FileEntry(
                    etag,
                    size,
                    shared.setdefault(folder, folder),
                    shared.setdefault(at, at),
                    shared.setdefault(status, status),
                )
        return obj

    try:
        if json.detect_encoding(raw[:4]) == "utf-8":
            doc = _Parser(raw, hook).document()
        else:  # UTF-16/32 or a BOM: rare enough for the plain (whole-copy) parse
            doc = json.loads(raw, object_hook=hook)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateCorrupt(f"state object {name} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise StateCorrupt(f"state object {name} is not a JSON object")
    version = doc.get("version")
    if version != STATE_VERSION or isinstance(version, bool):
        raise StateCorrupt(
            f"state object {name} has version {version!r}; this scanner reads version 1"
        )
    files = doc.get("files")
    if not isinstance(files, dict):
        raise StateCorrupt(f"state object {name} has no 'files' object")
    for key, entry in files.items():
        if not isinstance(entry, FileEntry):
            raise StateCorrupt(
                f"state object {name}: entry {key!r} is not a file record "
                "(status queued|marked, etag string, size integer, folder, queued_at)"
            )
    updated_at = doc.get("updated_at")
    if updated_at is not None and not isinstance(updated_at, str):
        raise StateCorrupt(f"state object {name}: updated_at is not a string")
    source = doc.get("source_bucket")
    if source is not None and not isinstance(source, str):
        raise StateCorrupt(f"state object {name}: source_bucket is not a string")
    cursors = doc.get("cursors", {})
    if not isinstance(cursors, dict) or not all(isinstance(v, dict) for v in cursors.values()):
        raise StateCorrupt(f"state object {name}: cursors is not an object of objects")
    known = {"version", "files", "updated_at", "source_bucket", "cursors"}
    extra = {k: v for k, v in doc.items() if k not in known}
    return State(
        files=files,
        source_bucket=source,
        updated_at=updated_at,
        cursors=cursors,
        extra=extra,
    )


class _Parser:
    """A JSON parser for the state document that decodes its UTF-8 a window at a time.

    ``json.loads(raw)`` first decodes the whole object to one ``str`` (as large as the
    raw bytes, and alive next to them and the growing state: the peak of a run). Here
    the text is decoded ``_WINDOW`` bytes at a time and each value is parsed with the
    stdlib scanner (same grammar, same object hook), so the peak holds one window of
    text. Only the top-level object and ``files`` are walked by hand.
    """

    def __init__(self, raw: bytes, hook: Callable[[dict[str, Any]], Any]) -> None:
        self.raw = memoryview(raw)
        self.done = 0  # bytes of raw decoded so far
        self.text = ""
        self.pos = 0
        self.utf8 = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        self.decoder = json.JSONDecoder(object_hook=hook)

    def more(self) -> bool:
        """Decode the next window (keeping the unparsed tail); False at the end."""
        if self.done >= len(self.raw):
            return False
        window = self.raw[self.done : self.done + _WINDOW]
        self.done += len(window)
        self.text = self.text[self.pos :] + self.utf8.decode(window, self.done >= len(self.raw))
        self.pos = 0
        return True

    def skip_ws(self) -> str:
        """Skip whitespace; return the next character ('' at the end of the input)."""
        while True:
            self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text) or not self.more():
                return self.text[self.pos : self.pos + 1]

    def expect(self, chars: str) -> str:
        char = self.skip_ws()
        if not char or char not in chars:
            raise ValueError(f"expecting one of {chars!r} at byte {self.done}, got {char!r}")
        self.pos += 1
        return char

    def value(self) -> Any:
        """One JSON value; retried with more text when it runs past the window."""
        self.skip_ws()
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError:
                if self.more():
                    continue
                raise
            # A number (or anything) touching the window's end may continue past it.
            if end >= len(self.text) and self.more():
                continue
            self.pos = end
            return obj

    def key(self) -> str:
        key = self.value()
        if not isinstance(key, str):
            raise ValueError(f"expecting a string key at byte {self.done}")
        self.expect(":")
        return key

    def document(self) -> Any:
        if self.skip_ws() != "{":
            doc_value = self.value()  # not an object: decode() names the problem
            if self.skip_ws():
                raise ValueError(f"extra data at byte {self.done}")
            return doc_value
        self.expect("{")
        doc: dict[str, Any] = {}
        if self.skip_ws() == "}":
            self.pos += 1
        else:
            while True:
                key = self.key()
                if key == "files" and self.skip_ws() == "{":
                    doc[key] = self.files()
                else:
                    doc[key] = self.value()
                if self.expect(",}") == "}":
                    break
        if self.skip_ws():
            raise ValueError(f"extra data at byte {self.done}")
        return doc

    def files(self) -> dict[str, Any]:
        self.expect("{")
        files: dict[str, Any] = {}
        if self.skip_ws() == "}":
            self.pos += 1
            return files
        while True:
            key = self.key()
            files[key] = self.value()
            if self.expect(",}") == "}":
                return files


def check_source(state: State, bucket: str, *, name: str, force_rebind: bool) -> None:
    """Refuse a state object recorded for another source bucket (unless rebinding)."""
    if state.source_bucket not in (None, bucket) and not force_rebind:
        raise StateBucketMismatch(
            f"state object {name} describes bucket {state.source_bucket!r}, not {bucket!r}; "
            "use another S3_STATE_KEY, or --force-rebind to move it deliberately"
        )


def _entry_json(key: str, entry: FileEntry) -> str:
    return (
        f'{_encode_str(key)}: {{"status": {_encode_str(entry.status)}, '
        f'"etag": {_encode_str(entry.etag)}, "size": {int(entry.size)}, '
        f'"folder": {_encode_str(entry.folder)}, '
        f'"queued_at": {_encode_str(entry.queued_at)}}}'
    )


def iter_encoded(state: State, updated_at: str) -> Iterator[bytes]:
    """Encode ``state`` as UTF-8 JSON in chunks, so no second full copy is built."""
    head: dict[str, Any] = {"version": STATE_VERSION, "updated_at": updated_at}
    if state.source_bucket is not None:
        head["source_bucket"] = state.source_bucket
    if state.cursors:
        head["cursors"] = state.cursors
    head.update(state.extra)
    opening = json.dumps(head, ensure_ascii=False)[:-1] + ', "files": {'
    yield opening.encode("utf-8", "surrogatepass")
    chunk: list[str] = []
    first = True
    for key, entry in state.files.items():
        chunk.append(("" if first else ",\n ") + _entry_json(key, entry))
        first = False
        if len(chunk) >= 2000:
            yield "".join(chunk).encode("utf-8", "surrogatepass")
            chunk.clear()
    chunk.append("}}\n")
    yield "".join(chunk).encode("utf-8", "surrogatepass")


def encode(state: State, updated_at: str) -> bytes:
    """The whole state object as bytes (see :func:`iter_encoded` for the streaming form)."""
    buf = io.BytesIO()
    for part in iter_encoded(state, updated_at):
        buf.write(part)
    return buf.getvalue()


def apply(state: State, changes: StateChanges) -> State:
    """Merge one run's changes into ``state`` (mutated and returned).

    Entries outside ``changes.prefix`` are untouched by construction: the run only
    produces upserts and removals for keys it listed under its prefix.
    """
    state.files.update(changes.upserts)
    for key, seen_etag in changes.removed.items():
        current = state.files.get(key)
        if current is not None and current.etag == seen_etag and key not in changes.upserts:
            del state.files[key]
    if changes.cursor is not None:
        if changes.cursor:
            state.cursors[changes.prefix] = changes.cursor
        else:
            state.cursors.pop(changes.prefix, None)
    state.source_bucket = changes.source_bucket
    return state
