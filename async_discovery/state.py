"""The state object (SPEC "State object"): decode, encode and merge, without I/O.

Memory matters here: a state of 100,000 entries is held for the whole run, so its size
per entry is the scanner's memory slope. :class:`StateDecoder` parses the object as
its chunks arrive (the raw bytes never exist whole), a ``json`` object hook turns each
entry into a :class:`FileEntry` as soon as it is parsed, and :class:`Files` keeps it as
one packed bytes value per key. :class:`EncodedBody` writes it back the same way: the
encoded bytes are produced as they are sent, never whole next to the state.
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
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


def decode(raw: bytes, *, name: str, max_bytes: int | None = None) -> State:
    """Parse a state object; ``name`` (``s3://bucket/key``) is quoted in errors.

    Raises :class:`StateCorrupt` for anything that is not JSON of the state schema and
    :class:`StateTooLarge` past ``max_bytes``. One-shot form of :class:`StateDecoder`.
    """
    if max_bytes is not None and len(raw) > max_bytes:
        raise StateTooLarge(
            f"state object {name} is {len(raw)} bytes, over STATE_MAX_BYTES={max_bytes}"
        )
    decoder = StateDecoder(name=name, max_bytes=max_bytes)
    view = memoryview(raw)
    for start in range(0, len(view), _WINDOW):
        decoder.feed(view[start : start + _WINDOW])
    return decoder.close()


_MORE: Any = object()  # a parse step needs more input


class StateDecoder:
    """Incremental decoder of a state object: ``feed(chunk)`` as bytes arrive, then
    ``close()`` for the :class:`State`.

    The raw object is never held whole (it is as large as the decoded state, and
    alive next to it: the peak of a run). Each chunk's UTF-8 is decoded and appended to
    the unparsed tail, and every JSON value is parsed with the stdlib scanner (same
    grammar, same object hook); only the top-level object and ``files`` are walked by
    hand, as a small state machine that stops where the input ends and resumes on the
    next chunk. Entries go straight into a compact :class:`Files`.

    Raises :class:`StateCorrupt` (naming the object) from ``feed`` or ``close`` for
    anything that is not JSON of the state schema, :class:`StateTooLarge` once more
    than ``max_bytes`` were fed.
    """

    def __init__(self, *, name: str, max_bytes: int | None = None) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.received = 0
        self._head = b""  # the first bytes, until the encoding is known
        self._whole: bytearray | None = None  # UTF-16/32 or BOM: rare, parsed whole
        self._utf8: codecs.IncrementalDecoder | None = None
        self._text = ""
        self._pos = 0
        self._final = False
        self._step: Callable[[], Any] = self._start
        self._key = ""
        self._doc: dict[str, Any] = {}
        self._files = Files()
        self._bad: str | None = None  # the first entry that is not a file record
        self._value: Any = None  # the document when it is not an object
        shared: dict[str, str] = {}

        def hook(obj: dict[str, Any]) -> Any:
            if (
                "etag" in obj
                and "status" in obj
                and obj.keys() <= _ENTRY_FIELDS | {"last_modified"}
            ):
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

        self._hook = hook
        self._json = json.JSONDecoder(object_hook=hook)

    # -- input ----------------------------------------------------------------------

    def feed(self, chunk: bytes | memoryview) -> None:
        """Take the next bytes of the object (any size, split anywhere)."""
        self.received += len(chunk)
        if self.max_bytes is not None and self.received > self.max_bytes:
            raise StateTooLarge(
                f"state object {self.name} is over STATE_MAX_BYTES={self.max_bytes} bytes"
            )
        try:
            if self._whole is not None:
                self._whole += chunk
            elif self._utf8 is not None:
                self._append(self._utf8.decode(chunk))
            else:
                self._head += bytes(chunk)
                if len(self._head) >= 4:
                    self._choose()
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            raise StateCorrupt(f"state object {self.name} is not valid JSON: {exc}") from exc

    def close(self) -> State:
        """The decoded state, once all bytes were fed."""
        try:
            if self._utf8 is None and self._whole is None:
                self._choose()
            if self._whole is not None:
                doc = json.loads(bytes(self._whole), object_hook=self._hook)
                self._whole = None
                if isinstance(doc, dict) and isinstance(doc.get("files"), dict):
                    files = doc["files"]
                    for key, entry in files.items():
                        self._add(key, entry)
                    doc["files"] = self._files
                return self._state(doc)
            assert self._utf8 is not None
            self._final = True
            self._append(self._utf8.decode(b"", True))
        except ValueError as exc:
            raise StateCorrupt(f"state object {self.name} is not valid JSON: {exc}") from exc
        return self._state(self._value if self._step == self._done else self._doc)

    def _choose(self) -> None:
        head, self._head = self._head, b""
        if json.detect_encoding(head[:4]) == "utf-8":
            self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogatepass")
            self._append(self._utf8.decode(head))
        else:
            self._whole = bytearray(head)

    def _append(self, text: str) -> None:
        self._text = self._text[self._pos :] + text
        self._pos = 0
        while self._step() is not _MORE:
            pass
        if self._final and self._step != self._end and self._step != self._done:
            raise ValueError(f"unexpected end of data at byte {self.received}")

    # -- parse steps: each consumes one token and sets the next step, or returns _MORE

    def _peek(self) -> str | None:
        """Skip whitespace; the next character, or None at the end of the input so far."""
        self._pos = _WS.match(self._text, self._pos).end()  # type: ignore[union-attr]
        return self._text[self._pos] if self._pos < len(self._text) else None

    def _expect(self, chars: str) -> str | None:
        char = self._peek()
        if char is None:
            return None
        if char not in chars:
            raise ValueError(f"expecting one of {chars!r} near byte {self.received}, got {char!r}")
        self._pos += 1
        return char

    def _parse_value(self) -> Any:
        """One JSON value, or _MORE when it may run past the input so far."""
        if self._peek() is None:
            return _MORE
        try:
            obj, end = self._json.raw_decode(self._text, self._pos)
        except json.JSONDecodeError:
            if self._final:
                raise
            return _MORE
        # A number (or anything) touching the end of the text may continue past it.
        if end >= len(self._text) and not self._final:
            return _MORE
        self._pos = end
        return obj

    def _parse_key(self) -> Any:
        key = self._parse_value()
        if key is not _MORE and not isinstance(key, str):
            raise ValueError(f"expecting a string key near byte {self.received}")
        return key

    def _start(self) -> Any:
        char = self._peek()
        if char is None:
            return _MORE
        if char == "{":
            self._pos += 1
            self._step = self._top_first
        else:  # not an object: _state() names the problem
            self._step = self._bare
        return None

    def _bare(self) -> Any:
        value = self._parse_value()
        if value is _MORE:
            return _MORE
        self._value = value
        self._step = self._done
        return None

    def _top_first(self) -> Any:
        char = self._peek()
        if char is None:
            return _MORE
        if char == "}":
            self._pos += 1
            self._step = self._end
        else:
            self._step = self._top_key
        return None

    def _top_key(self) -> Any:
        key = self._parse_key()
        if key is _MORE:
            return _MORE
        self._key = key
        self._step = self._top_colon
        return None

    def _top_colon(self) -> Any:
        if self._expect(":") is None:
            return _MORE
        self._step = self._top_value
        return None

    def _top_value(self) -> Any:
        if self._key == "files":
            char = self._peek()
            if char is None:
                return _MORE
            if char == "{":
                self._pos += 1
                self._files, self._bad = Files(), None  # a repeated key: the last wins
                self._doc["files"] = self._files
                self._step = self._files_first
                return None
        value = self._parse_value()
        if value is _MORE:
            return _MORE
        self._doc[self._key] = value
        self._step = self._top_next
        return None

    def _top_next(self) -> Any:
        char = self._expect(",}")
        if char is None:
            return _MORE
        self._step = self._top_key if char == "," else self._end
        return None

    def _files_first(self) -> Any:
        char = self._peek()
        if char is None:
            return _MORE
        if char == "}":
            self._pos += 1
            self._step = self._top_next
        else:
            self._step = self._files_key
        return None

    def _files_key(self) -> Any:
        key = self._parse_key()
        if key is _MORE:
            return _MORE
        self._key = key
        self._step = self._files_colon
        return None

    def _files_colon(self) -> Any:
        if self._expect(":") is None:
            return _MORE
        self._step = self._files_value
        return None

    def _files_value(self) -> Any:
        entry = self._parse_value()
        if entry is _MORE:
            return _MORE
        self._add(self._key, entry)
        self._step = self._files_next
        return None

    def _files_next(self) -> Any:
        char = self._expect(",}")
        if char is None:
            return _MORE
        self._step = self._files_key if char == "," else self._top_next
        return None

    def _end(self) -> Any:
        """After the document: only whitespace may follow."""
        if self._peek() is not None:
            raise ValueError(f"extra data near byte {self.received}")
        return _MORE

    def _done(self) -> Any:
        """After a bare (non-object) document: only whitespace may follow."""
        return self._end()

    def _add(self, key: str, entry: Any) -> None:
        if isinstance(entry, FileEntry):
            self._files[key] = entry
        elif self._bad is None:
            self._bad = key  # reported after the version check, as a whole parse would

    # -- the schema -----------------------------------------------------------------

    def _state(self, doc: Any) -> State:
        name = self.name
        if not isinstance(doc, dict):
            raise StateCorrupt(f"state object {name} is not a JSON object")
        version = doc.get("version")
        if version != STATE_VERSION or isinstance(version, bool):
            raise StateCorrupt(
                f"state object {name} has version {version!r}; this scanner reads version 1"
            )
        files = doc.get("files")
        if not isinstance(files, Files):
            raise StateCorrupt(f"state object {name} has no 'files' object")
        if self._bad is not None:
            raise StateCorrupt(
                f"state object {name}: entry {self._bad!r} is not a file record "
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


class EncodedBody(io.RawIOBase):
    """The encoded state as a seekable, re-readable file of known length.

    Given to PutObject instead of :func:`encode`'s bytes, which would be as large as
    the state and alive next to it (the peak of a run). Reads regenerate the chunks of
    :func:`iter_encoded`; seeking back restarts the encoding, which is how botocore
    (checksum, payload hash, retries) and aiohttp re-read a body. The length comes from
    a first counting pass (CPU is cheap: ~0.07 s per 100,000 entries). The state must
    not change while the body is in use. (No ``name`` attribute: aiohttp would turn it
    into a Content-Disposition header.)
    """

    def __init__(self, state: State, updated_at: str) -> None:
        super().__init__()
        self._state = state
        self._updated_at = updated_at
        self._length = sum(len(part) for part in iter_encoded(state, updated_at))
        self._rewind()

    def _rewind(self) -> None:
        self._parts: Iterator[bytes] = iter_encoded(self._state, self._updated_at)
        self._part = b""
        self._offset = 0  # read position within _part
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        """Always readable."""
        return True

    def seekable(self) -> bool:
        """Seekable: seeking back re-encodes from the start."""
        return True

    def tell(self) -> int:
        """The read position in bytes."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` (from start, current or end); back means re-encoding."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        target = base + offset
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target < self._pos:
            self._rewind()
        if target >= self._length:  # at (or past) the end: nothing left to encode
            self._parts, self._part, self._offset, self._pos = iter(()), b"", 0, target
        while self._pos < target and self.read(target - self._pos):
            pass
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        """At most ``size`` bytes (fewer at a chunk's end). Overridden because
        ``RawIOBase.read`` allocates ``size`` bytes first, and aiohttp asks for as much
        as the remaining Content-Length: the whole body."""
        if size is None or size < 0:
            return self.readall()
        while self._offset >= len(self._part):
            part = next(self._parts, None)
            if part is None:
                return b""
            self._part, self._offset = part, 0
        data = self._part[self._offset : self._offset + size]
        self._offset += len(data)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer``; the count may be short, 0 only at the end."""
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


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
