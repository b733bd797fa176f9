"""Bench data: the layout of candidate and junk keys, parallel seeding, state objects.

Layout under ``incoming/``: ``files`` candidates spread evenly over ``folders`` folders
(``f000/file-000000.csv``...), plus junk worth ``junk`` x files: objects in skipped
folders (``logs/``, ``temp/``), one level deeper (``f000/archive/...csv``), non-CSV
objects (``.json``), top-level files and folder markers; the scanner must list most of
them and queue none.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from ..fingerprint import object_metadata, of_files
from ..layout import range_key, shard_key, single_key, state_prefix
from ..ranges import INDEX_VERSION, Index, RangeRef, encode_index, piece_sizes, version_at_start
from ..state import SHARD_VERSION, FileEntry, State
from ..state_codec import decode, encode

PREFIX = "incoming/"
STATE_KEY = "state/processed_files.json"  # S3_STATE_KEY of every bench run
BODY_V1 = b"id,value\n1,42\n"
BODY_V2 = b"id,value\n1,43\n"  # the "incremental" overwrite: a new ETag
SEED_CONCURRENCY = 32  # moto is one busy process: more in flight gains nothing


@dataclasses.dataclass(frozen=True, slots=True)
class Layout:
    """What one bench bucket holds."""

    files: int
    folders: int
    junk: float = 0.1

    def folder(self, index: int) -> str:
        """The name of folder ``index``."""
        return f"f{index:03d}"

    def candidates(self) -> list[str]:
        """Every candidate key, folder by folder."""
        return [
            f"{PREFIX}{self.folder(i % self.folders)}/file-{i:07d}.csv" for i in range(self.files)
        ]

    def junk_keys(self) -> list[str]:
        """The junk keys: listed (most of them) but never queued."""
        count = int(self.files * self.junk)
        keys: list[str] = []
        kinds = ("skipped", "deeper", "other", "top")
        for i in range(count):
            kind = kinds[i % len(kinds)]
            folder = self.folder(i % self.folders)
            if kind == "skipped":
                keys.append(f"{PREFIX}{('logs', 'temp')[i % 2]}/junk-{i:07d}.csv")
            elif kind == "deeper":
                keys.append(f"{PREFIX}{folder}/archive/old-{i:07d}.csv")
            elif kind == "other":
                keys.append(f"{PREFIX}{folder}/meta-{i:07d}.json")
            else:
                keys.append(f"{PREFIX}top-{i:07d}.csv")
        if count:
            keys.append(f"{PREFIX}empty-folder/")
        return keys

    def changed(self) -> list[str]:
        """The 1% of candidates the ``incremental`` scenario overwrites (at least one)."""
        keys = self.candidates()
        step = 100 if len(keys) >= 100 else max(1, len(keys))
        return keys[::step]


def extra_junk(start: int, count: int, folders: int) -> list[str]:
    """``count`` non-candidate keys (``.json`` in the candidate folders), numbered from
    ``start``: listed by the scanner, never queued, never in state (memory runs)."""
    return [f"{PREFIX}f{(i % folders):03d}/extra-{i:07d}.json" for i in range(start, start + count)]


def s3_kwargs(endpoint: str, pool: int = SEED_CONCURRENCY) -> dict[str, Any]:
    """Client arguments for the bench's own (setup) clients."""
    return {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "config": AioConfig(max_pool_connections=pool, retries={"mode": "standard"}),
    }


