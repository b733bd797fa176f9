"""Deleting the state of a folder that vanished from the prefix (``PRUNE_MISSING``).

After a complete discovery and a complete run, an object of the shards prefix whose
folder the discovery did not see is a candidate. It is deleted only once a listing made
after the object was seen shows the folder gone, and only if it is still the object
seen (a conditional ``DeleteObject``, ``If-Match`` its ETag): a run that recorded a new
file of the folder meanwhile, or wrote its shard, keeps it. A split folder's range
shards go with its index.
"""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any

from ..changes import strip_etag
from ..discovery import folder_prefix
from ..errors import StateConflict, StateCorrupt
from ..layout import ranges_prefix, shard_key
from ..ports import Lister, StateObjects, StateStore, StreamingStateStore
from ..ranges import INDEX_VERSION, version_at_start
from ..state import SHARD_VERSION
from ..state_codec import decode_head


async def delete_vanished(
    objects: StateObjects, lister: Lister, key: str, etag: str, *, state_prefix: str, prefix: str
) -> bool:
    """Delete the state of the vanished folder whose object is ``key`` (ETag ``etag``
    when seen), under the rules above; True when deleted."""
    store = objects.store(key)
    name, index = await _named(store, etag)
    if name is None or shard_key(state_prefix, prefix, name) != key:
        return False
    listing = lister.pages(folder_prefix(prefix, name), delimiter=True)
    async with aclosing(listing) as pages:
        async for page in pages:
            if page.objects or page.common_prefixes:
                return False  # the folder is back: a run may have recorded it meanwhile
            break
    try:
        await objects.delete(key, if_match=etag)
    except StateConflict:
        return False
    if index:
        for range_object in await objects.etags(ranges_prefix(state_prefix, prefix, name)):
            await objects.delete(range_object)
    return True


async def _named(store: StateStore, etag: str) -> tuple[str | None, bool]:
    """The folder an object of the shards prefix records, and whether it is an index;
    (None, False) when it is not the object seen or names no folder."""
    if isinstance(store, StreamingStateStore):
        head = await store.load_head(16 * 1024)
        if head is None or strip_etag(head.etag) != strip_etag(etag):
            return None, False
        data, whole = head.data, head.size <= len(head.data)
    else:
        raw, found = await store.load()
        if raw is None or strip_etag(found or "") != strip_etag(etag):
            return None, False
        data, whole = raw, True
    if version_at_start(data) == INDEX_VERSION:
        if not whole:
            data = (await store.load())[0] or b"{}"
        doc = _json_object(data)
        folder = doc.get("folder") if doc is not None else None
        return (folder, True) if isinstance(folder, str) else (None, False)
    try:
        fields = decode_head(data, name=store.name, version=SHARD_VERSION)
    except StateCorrupt:
        return None, False
    folder = fields.extra.get("folder") if fields is not None else None
    return (folder, False) if isinstance(folder, str) else (None, False)


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None
