"""The generic half of the state codec: a strict JSON object scanned as its bytes arrive,
its members handed on one by one (the state's schema is tested in test_state*.py)."""

from __future__ import annotations

import json
import random

import pytest

from async_discovery.json_stream import (
    ENTRY,
    FIELD,
    OPEN,
    Member,
    NotAnObject,
    ObjectScanner,
    loads,
    members,
)

DOC = {
    "a": 1,
    "files": {"x": {"n": [1, 2.5]}, "é\ud800": "s", "z": None},
    "b": {"files": {"nested": True}},
    "files2": [],
}


def scan(raw: bytes, sizes: list[int]) -> list[Member]:
    scanner, pos, i = ObjectScanner(expand="files"), 0, 0
    got: list[Member] = []
    while pos < len(raw):
        got += scanner.feed(raw[pos : pos + sizes[i % len(sizes)]])
        pos, i = pos + sizes[i % len(sizes)], i + 1
    return got + list(scanner.close())


def test_members_come_in_document_order_split_anywhere() -> None:
    raw = json.dumps(DOC, ensure_ascii=False, indent=1).encode("utf-8", "surrogatepass")
    expected: list[Member] = [
        (FIELD, "a", 1),
        (OPEN, "files", None),
        (ENTRY, "x", {"n": [1, 2.5]}),
        (ENTRY, "é\ud800", "s"),
        (ENTRY, "z", None),
        (FIELD, "b", {"files": {"nested": True}}),  # only the top-level member expands
        (FIELD, "files2", []),
    ]
    assert list(members(loads(raw), "files")) == expected
    rng = random.Random(3)
    for sizes in ([1], [len(raw)], *([rng.randint(1, 9) for _ in range(30)] for _ in range(20))):
        assert scan(raw, sizes) == expected
    assert scan(json.dumps(DOC).encode("utf-16"), [5]) == expected  # parsed whole at close


def test_a_repeated_expanded_member_opens_again_and_a_non_object_is_a_field() -> None:
    raw = b'{"files": {"k": 1}, "files": 3, "files": {}}'
    assert scan(raw, [4]) == [
        (OPEN, "files", None),
        (ENTRY, "k", 1),
        (FIELD, "files", 3),
        (OPEN, "files", None),
    ]


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"12", b"null"])
def test_valid_json_that_is_not_an_object(raw: bytes) -> None:
    with pytest.raises(NotAnObject):
        scan(raw, [1])
    with pytest.raises(NotAnObject):
        list(members(loads(raw), "files"))


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"a" 1}', b'{"a": 1,}', b'{"a": 1 "b": 2}', b"{1: 2}", b'{"a": 1}}', b'{"a": NaN}'],
)
def test_not_an_object_of_strict_json(raw: bytes) -> None:
    with pytest.raises(ValueError) as caught:
        scan(raw, [2])
    assert not isinstance(caught.value, NotAnObject)


def test_members_are_parsed_as_they_are_taken() -> None:
    """A consumer that stops at a member stops the parse there: what follows it in the
    same chunk (here a syntax error) is not read."""
    members_of_chunk = ObjectScanner(expand="files").feed(b'{"files": {"k": 1, "bad" 2}')
    assert next(members_of_chunk) == (OPEN, "files", None)
    assert next(members_of_chunk) == (ENTRY, "k", 1)
    with pytest.raises(ValueError, match="expecting ':'"):
        next(members_of_chunk)
