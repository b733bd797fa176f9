"""The two references every scanner figure is divided by, run against the same server.

- :func:`sequential`: the design this project replaces. boto3, one paginator over the
  prefix, the discovery rule and the ETag check per object, one ``SendMessage`` per file
  in order, the state read with a plain ``json.load`` and written with a plain
  ``PutObject``.
- :class:`Floor`: only the unavoidable requests (the ``Delimiter`` listing, every
  non-skipped folder's listing pages, with ``Delimiter`` like the scanner,
  ``ceil(new/10)`` ``SendMessageBatch`` calls, and the state: under ``STATE_LAYOUT``
  ``single`` one ``GetObject`` and at most one ``PutObject`` of the state object; under
  ``folders`` one ``GetObject`` of each listed folder's shard, issued with that folder's
  listing, and a ``PutObject`` of each changed shard once its folder is listed),
  issued at once up to ``concurrency`` in flight, with every message body and the state
  bytes built before the clock starts: no per-file work but the scanner's own lean
  parse of each listing page (:mod:`async_discovery.aws.list_xml`).
  The floor reads a body and drops it: it never decodes or encodes state.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from ..aws import S3Lister
from ..aws.clients import count_calls
from ..layout import shard_key, state_prefix


def sequential(
    endpoint: str,
    bucket: str,
    prefix: str,
    queue_url: str,
    state_key: str,
    skip: frozenset[str],
) -> dict[str, Any]:
    """One run of the sequential design; returns counters and API calls."""
    import boto3
    from botocore.config import Config as BotoConfig

    cfg = BotoConfig(retries={"mode": "standard", "total_max_attempts": 5})
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=cfg)
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", config=cfg)
    calls: Counter[str] = Counter()
    count_calls(s3, calls)
    count_calls(sqs, calls)
    try:
        state: dict[str, Any] = json.load(s3.get_object(Bucket=bucket, Key=state_key)["Body"])
    except s3.exceptions.NoSuchKey:
        state = {"version": 1, "files": {}}
    files: dict[str, Any] = state["files"]
    listed = queued = skipped = 0
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            listed += 1
            key = obj["Key"]
            parts = key[len(prefix) :].split("/")
            if len(parts) != 2 or not parts[0] or parts[0] in skip:
                continue
            if not parts[1] or not parts[1].lower().endswith(".csv"):
                continue
            etag = obj["ETag"].strip('"')
            old = files.get(key)
            if old is not None and old.get("etag") == etag:
                skipped += 1
                continue
            body = {
                "id": hashlib.sha256(f"{bucket}/{key}@{etag}".encode()).hexdigest(),
                "bucket": bucket,
                "key": key,
                "folder": parts[0],
                "etag": etag,
                "size": obj["Size"],
                "last_modified": obj["LastModified"].isoformat(),
                "event": "updated" if old is not None else "new",
            }
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))
            files[key] = {
                "status": "queued",
                "etag": etag,
                "size": obj["Size"],
                "folder": parts[0],
                "queued_at": now,
            }
            queued += 1
    if queued:
        state["updated_at"] = now
        s3.put_object(Bucket=bucket, Key=state_key, Body=json.dumps(state).encode())
    s3.close()
    sqs.close()
    return {"listed": listed, "queued": queued, "skipped": skipped, "api_calls": dict(calls)}


_SAMPLE_BODY = json.dumps(
    {
        "id": "0" * 64,
        "bucket": "bench-bucket",
        "key": "incoming/f000/file-0000000.csv",
        "folder": "f000",
        "etag": "0" * 32,
        "size": 14,
        "last_modified": "2026-01-01T00:00:00+00:00",
        "event": "new",
    }
)


class Floor:
    """The floor: build everything in :meth:`__init__`, time only :meth:`run`."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str,
        queue_url: str,
        state_key: str,
        skip: frozenset[str],
        *,
        new: int,
        state_body: bytes | None,
        concurrency: int = 16,
        groups: int = 1,
        state_layout: str = "single",
        state_puts: dict[str, bytes] | None = None,
    ) -> None:
        """``state_body``: the single state object to write (when ``new``);
        ``state_puts``: under ``folders``, the changed shards (key -> body)."""
        self.endpoint, self.bucket, self.prefix = endpoint, bucket, prefix
        self.queue_url, self.state_key, self.skip = queue_url, state_key, skip
        self.batches = [
            [{"Id": str(i), "MessageBody": _SAMPLE_BODY} for i in range(min(10, new - b * 10))]
            for b in range(math.ceil(new / 10))
        ]
        if queue_url.endswith(".fifo"):
            # FIFO: one group per batch index modulo the folder count, no order kept
            # (the floor sends as fast as it can; the scanner keeps each group's order).
            for b, batch in enumerate(self.batches):
                for i, entry in enumerate(batch):
                    entry["MessageGroupId"] = f"g{b % max(groups, 1)}"
                    entry["MessageDeduplicationId"] = f"{b}-{i}"
        self.state_body = state_body if new else None
        self.state_layout = state_layout
        self.state_prefix = state_prefix(state_key)
        self.state_puts = dict(state_puts or {})
        self.concurrency = concurrency
        self.calls: Counter[str] = Counter()
        self.listed = 0

    async def run(self) -> dict[str, Any]:
        """Issue the floor's requests; returns counters and API calls."""
        session = get_session()
        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "region_name": "us-east-1",
            "config": AioConfig(max_pool_connections=self.concurrency + 4),
        }
        async with (
            session.create_client("s3", **kwargs) as s3,
            session.create_client("sqs", **kwargs) as sqs,
        ):
            count_calls(s3, self.calls)
            count_calls(sqs, self.calls)
            batches: Iterator[list[dict[str, str]]] = iter(self.batches)

            async def sender() -> None:
                for entries in batches:  # shared iterator: each batch sent once
                    await sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)  # type: ignore[arg-type]

            async def read_state(key: str) -> None:
                try:
                    resp = await s3.get_object(Bucket=self.bucket, Key=key)
                    async with resp["Body"] as body:
                        await body.read()
                except s3.exceptions.NoSuchKey:
                    pass

            # The scanner's lister: the pages parsed lean (the unavoidable XML parse).
            lister = S3Lister(s3, self.bucket)

            async def list_pages(prefix: str) -> None:
                # Delimiter: a deeper level comes back as one common prefix, as for the
                # scanner, instead of every object under it.
                async for page in lister.pages(prefix, delimiter=True):
                    self.listed += len(page.objects)

            async def list_folder(prefix: str) -> None:
                if self.state_layout != "folders":
                    await list_pages(prefix)
                    return
                folder = prefix[len(self.prefix) :].rstrip("/")
                key = shard_key(self.state_prefix, self.prefix, folder)
                async with anyio.create_task_group() as both:  # shard read with the listing
                    both.start_soon(read_state, key)
                    both.start_soon(list_pages, prefix)
                body = self.state_puts.get(key)
                if body is not None:
                    await s3.put_object(Bucket=self.bucket, Key=key, Body=body)

            async def list_all() -> None:
                async with anyio.create_task_group() as folders:
                    async for top in lister.pages(self.prefix, delimiter=True):
                        self.listed += len(top.objects)
                        for cp in top.common_prefixes:
                            name = cp[len(self.prefix) :].rstrip("/")
                            if name not in self.skip:
                                folders.start_soon(list_folder, cp)

            async with anyio.create_task_group() as tg:
                if self.state_layout != "folders":
                    tg.start_soon(read_state, self.state_key)
                tg.start_soon(list_all)
                for _ in range(min(self.concurrency, len(self.batches))):
                    tg.start_soon(sender)
            if self.state_body is not None and self.state_layout != "folders":
                await s3.put_object(Bucket=self.bucket, Key=self.state_key, Body=self.state_body)
        queued = sum(len(b) for b in self.batches)
        return {"listed": self.listed, "queued": queued, "api_calls": dict(self.calls)}
