"""The bench's moto lists exactly as stock moto: its listing index changes speed only.

The patched server (``async_discovery.bench.moto_main``, its own process, seeded through
its seeding route) and the test session's stock moto hold the same keys; every listing
(prefixes, delimiters, start-after, page sizes, continuation tokens, awkward keys,
after deletes and overwrites) must come back the same from both.
"""

from __future__ import annotations

import base64
import json
import random
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from async_discovery.bench.moto_s3 import SEED_PATH
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


def _listing(s3: Any, bucket: str, **kw: Any) -> list[dict[str, Any]]:
    """Every page of one listing, continuation tokens included (no timestamps)."""
    pages: list[dict[str, Any]] = []
    token = None
    while True:
        args = dict(kw, **({"ContinuationToken": token} if token else {}))
        try:
            resp = s3.list_objects_v2(Bucket=bucket, **args)
        except ClientError as exc:  # moto fails some inputs (e.g. a start-after with "%")
            pages.append({"error": exc.response["Error"]["Code"]})
            return pages
        pages.append(
            {
                "keys": [(o["Key"], o["ETag"], o["Size"]) for o in resp.get("Contents", ())],
                "prefixes": [p["Prefix"] for p in resp.get("CommonPrefixes", ())],
                "truncated": resp["IsTruncated"],
                "count": resp["KeyCount"],
                "token": resp.get("NextContinuationToken"),
            }
        )
        token = resp.get("NextContinuationToken")
        if not resp["IsTruncated"] or not token or len(pages) > 100:
            return pages


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


def _compare(stock: Any, fast: Any, bucket: str, keys: list[str]) -> int:
    compared = 0
    for case in _cases(keys):
        assert _listing(fast, bucket, **case) == _listing(stock, bucket, **case), case
        compared += 1
    return compared


@pytest.mark.slow
def test_patched_and_stock_moto_list_identically(patched: str, env: MotoEnv) -> None:
    once = BotoConfig(retries={"mode": "standard", "total_max_attempts": 1})
    fast = boto3.client("s3", endpoint_url=patched, region_name="us-east-1", config=once)
    stock = boto3.client("s3", endpoint_url=env.endpoint, region_name="us-east-1", config=once)
    bucket = env.new_bucket()
    keys = _keys()
    _seed_route(patched, bucket, keys[:50], create=True)  # the route creates the bucket
    _seed_route(patched, bucket, keys[50:], create=False)
    env.put_many(bucket, keys, BODY)
    assert _compare(stock, fast, bucket, keys) > 100
    # Deletes, overwrites and new keys keep the index in step.
    gone = keys[::5]
    for client in (fast, stock):
        for key in gone:  # one by one: a DeleteObjects body cannot carry U+0001
            client.delete_object(Bucket=bucket, Key=key)
        client.put_object(Bucket=bucket, Key=keys[1], Body=b"changed")
        client.put_object(Bucket=bucket, Key="a/new key", Body=BODY)
    assert _compare(stock, fast, bucket, keys) > 100
    fast.close()
    stock.close()
