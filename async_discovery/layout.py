"""Where state lives in S3 under each ``STATE_LAYOUT`` (SPEC "State layout `folders`").

``single``: one object, ``S3_STATE_KEY``. ``folders``: ``S3_STATE_KEY`` names a key
prefix, the *state prefix* (a value ending in ``.json`` has that suffix replaced by
``/``); folder ``F`` of scanned prefix ``P`` has its shard at
``<state prefix>folders/<P><F>.json`` (``h-<sha256 of F>`` instead of ``F`` when the key
would pass S3's 1,024 bytes), and the objects that are not shards (cursor, first-run
policy, fan-out plan) live under ``<state prefix>runs/<P>``, so they never collide with
a folder. Pure: names only, no I/O.
"""

from __future__ import annotations

import hashlib

LAYOUTS = ("single", "folders")
MAX_KEY_BYTES = 1024  # S3's limit on an object key, in UTF-8 bytes
RANGE_ID_BYTES = 16  # a range shard's id: 16 lowercase hex digits


def state_prefix(state_key: str) -> str:
    """The state prefix ``S3_STATE_KEY`` names under the ``folders`` layout."""
    if state_key.endswith(".json"):
        return state_key[: -len(".json")] + "/"
    return state_key if state_key.endswith("/") else state_key + "/"


def single_key(state_key: str) -> str:
    """The one state object ``S3_STATE_KEY`` names under the ``single`` layout (a key
    given as a prefix, ending in ``/``, names ``<prefix without />.json``)."""
    return state_key.rstrip("/") + ".json" if state_key.endswith("/") else state_key


def shards_prefix(state_prefix: str, prefix: str) -> str:
    """The key prefix of the shards of scanned prefix ``prefix``."""
    return f"{state_prefix}folders/{prefix}"


def shard_name(folder: str) -> str:
    """A folder's name in its shard key: itself, or ``h-`` and the SHA-256 of it."""
    return "h-" + hashlib.sha256(folder.encode("utf-8", "surrogatepass")).hexdigest()


def shard_key(state_prefix: str, prefix: str, folder: str) -> str:
    """The key of folder ``folder``'s shard (hashed when the plain key is too long)."""
    key = f"{shards_prefix(state_prefix, prefix)}{folder}.json"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        key = f"{shards_prefix(state_prefix, prefix)}{shard_name(folder)}.json"
    return key


def ranges_prefix(state_prefix: str, prefix: str, folder: str) -> str:
    """The key prefix of folder ``folder``'s range shards (hashed name as for its shard
    when the plain one would leave no room for a range id within S3's 1,024 bytes)."""
    head = f"{shards_prefix(state_prefix, prefix)}{folder}.ranges/"
    if len(head.encode("utf-8", "surrogatepass")) + RANGE_ID_BYTES > MAX_KEY_BYTES:
        head = f"{shards_prefix(state_prefix, prefix)}{shard_name(folder)}.ranges/"
    return head


def range_key(state_prefix: str, prefix: str, folder: str, shard: str) -> str:
    """The key of range shard ``shard`` of folder ``folder``."""
    return ranges_prefix(state_prefix, prefix, folder) + shard


def item_key(state_prefix: str, prefix: str, item_id: str) -> str:
    """Where a fan-out item's progress is kept (``item_id``: 64 hex digits)."""
    return runs_key(state_prefix, prefix, f"items/{item_id}.json")


def longest_key(state_prefix: str, prefix: str) -> int:
    """The UTF-8 length of the longest key the folders layout may write for ``prefix``
    (a hashed shard's ranges, or a fan-out item's progress): over 1,024 no folder could
    be recorded, so the configuration is refused."""
    hashed = f"{shards_prefix(state_prefix, prefix)}{shard_name('')}.ranges/"
    item = item_key(state_prefix, prefix, "0" * 64)
    return max(
        len(hashed.encode("utf-8", "surrogatepass")) + RANGE_ID_BYTES,
        len(item.encode("utf-8", "surrogatepass")),
    )


def runs_key(state_prefix: str, prefix: str, name: str) -> str:
    """A run object of prefix ``prefix``: ``cursor.json``, ``initial.json``, ``plan.json``."""
    return f"{state_prefix}runs/{prefix}{name}"


def is_shard_of(key: str, state_prefix: str, prefix: str) -> bool:
    """True for a shard key of prefix ``prefix`` itself (not of a longer prefix)."""
    head = shards_prefix(state_prefix, prefix)
    rest = key[len(head) :] if key.startswith(head) else ""
    return rest.endswith(".json") and len(rest) > len(".json") and "/" not in rest
