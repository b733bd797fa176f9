"""The bench's moto, S3 side: a listing index and a seeding route (moto process only).

Stock moto 5.2 answers every ``ListObjectsV2`` page by walking and sorting the whole
bucket (``S3Backend.list_objects``): one page of a 200,000-key folder costs about a
second of moto CPU, so a large listing measures moto, not the client. Two bench-only
additions, applied in the moto server process by :mod:`.moto_main`:

- **Listing index** (performance only, like the SQS counter patch): each bucket's key
  store also keeps its key names sorted (updated on every put and delete under one
  lock), and ``list_objects_v2`` walks from a ``bisect`` to ``Prefix``/``StartAfter``/
  the continuation key, rolling a common prefix up by jumping past its keys. It returns
  what moto's own walk returns (same entries, order, truncation and continuation tokens,
  delete markers left out and their folders kept as moto keeps them); anything outside
  that walk (an unknown continuation token, another bucket type) goes to moto's own
  code. ``tests/test_bench.py`` lists patched and stock moto side by side.
- **Seeding route**: ``POST /_bench/put-objects`` with ``{"bucket", "keys", "body"
  (base64), "create"}`` puts the keys through moto's own backend ``put_object`` in
  process (the same objects a ``PutObject`` makes, without HTTP, signing and XML per
  key), so 200,000 keys seed in seconds. ``_bench`` cannot be a bucket name.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from xml.sax.saxutils import escape

SEED_PATH = "/_bench/put-objects"
_LOCK = threading.Lock()  # werkzeug serves each request in its own thread


def _store_class() -> Any:
    """moto's ``_VersionedKeyStore`` with its names kept sorted (see the docstring)."""
    from moto.s3.utils import _VersionedKeyStore

    class IndexedKeyStore(_VersionedKeyStore):
        """A bucket's versions by key name, and ``names``: the key names, sorted."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.names: list[str] = sorted(dict.keys(self))

        def _added(self, key: str, change: Callable[[], None]) -> None:
            with _LOCK:
                new = not dict.__contains__(self, key)
                change()
                if new:
                    bisect.insort(self.names, key)

        def _removed(self, key: str, change: Callable[[], None]) -> None:
            with _LOCK:
                change()
                at = bisect.bisect_left(self.names, key)
                if at < len(self.names) and self.names[at] == key:
                    del self.names[at]

        def __setitem__(self, key: str, value: Any) -> None:
            self._added(key, lambda: _VersionedKeyStore.__setitem__(self, key, value))

        def setlist(self, key: Any, list_: Any) -> None:
            self._added(key, lambda: _VersionedKeyStore.setlist(self, key, list_))

        def pop(self, key: str) -> None:  # type: ignore[override]
            self._removed(key, lambda: _VersionedKeyStore.pop(self, key))

        def __delitem__(self, key: str) -> None:
            self._removed(key, lambda: dict.__delitem__(self, key))

        def sorted_names(self) -> list[str]:
            """The sorted names (rebuilt if a mutation bypassed the methods above)."""
            if len(self.names) != dict.__len__(self):
                self.names = sorted(dict.keys(self))
            return self.names

    return IndexedKeyStore


def _after_block(folder: str) -> str | None:
    """The least string greater than every string starting with ``folder``."""
    last = ord(folder[-1])
    return None if last >= 0x10FFFF else folder[:-1] + chr(last + 1)


def indexed_walk(
    names: list[str],
    latest: Callable[[str], Any],
    is_marker: Callable[[Any], bool],
    prefix: str,
    delimiter: str | None,
    limit: str | None,
    max_keys: int,
) -> list[Any]:
    """The first ``max_keys + 1`` entries moto's ``list_objects_v2`` would list: objects
    (``latest(name)``) and common prefixes (``str``), in name order, after ``limit``."""
    out: list[Any] = []
    i = bisect.bisect_left(names, prefix)
    if limit:
        i = max(i, bisect.bisect_right(names, limit))
    end = len(names)
    while i < end and len(out) <= max_keys:
        name = names[i]
        if not name.startswith(prefix):
            break
        if delimiter:
            cut = name.find(delimiter, len(prefix))
            if cut >= 0:
                folder = name[: cut + len(delimiter)]
                if not limit or folder > limit:
                    out.append(folder)
                after = _after_block(folder)
                if after is None:
                    i += 1
                    while i < end and names[i].startswith(folder):
                        i += 1
                else:
                    i = bisect.bisect_left(names, after, i)
                continue
        key = latest(name)
        if not is_marker(key):
            out.append(key)
        i += 1
    return out


def apply_listing_index() -> None:
    """Give every new bucket the indexed store and ``list_objects_v2`` the walk."""
    from moto.s3 import models
    from moto.utilities.utils import md5_hash

    store = _store_class()
    original_init = models.FakeBucket.__init__
    original_list = models.S3Backend.list_objects_v2

    def bucket_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.keys = store()

    def list_objects_v2(
        self: Any,
        bucket: Any,
        prefix: str | None,
        delimiter: str | None,
        continuation_token: str | None,
        start_after: str | None,
        max_keys: int,
    ) -> Any:
        keys: Any = bucket.keys
        limit = self._pagination_tokens.get(continuation_token) if continuation_token else None
        if type(bucket) is not models.FakeBucket or not isinstance(keys, store):
            return original_list(
                self, bucket, prefix, delimiter, continuation_token, start_after, max_keys
            )
        if continuation_token and limit is None:  # moto's own answer to an unknown token
            return original_list(
                self, bucket, prefix, delimiter, continuation_token, start_after, max_keys
            )
        if not continuation_token:
            limit = start_after or None
        if max_keys == 0:
            return [], False, None

        def latest(name: str) -> Any:
            return dict.__getitem__(keys, name)[-1]

        def is_marker(key: Any) -> bool:
            return isinstance(key, models.FakeDeleteMarker)

        with _LOCK:
            entries = indexed_walk(
                keys.sorted_names(), latest, is_marker, prefix or "", delimiter, limit, max_keys
            )
        if len(entries) <= max_keys:
            return entries, False, None
        entries = entries[:max_keys]
        last = entries[-1]
        name = last if isinstance(last, str) else last.name
        token = md5_hash(name.encode("utf-8")).hexdigest()
        self._pagination_tokens[token] = name
        return entries, True, token

    models.FakeBucket.__init__ = bucket_init  # type: ignore[method-assign]
    models.S3Backend.list_objects_v2 = list_objects_v2  # type: ignore[method-assign]


_OBJECT_FIELDS = frozenset(
    {"Key", "LastModified", "ETag", "Size", "StorageClass", "Owner", "ChecksumAlgorithm"}
)
_ZEROED_ISO8601 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def contents_xml(contents: list[dict[str, Any]]) -> str | None:
    """The ``<Contents>`` elements moto's serializer writes for ``contents`` (moto's
    ``list_objects_v2`` items), or None for an item this renderer does not know (moto's
    own serializer then writes the whole answer)."""
    parts: list[str] = []
    add = parts.append
    for item in contents:
        if not item.keys() <= _OBJECT_FIELDS:
            return None
        key, stamp = _text(item.get("Key")), _text(item.get("LastModified"))
        etag, storage = _text(item.get("ETag")), _text(item.get("StorageClass"))
        if not (key and etag and storage and _ZEROED_ISO8601.fullmatch(stamp)):
            return None  # moto writes an empty value as <X/>: left to moto
        add(f"<Contents><Key>{escape(key)}</Key><LastModified>{stamp}</LastModified>")
        add(f"<ETag>{escape(etag)}</ETag>")
        for algorithm in item.get("ChecksumAlgorithm") or ():
            if not isinstance(algorithm, str) or not algorithm:
                return None
            add(f"<ChecksumAlgorithm>{escape(algorithm)}</ChecksumAlgorithm>")
        add(f"<Size>{int(item['Size'])}</Size><StorageClass>{escape(storage)}</StorageClass>")
        owner = item.get("Owner")
        if owner is not None:
            if set(owner) != {"DisplayName", "ID"} or not all(owner.values()):
                return None
            add(
                f"<Owner><DisplayName>{escape(owner['DisplayName'])}</DisplayName>"
                f"<ID>{escape(owner['ID'])}</ID></Owner>"
            )
        add("</Contents>")
    return "".join(parts)


def apply_fast_listing_body() -> None:
    """Write a ``ListObjectsV2`` answer's ``<Contents>`` without moto's generic
    serializer (its per-field shape walk costs ~0.1 ms of moto CPU per key): moto
    serializes the rest of the answer, and the objects go where it would put them
    (after ``IsTruncated``, the first member of the output shape), byte for byte."""
    from moto.core.responses import ActionResult
    from moto.s3.responses import S3Response

    original = S3Response.serialized

    def serialized(self: Any, action_result: Any) -> Any:
        result = action_result.result
        if self.data.get("Action") != "ListObjectsV2" or not isinstance(result, dict):
            return original(self, action_result)
        contents = result.get("Contents") or []
        fragment = contents_xml(contents) if contents else None
        if fragment is None:
            return original(self, action_result)
        status, headers, body = original(self, ActionResult(dict(result, Contents=[])))
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        marker = "</IsTruncated>"
        at = text.find(marker)
        if at < 0:
            return original(self, action_result)
        at += len(marker)
        merged = text[:at] + fragment + text[at:]
        return status, headers, merged.encode("utf-8") if isinstance(body, bytes) else merged

    S3Response.serialized = serialized  # type: ignore[method-assign]


def put_objects(bucket: str, keys: Iterable[str], body: bytes, *, create: bool) -> int:
    """Put ``keys`` through moto's backend in this process (the default account)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    if create:
        backend.create_bucket(bucket, "us-east-1")
    count = 0
    for key in keys:
        backend.put_object(bucket, key, body)
        count += 1
    return count


def apply_seed_route() -> None:
    """Serve :data:`SEED_PATH` in front of moto's dispatcher."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original_call = DomainDispatcherApplication.__call__

    def call(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != SEED_PATH or environ.get("REQUEST_METHOD") != "POST":
            return original_call(self, environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        doc = json.loads(environ["wsgi.input"].read(length))
        count = put_objects(
            doc["bucket"],
            doc["keys"],
            base64.b64decode(doc.get("body", "")),
            create=bool(doc.get("create")),
        )
        payload = json.dumps({"put": count}).encode()
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    DomainDispatcherApplication.__call__ = call  # type: ignore[method-assign]
