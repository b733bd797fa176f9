"""Test helpers around a moto server: buckets, queues, messages, state, configs."""

from __future__ import annotations

import functools
import itertools
import json
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig

from async_discovery.config import DEFAULT_STATE_KEY, Config
from async_discovery.runner import run_scan
from async_discovery.settings import SETTINGS

if TYPE_CHECKING:
    import pytest
    from types_boto3_sqs.literals import QueueAttributeNameType
    from types_boto3_sqs.type_defs import MessageTypeDef

    from async_discovery.testing.fault_proxy import FaultProxy

_counter = itertools.count()

# Every variable a scanner setting is read from (tests keep the developer's shell out).
SCANNER_VARIABLES = tuple(s.env for s in SETTINGS if s.env)


class RequestClock:
    """A Lambda context whose remaining time runs out as the invocation makes requests
    through ``proxy`` (``operation`` only, when given): ``per_request`` seconds each.
    Measured in requests, not on the wall clock, the cut falls at the same place however
    loaded the machine is."""

    def __init__(
        self, seconds: float, proxy: FaultProxy, per_request: float, operation: str | None = None
    ) -> None:
        self._seconds, self._proxy, self._per = seconds, proxy, per_request
        self._operation = operation
        self._start = self._made()

    def _made(self) -> int:
        counts = self._proxy.counts
        return counts[self._operation] if self._operation else sum(counts.values())

    def get_remaining_time_in_millis(self) -> int:
        return int((self._seconds - (self._made() - self._start) * self._per) * 1000)


def read_terminal(leader: int) -> bytes:
    """Everything a child wrote to a pseudo-terminal, until it closed its end."""
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def unique(prefix: str) -> str:
    """A unique, valid bucket or queue name."""
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


class MotoEnv:
    """Synchronous boto3 access to the moto server, for setup and inspection."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        cfg = BotoConfig(retries={"mode": "standard", "max_attempts": 2})
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=cfg)
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", config=cfg)

    def new_bucket(self) -> str:
        name = unique("bkt")
        self.s3.create_bucket(Bucket=name)
        return name

    def new_queue(self, fifo: bool = False) -> str:
        name = unique("q") + (".fifo" if fifo else "")
        attrs: dict[QueueAttributeNameType, str] = {"VisibilityTimeout": "600"}
        if fifo:
            attrs["FifoQueue"] = "true"
        return str(self.sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"])

    def put(self, bucket: str, key: str, body: bytes | str = b"a,b\n1,2\n") -> str:
        """Put an object; return its ETag without quotes."""
        data = body.encode() if isinstance(body, str) else body
        etag = self.s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]
        return str(etag).strip('"')

    def put_many(self, bucket: str, keys: list[str], body: bytes = b"x\n") -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(functools.partial(self.put, bucket, body=body), keys))

    def receive_all(self, queue_url: str, attributes: bool = False) -> list[MessageTypeDef]:
        """Drain the queue: every message (not deleted; hidden for 10 minutes)."""
        out: list[MessageTypeDef] = []
        while True:
            resp = self.sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            msgs = resp.get("Messages", [])
            if not msgs:
                return out
            out.extend(msgs)

    def drainer(self, queue_url: str) -> QueueDrainer:
        """A background consumer that receives and deletes while a run sends."""
        return QueueDrainer(self.endpoint, queue_url)

    def bodies(self, queue_url: str) -> list[dict[str, Any]]:
        """Drain the queue and decode every body."""
        return [json.loads(m["Body"]) for m in self.receive_all(queue_url)]

    def state_bytes(self, bucket: str, key: str = DEFAULT_STATE_KEY) -> bytes | None:
        try:
            return bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None

    def state(self, bucket: str, key: str = DEFAULT_STATE_KEY) -> dict[str, Any] | None:
        raw = self.state_bytes(bucket, key)
        return None if raw is None else dict(json.loads(raw))

    def config(self, bucket: str, queue_url: str | None, **kw: Any) -> Config:
        """A Config for ``bucket`` → ``queue_url`` against this server (kw override)."""
        values: dict[str, Any] = {
            "source_bucket": bucket,
            "prefix": "incoming/",
            "queue_url": queue_url,
            "state_bucket": bucket,
            "endpoint_url": self.endpoint,
            "max_attempts": 3,
        }
        values.update(kw)
        return Config(**values)

    def set_variables(
        self,
        monkeypatch: pytest.MonkeyPatch,
        bucket: str,
        queue_url: str,
        prefix: str = "incoming",
        **more: str,
    ) -> dict[str, str]:
        """The scanner's variables for ``bucket``'s ``prefix`` → ``queue_url`` against
        this server (``more``: other variables by name), set; returned as set."""
        values = {
            "S3_SOURCE_BUCKET": bucket,
            "S3_PREFIX": prefix,
            "SQS_QUEUE_URL": queue_url,
            **more,
            "AWS_ENDPOINT_URL": self.endpoint,
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return values


class QueueDrainer:
    """Receives and deletes messages in a thread, keeping the queue shallow.

    moto recomputes queue counters over every stored message on each send and receive,
    so a queue that fills to thousands of messages makes each call slower; a consumer
    that deletes as it goes keeps a few-thousand-file run fast (as a real consumer would).
    """

    def __init__(self, endpoint: str, queue_url: str, threads: int = 4) -> None:
        self.queue_url = queue_url
        self.sqs = boto3.client(
            "sqs",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=BotoConfig(max_pool_connections=threads),
        )
        self.messages: list[MessageTypeDef] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> QueueDrainer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            msgs = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if msgs:
                self.messages.extend(msgs)
                self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(msgs)
                    ],
                )
            elif self._stop.is_set():
                return
            else:
                time.sleep(0.02)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(m["Body"]) for m in self.messages]


async def scan(config: Config, **kw: Any) -> dict[str, Any]:
    """One run, no EMF line (tests read the summary)."""
    kw.setdefault("emit_metrics", False)
    return await run_scan(config, **kw)
