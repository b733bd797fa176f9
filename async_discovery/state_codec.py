"""The state object's JSON form and schema, streamed both ways (SPEC "State object").

:class:`StateDecoder` takes the object's bytes as they arrive:
:class:`~.json_stream.ObjectScanner` parses them (the raw bytes never exist whole) and
hands on each member; each entry under ``files`` becomes a :class:`~.state.FileEntry`
as soon as it is parsed, straight into a compact :class:`~.state.Files`, and every
other value (cursors, unknown fields) is kept exactly as parsed; the schema is checked
here. :class:`EncodedBody`
writes the object back the same way: its bytes are produced as they are sent, never
whole next to the state.

Every object is streamed, a shard too (``scripts/measure_codec.py``, figures in
docs/performance.md): ``json.loads`` of the whole body with the same schema pass peaks
4 to 5 times higher (a million entries, 197 MB: 1,048 MiB against 203 MiB streamed).
For a 10,000-entry shard it would save ~14 ms of CPU, but a shard as read is bounded
only by ``STATE_MAX_BYTES``, and streaming stops at the chunk holding a syntax error
or a wrong entry: one path, not a second switched by size.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from .errors import StateCorrupt, StateTooLarge
from .json_stream import ENTRY, OPEN, Member, NotAnObject, ObjectScanner
from .resume import cursor_problem
from .state import STATE_VERSION, STATUSES, FileEntry, Files, State

# An entry's fields: "status" (queued|marked) and "etag" (string) must be present;
# "size" (integer, default 0), "folder" and "queued_at" (strings, default "") may be
# absent; "last_modified" is accepted and dropped. Any other field makes it corrupt.
_ENTRY_FIELDS = frozenset({"status", "etag", "size", "folder", "queued_at", "last_modified"})
_MAX_DEPTH = 64  # nesting of a cursor or unknown field's value; deeper is not this schema
_KNOWN = frozenset({"version", "files", "updated_at", "source_bucket", "cursors"})
_encode_str = json.encoder.encode_basestring
_WINDOW = 1 << 20  # bytes of a whole raw state fed to the decoder at a time


def decode(
    raw: bytes, *, name: str, max_bytes: int | None = None, version: int = STATE_VERSION
) -> State:
    """Parse a state object; ``name`` (``s3://bucket/key``) is quoted in errors.

    Raises :class:`StateCorrupt` for anything that is not JSON of the state schema and
    :class:`StateTooLarge` past ``max_bytes``. One-shot form of :class:`StateDecoder`.
    """
    if max_bytes is not None and len(raw) > max_bytes:
        raise StateTooLarge(
            f"state object {name} is {len(raw)} bytes, over STATE_MAX_BYTES={max_bytes}"
        )
    decoder = StateDecoder(name=name, max_bytes=max_bytes, version=version)
    view = memoryview(raw)
    for start in range(0, len(view), _WINDOW):
        decoder.feed(view[start : start + _WINDOW])
    return decoder.close()


def decode_head(data: bytes, *, name: str, version: int, step: int = 1024) -> State | None:
    """The fields before ``files`` of an object whose first bytes are ``data`` (see
    :meth:`StateDecoder.head`), fed ``step`` bytes at a time until ``files`` is reached
    (its entries are not wanted); raises :class:`StateCorrupt` as :func:`decode` would."""
    decoder = StateDecoder(name=name, version=version)
    view = memoryview(data)
    for start in range(0, len(view), step):
        decoder.feed(view[start : start + step])
        head = decoder.head()
        if head is not None:
            return head
    return None


class StateDecoder:
    """Incremental decoder of a state object: ``feed(chunk)`` as bytes arrive, then
    ``close()`` for the :class:`State`.

    The raw object is never held whole: it is as large as the decoded state, and would
    be alive next to it (the peak of a run). Raises :class:`StateCorrupt` (naming the
    object) from ``feed`` or ``close`` for anything that is not JSON of the state
    schema, :class:`StateTooLarge` once more than ``max_bytes`` were fed. A syntax
    error stops decoding in the ``feed`` that holds it, and so does an entry that is not
    a file record once ``version`` was read (as this scanner writes it, first).
    """

    def __init__(
        self, *, name: str, max_bytes: int | None = None, version: int = STATE_VERSION
    ) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.version = version  # 1: the single state object; 2: a folder's shard
        self.received = 0
        self._scanner = ObjectScanner(expand="files")
        self._fields: dict[str, Any] = {}  # the top-level members read so far
        self._files = Files()
        self._bad: str | None = None  # the first entry that is not a file record

    def feed(self, chunk: bytes | memoryview) -> None:
        """Take the next bytes of the object (any size, split anywhere)."""
        self.received += len(chunk)
        if self.max_bytes is not None and self.received > self.max_bytes:
            raise StateTooLarge(
                f"state object {self.name} is over STATE_MAX_BYTES={self.max_bytes} bytes"
            )
        self._take(self._scanner.feed(chunk))

    def head(self) -> State | None:
        """The top-level fields fed so far, once they reach ``files`` (this scanner writes
        every other field first), as a :class:`State` without files, checked as
        :meth:`close` checks a whole object; None while ``files`` is not reached."""
        if "files" not in self._fields or "version" not in self._fields:
            return None  # another writer's order: read the whole object
        return self._state({**self._fields, "files": Files()})

    def close(self) -> State:
        """The decoded state, once all bytes were fed."""
        self._take(self._scanner.close())
        state = self._state(self._fields)
        self._fields, self._files = {}, Files()  # the state is the caller's alone
        return state

    def _take(self, members: Iterable[Member]) -> None:
        """Record the members the scanner hands on, parsing as they are taken."""
        try:
            for kind, key, value in members:
                if kind == ENTRY:
                    self._add(key, value)
                elif kind == OPEN:  # a repeated "files": the last one counts
                    self._files, self._bad = Files(), None
                    self._fields[key] = self._files
                else:
                    self._fields[key] = value
        except NotAnObject:
            raise StateCorrupt(f"state object {self.name} is not a JSON object") from None
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            raise StateCorrupt(f"state object {self.name} is not valid JSON: {exc}") from exc

    def _add(self, key: str, obj: Any) -> None:
        """Record one value found directly under ``files``."""
        if (
            isinstance(obj, dict)
            and "etag" in obj
            and "status" in obj
            and obj.keys() <= _ENTRY_FIELDS
        ):
            etag, size, folder = obj["etag"], obj.get("size", 0), obj.get("folder", "")
            status, at = obj["status"], obj.get("queued_at", "")
            if (
                isinstance(etag, str)
                and type(size) is int
                and isinstance(folder, str)
                and isinstance(status, str)
                and status in STATUSES
                and isinstance(at, str)
            ):
                self._files[key] = FileEntry(etag, size, folder, at, status)
                return
        if _is_version(self._fields.get("version"), self.version):
            # The version is known good: stop here rather than parse the rest.
            raise StateCorrupt(self._bad_entry(key))
        if self._bad is None:
            self._bad = key  # reported after the version check, as a whole parse would

    def _bad_entry(self, key: str) -> str:
        return (
            f"state object {self.name}: entry {key!r} is not a file record (status "
            "queued|marked and etag string required; size integer, folder, queued_at "
            "strings optional)"
        )

    def _state(self, doc: dict[str, Any]) -> State:
        """The :class:`State` of the top-level members, checked against the schema."""
        name = self.name
        version = doc.get("version")
        if not _is_version(version, self.version):
            what = "a state object" if self.version == STATE_VERSION else "a folder's shard"
            raise StateCorrupt(
                f"state object {name} has version {version!r}; as {what} this scanner reads "
                f"version {self.version}"
            )
        files = doc.get("files")
        if not isinstance(files, Files):
            raise StateCorrupt(f"state object {name} has no 'files' object")
        if self._bad is not None:
            raise StateCorrupt(self._bad_entry(self._bad))
        updated_at = doc.get("updated_at")
        if updated_at is not None and not isinstance(updated_at, str):
            raise StateCorrupt(f"state object {name}: updated_at is not a string")
        source = doc.get("source_bucket")
        if source is not None and not isinstance(source, str):
            raise StateCorrupt(f"state object {name}: source_bucket is not a string")
        cursors = doc.get("cursors", {})
        if not isinstance(cursors, dict):
            raise StateCorrupt(f"state object {name}: cursors is not an object of objects")
        for prefix, cursor in cursors.items():
            problem = cursor_problem(cursor)
            if problem is not None:
                raise StateCorrupt(f"state object {name}: the cursor of {prefix!r} {problem}")
        extra = {k: v for k, v in doc.items() if k not in _KNOWN}
        if _too_deep([cursors, extra], _MAX_DEPTH + 2):
            raise StateCorrupt(
                f"state object {name}: a cursor or field nests deeper than {_MAX_DEPTH} levels"
            )
        return State(
            files=files,
            source_bucket=source,
            updated_at=updated_at,
            cursors=cursors,
            extra=extra,
            version=self.version,
        )


def _is_version(value: Any, version: int) -> bool:
    """``value`` is the integer ``version`` (not 1.0, true or "1")."""
    return type(value) is int and value == version


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects or arrays deeper than ``limit`` (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item)
    return False


def _entry_json(key: str, entry: FileEntry) -> str:
    return (
        f'{_encode_str(key)}: {{"status": {_encode_str(entry.status)}, '
        f'"etag": {_encode_str(entry.etag)}, "size": {int(entry.size)}, '
        f'"folder": {_encode_str(entry.folder)}, '
        f'"queued_at": {_encode_str(entry.queued_at)}}}'
    )


def iter_encoded(state: State, updated_at: str) -> Iterator[bytes]:
    """Encode ``state`` as UTF-8 JSON in chunks, so no second full copy is built."""
    head: dict[str, Any] = {"version": state.version, "updated_at": updated_at}
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
