"""Strict JSON parsed as its bytes arrive: one object's members, handed on one by one.

:class:`ObjectScanner` parses a JSON object fed in chunks of any size, so the raw bytes
of a large document never exist whole, and hands on each member as soon as it is
parsed: the top-level object's members, and the members of one of them (``expand``)
one by one rather than as one value. Only those two levels are walked here; every other
value is parsed by the standard library's scanner (the same grammar). It knows no
schema: :mod:`.state_codec` is the state object's.

*Strict* is RFC 8259 where Python's ``json`` is lenient: ``NaN`` and ``Infinity`` are
refused, so is a number too large for a float (``1e400`` would be written back as
``Infinity``), and nesting too deep for the parser is a ``ValueError``, not a
``RecursionError``. UTF-8 is read with ``surrogatepass``, so a lone surrogate written
that way reads back as it was.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Iterator
from typing import Any

FIELD, OPEN, ENTRY = "field", "open", "entry"
# A member handed on: (FIELD, key, value) for a top-level member; (OPEN, expand, None)
# where the expanded object starts, then (ENTRY, key, value) for each of its members.
Member = tuple[str, str, Any]

_WS = re.compile(r"[ \t\n\r]*")
_MORE: Any = object()  # a value may run past the input so far
# Where the scanner is in the grammar of an object: which token comes next.
_START, _BARE, _FIRST, _MEMBER, _NEXT, _END = range(6)
_OPENED: Any = object()  # a member's value: the expanded object starts here


class NotAnObject(ValueError):
    """The document is valid JSON, but not an object."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def strict_decoder() -> json.JSONDecoder:
    """A ``json.JSONDecoder`` that refuses NaN, Infinity and numbers past a float."""
    return json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def loads(raw: bytes | str) -> Any:
    """A whole document (in any encoding ``json.loads`` detects), strictly."""
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("values nested too deep") from None


def members(doc: Any, expand: str) -> Iterator[Member]:
    """The members of a document parsed whole, as :class:`ObjectScanner` hands them on."""
    if not isinstance(doc, dict):
        raise NotAnObject(f"the document is a JSON {type(doc).__name__}, not an object")
    for key, value in doc.items():
        if key == expand and isinstance(value, dict):
            yield OPEN, key, None
            for entry_key, entry in value.items():
                yield ENTRY, entry_key, entry
        else:
            yield FIELD, key, value


