"""The fault proxy itself: operation names, forwarding, each fault, barrier, lock, thread."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import boto3
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError, ConnectionClosedError

from async_discovery.testing.fault_proxy import (
    SQS_JSON,
    Drop,
    Exclusive,
    FailEntries,
    FaultProxy,
    Hold,
    Latency,
    Respond,
    S3Error,
    SqsError,
    operation_of,
)

from .helpers import MotoEnv

_S3_AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=x/20250101/us-east-1/s3/aws4_request"}


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "expected"),
    [
        ("GET", "/", {}, _S3_AUTH, "ListBuckets"),
        ("GET", "/b", {"list-type": "2", "prefix": "x/"}, _S3_AUTH, "ListObjectsV2"),
        ("GET", "/b", {}, _S3_AUTH, "ListObjects"),
        ("GET", "/b", {"location": ""}, _S3_AUTH, "GetBucketLocation"),
        ("PUT", "/b", {}, _S3_AUTH, "CreateBucket"),
        ("HEAD", "/b", {}, _S3_AUTH, "HeadBucket"),
        ("DELETE", "/b", {}, _S3_AUTH, "DeleteBucket"),
        ("POST", "/b", {"delete": ""}, _S3_AUTH, "DeleteObjects"),
        ("GET", "/b/k/1.csv", {}, _S3_AUTH, "GetObject"),
        ("PUT", "/b/k/1.csv", {}, _S3_AUTH, "PutObject"),
        ("PUT", "/b/k", {}, {**_S3_AUTH, "x-amz-copy-source": "/b/j"}, "CopyObject"),
        ("HEAD", "/b/k", {}, _S3_AUTH, "HeadObject"),
        ("DELETE", "/b/k", {}, _S3_AUTH, "DeleteObject"),
        ("POST", "/b/k", {"uploads": ""}, _S3_AUTH, "CreateMultipartUpload"),
        ("PUT", "/b/k", {"partNumber": "1", "uploadId": "u"}, _S3_AUTH, "UploadPart"),
        ("POST", "/", {}, {"X-Amz-Target": "AmazonSQS.SendMessageBatch"}, "SendMessageBatch"),
        ("POST", "/", {}, {"X-Amz-Target": "AmazonSQS.GetQueueUrl"}, "GetQueueUrl"),
    ],
)
def test_operation_names(
    method: str, path: str, query: dict[str, str], headers: dict[str, str], expected: str
) -> None:
    assert operation_of(method, path, query, headers) == expected


@asynccontextmanager
async def s3_client(url: str, attempts: int = 1) -> AsyncIterator[Any]:
    config = AioConfig(retries={"mode": "standard", "total_max_attempts": attempts})
    async with get_session().create_client(
        "s3", endpoint_url=url, region_name="us-east-1", config=config
    ) as client:
        yield client


@asynccontextmanager
async def sqs_client(url: str, attempts: int = 1) -> AsyncIterator[Any]:
    config = AioConfig(retries={"mode": "standard", "total_max_attempts": attempts})
    async with get_session().create_client(
        "sqs", endpoint_url=url, region_name="us-east-1", config=config
    ) as client:
        yield client


async def test_forwards_unchanged_and_counts(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    async with s3_client(proxy.url) as s3, sqs_client(proxy.url) as sqs:
        await s3.put_object(Bucket=bucket, Key="a/b c+d%é.csv", Body=b"x,y\n")
        head = await s3.head_object(Bucket=bucket, Key="a/b c+d%é.csv")
        got = await s3.get_object(Bucket=bucket, Key="a/b c+d%é.csv")
        async with got["Body"] as stream:
            body = await stream.read()
        listing = await s3.list_objects_v2(Bucket=bucket, Prefix="a/")
        sent = await sqs.send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": "0", "MessageBody": "m"}]
        )
    assert head["ContentLength"] == 4
    assert body == b"x,y\n"
    assert [o["Key"] for o in listing["Contents"]] == ["a/b c+d%é.csv"]
    assert [s["Id"] for s in sent["Successful"]] == ["0"]
    assert [m["Body"] for m in env.receive_all(queue_url)] == ["m"]
    expected = {
        "PutObject": 1,
        "HeadObject": 1,
        "GetObject": 1,
        "ListObjectsV2": 1,
        "SendMessageBatch": 1,
    }
    assert dict(proxy.counts) == expected
    assert dict(proxy.forwarded) == expected
    assert not proxy.injected
    assert proxy.requests[0].key == "a/b c+d%é.csv"
    assert proxy.requests[0].bucket == bucket


async def test_s3_errors_are_shaped_like_s3(proxy: FaultProxy, bucket: str) -> None:
    proxy.inject(S3Error.slow_down(), "ListObjectsV2", times=1)
    proxy.inject(S3Error("InternalError", 500), "HeadBucket", times=1)
    async with s3_client(proxy.url) as s3:
        with pytest.raises(ClientError) as listing:
            await s3.list_objects_v2(Bucket=bucket)
        with pytest.raises(ClientError) as head:
            await s3.head_bucket(Bucket=bucket)
        await s3.list_objects_v2(Bucket=bucket)  # times=1: the next one goes through
    assert listing.value.response["Error"]["Code"] == "SlowDown"
    assert listing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert head.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert proxy.counts["ListObjectsV2"] == 2
    assert proxy.forwarded["ListObjectsV2"] == 1
    assert proxy.injected == {"ListObjectsV2": 1, "HeadBucket": 1}


async def test_sqs_errors_are_shaped_like_sqs(proxy: FaultProxy, queue_url: str) -> None:
    rule = proxy.inject(SqsError.queue_does_not_exist(), "SendMessageBatch", times=1)
    async with sqs_client(proxy.url) as sqs:
        with pytest.raises(ClientError) as caught:
            await sqs.send_message_batch(
                QueueUrl=queue_url, Entries=[{"Id": "0", "MessageBody": "m"}]
            )
    error: dict[str, Any] = dict(caught.value.response["Error"])
    assert error["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert error["QueryErrorCode"] == "QueueDoesNotExist"
    assert rule.exhausted
    # The raw response: JSON protocol content type, __type and the query-error header.
    proxy.inject(SqsError("InternalError", 500, "boom", "InternalError"), "SendMessageBatch")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            proxy.url + "/",
            data=b"{}",
            headers={"X-Amz-Target": "AmazonSQS.SendMessageBatch", "Content-Type": SQS_JSON},
        ) as resp,
    ):
        doc = await resp.json(content_type=None)
        assert resp.status == 500
        assert resp.headers["Content-Type"] == SQS_JSON
        assert resp.headers["x-amzn-query-error"] == "InternalError;Receiver"
    assert doc == {"__type": "com.amazonaws.sqs#InternalError", "message": "boom"}


async def test_drop_before_and_after_forwarding(
    proxy: FaultProxy, env: MotoEnv, bucket: str
) -> None:
    # Forever: aiohttp itself re-sends an idempotent request (PUT) once when a reused
    # connection drops, so one drop would be invisible to the caller.
    proxy.inject(Drop(), "PutObject", when=lambda r: r.key == "before")
    proxy.inject(Drop(after_forward=True), "PutObject", when=lambda r: r.key == "after")
    async with s3_client(proxy.url) as s3:
        with pytest.raises(ConnectionClosedError):
            await s3.put_object(Bucket=bucket, Key="before", Body=b"1")
        with pytest.raises(ConnectionClosedError):
            await s3.put_object(Bucket=bucket, Key="after", Body=b"2")
    # Dropped before: never stored. Dropped after: stored, though the client saw an error.
    assert env.state_bytes(bucket, "before") is None
    assert env.state_bytes(bucket, "after") == b"2"
    assert proxy.forwarded["PutObject"] == sum(r.key == "after" for r in proxy.requests) >= 1
    assert proxy.injected["PutObject"] == proxy.counts["PutObject"] >= 2


async def test_fail_entries_forwards_only_the_others(
    proxy: FaultProxy, env: MotoEnv, queue_url: str
) -> None:
    proxy.inject(
        FailEntries(lambda e: e["MessageBody"] == "bad", "InternalError", sender_fault=False),
        "SendMessageBatch",
        times=1,
    )
    entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(["ok1", "bad", "ok2"])]
    async with sqs_client(proxy.url) as sqs:
        first = await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        second = await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries[1:2])
    assert sorted(s["Id"] for s in first["Successful"]) == ["0", "2"]
    assert first["Failed"] == [
        {
            "Id": "1",
            "SenderFault": False,
            "Code": "InternalError",
            "Message": "injected entry failure",
        }
    ]
    assert [s["Id"] for s in second["Successful"]] == ["1"]
    assert sorted(m["Body"] for m in env.receive_all(queue_url)) == ["bad", "ok1", "ok2"]


async def test_respond_with_a_chosen_response(proxy: FaultProxy, bucket: str) -> None:
    proxy.inject(
        Respond(make=lambda r: (200, {"Content-Type": "application/xml"}, _empty_listing(r))),
        "ListObjectsV2",
        times=1,
    )
    async with s3_client(proxy.url) as s3:
        resp = await s3.list_objects_v2(Bucket=bucket)
    assert resp["KeyCount"] == 0
    assert proxy.forwarded["ListObjectsV2"] == 0


def _empty_listing(request: Any) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Name>{request.bucket}</Name><Prefix></Prefix><KeyCount>0</KeyCount>"
        "<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>"
    ).encode()


async def test_hold_releases_when_enough_requests_arrived(
    proxy: FaultProxy, env: MotoEnv, bucket: str
) -> None:
    env.put(bucket, "k", b"v")
    rule = proxy.inject(Hold(2, timeout=10), "GetObject")
    done: list[float] = []
    start = time.monotonic()

    async def get(s3: Any, delay: float) -> None:
        await anyio.sleep(delay)
        resp = await s3.get_object(Bucket=bucket, Key="k")
        async with resp["Body"] as stream:
            await stream.read()
        done.append(time.monotonic() - start)

    async with s3_client(proxy.url) as s3, anyio.create_task_group() as tg:
        tg.start_soon(get, s3, 0.0)
        tg.start_soon(get, s3, 0.5)
    # The first waited for the second: both finished after the second was sent.
    assert len(done) == 2
    assert min(done) >= 0.5
    assert rule.hits == 2
    assert not rule.timed_out


async def test_hold_times_out_instead_of_hanging(proxy: FaultProxy, bucket: str) -> None:
    rule = proxy.inject(Hold(2, timeout=0.3), "ListObjectsV2")
    async with s3_client(proxy.url) as s3:
        await s3.list_objects_v2(Bucket=bucket)
    assert rule.timed_out


async def test_exclusive_serialises_and_latency_delays(proxy: FaultProxy, bucket: str) -> None:
    proxy.inject(Exclusive(), "HeadBucket")
    proxy.inject(Latency(0.3), "HeadBucket")
    start = time.monotonic()
    async with s3_client(proxy.url) as s3, anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(functools.partial(s3.head_bucket, Bucket=bucket))
    # Three requests, 0.3 s each, one at a time.
    assert time.monotonic() - start >= 0.9
    assert proxy.forwarded["HeadBucket"] == 3


def test_threaded_proxy_serves_sync_clients(
    threaded_proxy: FaultProxy, env: MotoEnv, bucket: str
) -> None:
    env.put(bucket, "k", b"v")
    threaded_proxy.latency_ms = 200
    threaded_proxy.inject(S3Error("InternalError", 500), "GetObject", times=1)
    s3 = boto3.client(
        "s3",
        endpoint_url=threaded_proxy.url,
        region_name="us-east-1",
        config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 3}),
    )
    start = time.monotonic()
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    assert time.monotonic() - start >= 0.4  # two requests, 200 ms each
    assert threaded_proxy.counts["GetObject"] == 2
    assert threaded_proxy.injected["GetObject"] == 1


async def test_proxy_binds_loopback_only(moto_endpoint: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(moto_endpoint, host="0.0.0.0")
    async with FaultProxy(moto_endpoint) as proxy:
        assert proxy.url.startswith("http://127.0.0.1:")