async def put_objects(
    endpoint: str,
    bucket: str,
    keys: Sequence[str],
    body: bytes = BODY_V1,
    *,
    create: bool = False,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Put ``keys`` with ``SEED_CONCURRENCY`` workers over one shared key iterator."""
    session = get_session()
    async with session.create_client("s3", **s3_kwargs(endpoint)) as s3:
        if create:
            await s3.create_bucket(Bucket=bucket)
        todo: Iterator[str] = iter(keys)
        done = 0

        async def worker() -> None:
            nonlocal done
            for key in todo:  # shared iterator: each key taken once
                await s3.put_object(Bucket=bucket, Key=key, Body=body if key[-1] != "/" else b"")
                done += 1
                if progress is not None and done % 500 == 0:
                    progress(done)

        async with anyio.create_task_group() as tg:
            for _ in range(SEED_CONCURRENCY):
                tg.start_soon(worker)


SEED_CHUNK = 20_000  # keys per request to the seeding route


def seed_route(
    endpoint: str,
    bucket: str,
    keys: Sequence[str],
    body: bytes = BODY_V1,
    *,
    create: bool = False,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Put ``keys`` through the bench moto's seeding route (:mod:`.moto_s3`): moto's own
    ``put_object`` in its process, thousands of keys a second (folder markers, keys
    ending in ``/``, get an empty body, as :func:`put_objects` gives them)."""
    import base64
    import json
    import urllib.request

    from .moto_s3 import SEED_PATH

    markers = [k for k in keys if k.endswith("/")]
    files = [k for k in keys if not k.endswith("/")]
    done = 0
    for group, data in ((files, body), (markers, b"")):
        for start in range(0, len(group), SEED_CHUNK):
            chunk = group[start : start + SEED_CHUNK]
            doc = {
                "bucket": bucket,
                "keys": chunk,
                "body": base64.b64encode(data).decode(),
                "create": create,
            }
            create = False
            request = urllib.request.Request(
                endpoint + SEED_PATH, data=json.dumps(doc).encode(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=600) as resp:
                put = json.load(resp)["put"]
            if put != len(chunk):
                raise RuntimeError(f"the seeding route put {put} of {len(chunk)} keys")
            done += put
            if progress is not None:
                progress(done)


def state_bytes(
    bucket: str, entries: Iterable[tuple[str, str]], *, stamp: str = "2026-01-01T00:00:00Z"
) -> bytes:
    """A state object (``state_codec.encode``) recording ``(key, etag)`` pairs as queued."""
    files = {
        key: FileEntry(etag=etag, size=len(BODY_V1), folder=key.split("/")[1], queued_at=stamp)
        for key, etag in entries
    }
    return encode(State(files=files, source_bucket=bucket), stamp)


def state_objects(
    bucket: str,
    entries: Iterable[tuple[str, str]],
    layout: str,
    *,
    stamp: str = "2026-01-01T00:00:00Z",
    shard_max_files: int | None = None,
) -> dict[str, bytes]:
    """The state recording ``(key, etag)`` pairs as queued, as ``STATE_LAYOUT=layout``
    stores it: ``single``, one object at ``STATE_KEY``; ``folders``, one version 2 shard
    per folder at :func:`~async_discovery.layout.shard_key` (a folder with no entry has
    no shard), or, for a folder of more than ``shard_max_files`` files, its index and
    range shards of half that many, as the scanner splits it. Keys and bodies, ready to
    put."""
    if layout == "single":
        return {single_key(STATE_KEY): state_bytes(bucket, entries, stamp=stamp)}
    by_folder: dict[str, dict[str, FileEntry]] = {}
    for key, etag in entries:
        folder = key[len(PREFIX) :].split("/")[0]
        entry = FileEntry(etag=etag, size=len(BODY_V1), folder=folder, queued_at=stamp)
        by_folder.setdefault(folder, {})[key] = entry
    sp = state_prefix(STATE_KEY)
    out: dict[str, bytes] = {}
    for folder, files in by_folder.items():
        if shard_max_files is None or len(files) <= shard_max_files:
            out[shard_key(sp, PREFIX, folder)] = _shard(bucket, folder, files, stamp)
            continue
        keys, refs, start = sorted(files), [], 0
        for n, size in enumerate(piece_sizes(len(keys), shard_max_files)):
            part = keys[start : start + size]
            start += size
            shard = f"{n:016x}"
            body = _shard(bucket, folder, {k: files[k] for k in part}, stamp)
            out[range_key(sp, PREFIX, folder, shard)] = body
            # The index's cache of each range's digest, at the ETag S3 gives the body.
            etag, digest = hashlib.md5(body).hexdigest(), of_files({k: files[k] for k in part})
            refs.append(RangeRef(part[-1] if start < len(keys) else None, shard, etag, digest))
        index = Index(folder, PREFIX, bucket, refs)
        out[shard_key(sp, PREFIX, folder)] = encode_index(index, stamp)
    return out


def _shard(bucket: str, folder: str, files: dict[str, FileEntry], stamp: str) -> bytes:
    state = State(
        version=SHARD_VERSION,
        files=files,
        source_bucket=bucket,
        extra={"prefix": PREFIX, "folder": folder},
    )
    return encode(state, stamp)


def object_metadata_of(key: str, body: bytes) -> dict[str, str]:
    """The user metadata the scanner writes with the state object ``key``: a shard's
    fingerprint (decoded from ``body``), none for the single object."""
    if not key.startswith(state_prefix(STATE_KEY) + "folders/"):
        return {}
    if version_at_start(body) == INDEX_VERSION:
        return {}
    return object_metadata(decode(body, name=key, version=SHARD_VERSION))