class ObjectScanner:
    """Parses one JSON object fed as bytes, split anywhere; see the module docstring.

    ``feed(chunk)`` and then ``close()`` each return an iterator of the :data:`Member`
    tuples that input completes, in document order; they are parsed as they are taken,
    so a consumer that raises on one parses no further. Input that is not a strict JSON
    object raises ``ValueError`` (:class:`NotAnObject` for valid JSON of another type),
    a syntax error from the chunk that holds it. A document in UTF-16 or UTF-32 (rare)
    is collected and parsed whole by ``close``.

    The time stays linear in the document's size: the unparsed text is joined once per
    chunk, and a value cut by the end of the input so far is parsed again only once that
    text has doubled, not once per chunk.
    """

    def __init__(self, *, expand: str) -> None:
        self.expand = expand
        self.received = 0  # bytes fed
        self._head = b""  # the first bytes, until the encoding is known
        self._utf8: codecs.IncrementalDecoder | None = None
        self._whole: bytearray | None = None  # not UTF-8: parsed whole at close
        self._json = strict_decoder()
        self._text = ""  # the unparsed text is self._text[self._pos:]
        self._pos = 0
        self._queued: list[str] = []  # text received but not yet joined to _text
        self._queued_len = 0
        self._need = 0  # parse again once the unparsed text is at least this long
        self._final = False
        self._at = _START
        self._depth = 0  # 1 inside the expanded object

    def feed(self, chunk: bytes | memoryview) -> Iterator[Member]:
        """The members completed by the next bytes of the document."""
        self.received += len(chunk)
        if self._utf8 is not None:
            yield from self._take(self._utf8.decode(chunk))
        elif self._whole is not None:
            self._whole += chunk
        else:
            self._head += bytes(chunk)
            if len(self._head) >= 4:
                yield from self._choose()

    def close(self) -> Iterator[Member]:
        """The members completed by the end of the document (raises if it is cut)."""
        if self._utf8 is None and self._whole is None:
            yield from self._choose()
        self._final = True
        if self._whole is not None:
            raw, self._whole, self._at = bytes(self._whole), None, _END
            yield from members(loads(raw), self.expand)
            return
        assert self._utf8 is not None
        yield from self._take(self._utf8.decode(b"", True))
        if self._at != _END:
            raise ValueError(f"unexpected end of data at byte {self.received}")

    def _choose(self) -> Iterator[Member]:
        """Read the encoding from the first bytes (RFC 8259's rule, as ``json.loads``)."""
        head, self._head = self._head, b""
        if json.detect_encoding(head[:4]) != "utf-8":
            self._whole = bytearray(head)
            return
        self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        yield from self._take(self._utf8.decode(head))

    def _take(self, text: str) -> Iterator[Member]:
        self._queued.append(text)
        self._queued_len += len(text)
        if not self._final and len(self._text) - self._pos + self._queued_len < self._need:
            return  # a value known to run past the input so far: wait for more of it
        self._text = self._text[self._pos :] + "".join(self._queued)
        self._queued.clear()
        self._queued_len = self._pos = self._need = 0
        yield from self._scan()

    def _scan(self) -> Iterator[Member]:
        """Take tokens while the text lasts: one per pass, as the state ``_at`` says."""
        while (char := self._skip_space()) is not None:
            at = self._at
            if at == _MEMBER:
                if (member := self._member(char)) is _MORE:
                    return
                key, value = member
                if value is _OPENED:
                    self._depth, self._at = 1, _FIRST
                    yield OPEN, key, None
                else:
                    self._at = _NEXT
                    yield (ENTRY if self._depth else FIELD), key, value
            elif at == _NEXT and char == ",":
                self._pos += 1
                self._at = _MEMBER
            elif at in (_FIRST, _NEXT) and char == "}":
                self._pos += 1
                self._depth -= 1
                self._at = _NEXT if self._depth >= 0 else _END
            elif at == _FIRST:
                self._at = _MEMBER
            elif at == _START and char == "{":
                self._pos += 1
                self._at = _FIRST
            elif at == _START:
                self._at = _BARE
            elif at == _BARE:  # valid JSON of another type, or a syntax error
                if (value := self._value()) is _MORE:
                    return
                raise NotAnObject(f"the document is a JSON {type(value).__name__}, not an object")
            else:
                what = "',' or '}'" if at == _NEXT else "the end of the document"
                raise ValueError(f"expecting {what} near byte {self.received}, got {char!r}")

    def _member(self, char: str) -> Any:
        """``"key": value`` at the position as ``(key, value)`` (value ``_OPENED`` where
        the expanded object starts), or ``_MORE`` when it may run past the input so far:
        then nothing of it is taken."""
        if char != '"':
            raise ValueError(f"expecting a string key near byte {self.received}, got {char!r}")
        start = self._pos
        key = self._value()
        if key is not _MORE and (colon := self._skip_space()) is not None:
            if colon != ":":
                raise ValueError(f"expecting ':' near byte {self.received}, got {colon!r}")
            self._pos += 1
            opening = self._skip_space()
            if opening == "{" and self._depth == 0 and key == self.expand:
                self._pos += 1
                return key, _OPENED
            value = _MORE if opening is None else self._value()
            if value is not _MORE:
                return key, value
        self._pos = start
        return _MORE

    def _skip_space(self) -> str | None:
        """The next character after whitespace; None at the end of the input so far."""
        self._pos = _WS.match(self._text, self._pos).end()  # type: ignore[union-attr]
        return self._text[self._pos] if self._pos < len(self._text) else None

    def _value(self) -> Any:
        """One JSON value at the position, or ``_MORE`` when it may run past the input.

        A syntax error before the end of the input so far is raised at once. A value cut
        by the end is parsed again only once the unparsed text has doubled.
        """
        try:
            value, end = self._json.raw_decode(self._text, self._pos)
        except json.JSONDecodeError as exc:
            # Input ending inside a value is reported at the start of an unterminated
            # string, or within a few characters of the end ("tru", "-", "\u12").
            cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self._text) - 6
            if self._final or not cut:
                raise
            end = len(self._text)
        except RecursionError:
            raise ValueError(f"values nested too deep near byte {self.received}") from None
        # A value touching the end of the text (a number) may continue past it.
        if end >= len(self._text) and not self._final:
            self._need = 2 * (len(self._text) - self._pos)
            return _MORE
        self._pos = end
        return value
