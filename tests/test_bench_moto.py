"""The bench's moto lists exactly as stock moto: its listing index and its writer of
``<Contents>`` change speed only.

The patched server (``async_discovery.bench.moto_main``, its own process, seeded through
its seeding route) and the test session's stock moto hold the same keys; every listing
(prefixes, delimiters, start-after, page sizes, continuation tokens, owners, awkward
keys, after deletes and overwrites) must come back the same from both, byte for byte
but for the timestamps.
"""

from __future__ import annotations

import base64
import json
import random
import re
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from async_discovery.bench.moto_s3 import SEED_PATH, contents_xml
from async_discovery.bench.servers import moto_process

from .helpers import MotoEnv

BODY = b"id,value\n1,42\n"
_ALPHABET = ["a", "b", "/", "-", "%", "+", " ", "é", "\U0001f600", "\x01", "ab"]


def _keys() -> list[str]:
    rng = random.Random(20261203)
    keys = {"".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 6))) for _ in range(100)}
    keys |= {"a/", "a/b/", "a//", "b/x.csv", "b/y/z.csv", "b-/x", "a+/é.csv"}
    return sorted(keys)


@pytest.fixture(scope="module")
def patched() -> Iterator[str]:
    with moto_process() as server:
        yield server.url


def _seed_route(url: str, bucket: str, keys: list[str], *, create: bool) -> None:
    doc = {
        "bucket": bucket,
        "keys": keys,
        "body": base64.b64encode(BODY).decode(),
        "create": create,
    }
    request = urllib.request.Request(url + SEED_PATH, data=json.dumps(doc).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as resp:
        assert json.load(resp) == {"put": len(keys)}


_STAMP = re.compile(rb"<LastModified>[^<]*</LastModified>")


def _listing(s3: Any, bucket: str, **kw: Any) -> list[dict[str, Any]]:
    """Every page of one listing, continuation tokens included, with its raw body
    (timestamps blanked: the two servers stored the objects at different times)."""
    pages: list[dict[str, Any]] = []
    token = None
    bodies: list[bytes] = []

    def keep(http_response: Any, **_: Any) -> None:
        bodies.append(_STAMP.sub(b"<LastModified/>", http_response.content))

    s3.meta.events.register("after-call.s3.ListObjectsV2", keep)
    try:
        while True:
            args = dict(kw, **({"ContinuationToken": token} if token else {}))
            try:
                resp = s3.list_objects_v2(Bucket=bucket, **args)
            except ClientError as exc:  # moto fails some inputs (a start-after with "%")
                pages.append({"error": exc.response["Error"]["Code"]})
                return pages
            pages.append(
                {
                    "body": bodies[-1],
                    "keys": [(o["Key"], o["ETag"], o["Size"]) for o in resp.get("Contents", ())],
                    "prefixes": [p["Prefix"] for p in resp.get("CommonPrefixes", ())],
                    "truncated": resp["IsTruncated"],
                    "count": resp["KeyCount"],
                    "token": resp.get("NextContinuationToken"),
                }
            )
            token = resp.get("NextContinuationToken")
            if not resp["IsTruncated"] or not token or len(pages) > 400:
                return pages
    finally:
        s3.meta.events.unregister("after-call.s3.ListObjectsV2", keep)


def _cases(keys: list[str]) -> Iterator[dict[str, Any]]:
    rng = random.Random(7)
    starts = ["", "a", "a/", "a/b", "b", "\U0001f600", "zzz", *rng.sample(keys, 8)]
    prefixes = ["", "a", "a/", "b/", "é", "\x01", "%", "+", *{k[:2] for k in rng.sample(keys, 6)}]
    for prefix in prefixes:
        for delimiter in (None, "/", "-", "ab"):
            for max_keys in (4, 1000):
                case: dict[str, Any] = {"Prefix": prefix, "MaxKeys": max_keys}
                if delimiter:
                    case["Delimiter"] = delimiter
                yield case
    for start in starts:
        for delimiter in (None, "/"):
            case = {"StartAfter": start, "MaxKeys": 6}
            if delimiter:
                case["Delimiter"] = delimiter
            yield case
    yield {"Prefix": "a", "MaxKeys": 0}
    yield {"Prefix": "a", "MaxKeys": 5, "FetchOwner": True}


def _compare(stock: Any, fast: Any, bucket: str, keys: list[str]) -> int:
    compared = 0
    for case in _cases(keys):
        assert _listing(fast, bucket, **case) == _listing(stock, bucket, **case), case
        compared += 1
    return compared


@pytest.mark.slow
def test_patched_and_stock_moto_list_identically(patched: str, env: MotoEnv) -> None:
    # No checksum on the puts: the seeding route's objects have none either.
    once = BotoConfig(
        retries={"mode": "standard", "total_max_attempts": 1},
        request_checksum_calculation="when_required",
    )
    fast = boto3.client("s3", endpoint_url=patched, region_name="us-east-1", config=once)
    stock = boto3.client("s3", endpoint_url=env.endpoint, region_name="us-east-1", config=once)
    bucket = env.new_bucket()
    keys = _keys()
    _seed_route(patched, bucket, keys[:50], create=True)  # the route creates the bucket
    _seed_route(patched, bucket, keys[50:], create=False)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: stock.put_object(Bucket=bucket, Key=key, Body=BODY), keys))
    assert _compare(stock, fast, bucket, keys) > 100
    # Deletes, overwrites and new keys keep the index in step.
    gone = keys[::5]
    for client in (fast, stock):
        for key in gone:  # one by one: a DeleteObjects body cannot carry U+0001
            client.delete_object(Bucket=bucket, Key=key)
        client.put_object(Bucket=bucket, Key=keys[1], Body=b"changed", ChecksumAlgorithm="CRC32")
        client.put_object(Bucket=bucket, Key="a/new key", Body=BODY)
    assert _compare(stock, fast, bucket, keys) > 100
    fast.close()
    stock.close()


def test_the_contents_writer_takes_what_moto_lists() -> None:
    """moto's items (as its ``list_objects_v2`` builds them) go through the fast writer;
    anything else is left to moto's serializer (None)."""
    item = {
        "Key": "a%20b",
        "LastModified": "2026-12-03T22:42:57.000Z",
        "ETag": '"e&"',
        "Size": 14,
        "StorageClass": "STANDARD",
    }
    owner = {"ID": "i<d", "DisplayName": "webfile"}
    assert contents_xml([item]) == (
        "<Contents><Key>a%20b</Key><LastModified>2026-12-03T22:42:57.000Z</LastModified>"
        '<ETag>"e&amp;"</ETag><Size>14</Size><StorageClass>STANDARD</StorageClass></Contents>'
    )
    with_more = contents_xml([{**item, "ChecksumAlgorithm": ["CRC32"], "Owner": owner}])
    assert with_more is not None and with_more.endswith(
        "<ChecksumAlgorithm>CRC32</ChecksumAlgorithm><Size>14</Size><StorageClass>STANDARD"
        "</StorageClass><Owner><DisplayName>webfile</DisplayName><ID>i&lt;d</ID></Owner>"
        "</Contents>"
    )
    for odd in (
        {**item, "RestoreStatus": {}},
        {**item, "ETag": ""},
        {**item, "LastModified": "2026-12-03T22:42:57.123Z"},
        {**item, "Owner": {"ID": "x"}},
    ):
        assert contents_xml([item, odd]) is None
