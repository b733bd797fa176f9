"""The state object's JSON form, streamed both ways (SPEC "State object").

:class:`StateDecoder` parses the object as its chunks arrive (the raw bytes never exist
whole) and turns each entry directly under ``files`` into a :class:`~.state.FileEntry` as
soon as it is parsed, straight into a compact :class:`~.state.Files`; every other value
(cursors, unknown fields) is kept exactly as parsed. :class:`EncodedBody`
writes it back the same way: the encoded bytes are produced as they are sent, never
whole next to the state.
"""

from __future__ import annotations

import codecs
import io
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from .errors import StateCorrupt, StateTooLarge
from .resume import cursor_problem
from .state import STATE_VERSION, STATUSES, FileEntry, Files, State

# An entry's fields: "status" (queued|marked) and "etag" (string) must be present;
# "size" (integer, default 0), "folder" and "queued_at" (strings, default "") may be
# absent; "last_modified" is accepted and dropped. Any other field makes it corrupt.
_ENTRY_FIELDS = frozenset({"status", "etag", "size", "folder", "queued_at", "last_modified"})
_MAX_DEPTH = 64  # nesting of a cursor or unknown field's value; deeper is not this schema
_encode_str = json.encoder.encode_basestring
_WS = re.compile(r"[ \t\n\r]*")
_WINDOW = 1 << 20  # bytes of the raw state decoded to text at a time


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


_MORE: Any = object()  # a parse step needs more input


def _closed() -> Any:
    """The parse step of a closed decoder (a plain function: no cycle back to it)."""
    raise ValueError("the state decoder is closed")


class StateDecoder:
    """Incremental decoder of a state object: ``feed(chunk)`` as bytes arrive, then
    ``close()`` for the :class:`State`.

    The raw object is never held whole (it is as large as the decoded state, and
    alive next to it: the peak of a run). Each chunk's UTF-8 is decoded and appended to
    the unparsed tail, and every JSON value is parsed with the stdlib scanner (same
    grammar, without NaN/Infinity); only the top-level object and ``files`` are walked
    by hand, as a small state machine that stops where the input ends and resumes on
    the next chunk. Entries go straight into a compact :class:`Files`.

    Raises :class:`StateCorrupt` (naming the object) from ``feed`` or ``close`` for
    anything that is not JSON of the state schema, :class:`StateTooLarge` once more
    than ``max_bytes`` were fed. A syntax error stops decoding in the ``feed`` that
    holds it, and so does an entry that is not a file record once ``version`` was read
    (as this scanner writes it, first); the time stays linear in the object's size.
    """

    def __init__(
        self, *, name: str, max_bytes: int | None = None, version: int = STATE_VERSION
    ) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.version = version  # 1: the single state object; 2: a folder's shard
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
        self._shared: dict[str, str] = {}
        # Text received but not yet appended to _text: appending it per chunk would copy
        # the unparsed tail each time (quadratic behind a value that spans many chunks).
        self._queued: list[str] = []
        self._queued_len = 0
        self._need = 0  # parse again once the unparsed text is at least this long
        self._json = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)

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

    def head(self) -> State | None:
        """The top-level fields fed so far, once they reach ``files`` (this scanner writes
        every other field first), as a :class:`State` without files, checked as
        :meth:`close` checks a whole object; None while ``files`` is not reached."""
        if "files" not in self._doc or "version" not in self._doc:
            return None  # another writer's order: read the whole object
        return self._state({**self._doc, "files": Files()})

    def close(self) -> State:
        """The decoded state, once all bytes were fed.

        The decoder then lets go of what it built: ``_step`` holds a bound method of the
        decoder (a reference cycle), so anything it still held would wait for the cycle
        collector, and a run reading shard after shard would pile them up.
        """
        try:
            return self._close()
        finally:
            self._step = _closed
            self._files, self._doc, self._value = Files(), {}, None
            self._text, self._shared, self._whole = "", {}, None

    def _close(self) -> State:
        try:
            if self._utf8 is None and self._whole is None:
                self._choose()
            if self._whole is not None:
                try:
                    doc = json.loads(
                        bytes(self._whole),
                        parse_constant=_reject_constant,
                        parse_float=_finite_float,
                    )
                except RecursionError:
                    raise ValueError("values nested too deep") from None
                self._whole = None
                if isinstance(doc, dict) and isinstance(doc.get("files"), dict):
                    for key, entry in doc["files"].items():
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
        self._queued.append(text)
        self._queued_len += len(text)
        if not self._final and len(self._text) - self._pos + self._queued_len < self._need:
            return  # a value known to run past the input so far: wait for more of it
        self._text = self._text[self._pos :] + "".join(self._queued)
        self._queued.clear()
        self._queued_len = self._pos = self._need = 0
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
        """One JSON value, or _MORE when it may run past the input so far.

        A syntax error before the end of the input so far is reported at once. A value
        cut by the end is parsed again only once the unparsed text has doubled, so a
        value spanning many chunks costs linear time, not a parse per chunk.
        """
        if self._peek() is None:
            return _MORE
        try:
            obj, end = self._json.raw_decode(self._text, self._pos)
        except json.JSONDecodeError as exc:
            # Input ending inside a value is reported at the start of an unterminated
            # string, or within a few characters of the end ("tru", "-", "\u12").
            cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self._text) - 6
            if self._final or not cut:
                raise
            self._need = 2 * (len(self._text) - self._pos)
            return _MORE
        except RecursionError:
            raise ValueError(f"values nested too deep near byte {self.received}") from None
        # A number (or anything) touching the end of the text may continue past it.
        if end >= len(self._text) and not self._final:
            self._need = 2 * (len(self._text) - self._pos)
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
                shared = self._shared
                self._files[key] = FileEntry(
                    etag,
                    size,
                    shared.setdefault(folder, folder),
                    shared.setdefault(at, at),
                    shared.setdefault(status, status),
                )
                return
        if _is_version(self._doc.get("version", None), self.version):
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

    # -- the schema -----------------------------------------------------------------

    def _state(self, doc: Any) -> State:
        name = self.name
        if not isinstance(doc, dict):
            raise StateCorrupt(f"state object {name} is not a JSON object")
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
        known = {"version", "files", "updated_at", "source_bucket", "cursors"}
        extra = {k: v for k, v in doc.items() if k not in known}
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent; one too large for a float (1e400)
    would be written back as ``Infinity``, which is not JSON."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


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
