"""The state object's JSON form, streamed both ways (SPEC "State object").

:class:`StateDecoder` parses the object as its chunks arrive (the raw bytes never exist
whole), a ``json`` object hook turns each entry into a :class:`~.state.FileEntry` as soon
as it is parsed, straight into a compact :class:`~.state.Files`. :class:`EncodedBody`
writes it back the same way: the encoded bytes are produced as they are sent, never
whole next to the state.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from .errors import StateCorrupt, StateTooLarge
from .state import STATE_VERSION, STATUSES, FileEntry, Files, State

_ENTRY_FIELDS = frozenset({"status", "etag", "size", "folder", "queued_at"})
_encode_str = json.encoder.encode_basestring
_WS = re.compile(r"[ \t\n\r]*")
_WINDOW = 1 << 20  # bytes of the raw state decoded to text at a time


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
