"""Timestamps without a time zone (some S3-compatible stores omit S3's ``Z``) are UTC.

A listing whose ``LastModified`` has no zone must still compare with the aware instants
of ``MIN_OBJECT_AGE_SECONDS`` and ``INITIAL_SCAN=since:``; the fault proxy serves moto's
real listing with the zone removed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from async_discovery.aws.clients import parse_timestamp
from async_discovery.config import Config, InitialScan
from async_discovery.testing.fault_proxy import FaultProxy, ProxiedRequest, Rewrite

from .helpers import MotoEnv, scan

_ZONED = re.compile(rb"(<LastModified>[^<]*?)(Z|[+-]00:00)(</LastModified>)")


def strip_zone(
    request: ProxiedRequest, status: int, headers: Mapping[str, str], body: bytes
) -> tuple[int, Mapping[str, str], bytes]:
    """The listing as a store that writes ``2026-11-28T07:00:00.000`` (no zone) sends it."""
    changed, count = _ZONED.subn(rb"\1\3", body)
    assert count > 0 or b"<Contents>" not in body  # the rewrite must really apply
    return status, headers, changed


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-28T07:00:00.000",  # ISO 8601 without a zone: the fast path
        "2026-11-28T07:00:00",
        "Sat, 28 Nov 2026 07:00:00",  # not ISO 8601: botocore's own parser
    ],
)
def test_timestamp_without_zone_parses_as_utc(text: str) -> None:
    assert parse_timestamp(text) == datetime(2026, 11, 28, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T07:00:00.000Z", datetime(2026, 11, 28, 7, tzinfo=UTC)),
        ("2026-11-28T09:00:00+02:00", datetime(2026, 11, 28, 7, tzinfo=UTC)),
        ("Sat, 28 Nov 2026 07:00:00 GMT", datetime(2026, 11, 28, 7, tzinfo=UTC)),
        (1795849200, datetime(2026, 11, 28, 7, tzinfo=UTC)),
    ],
)
def test_timestamp_with_zone_keeps_it(text: str | int, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed.tzinfo is not None and parsed == expected


def test_since_without_zone_is_utc() -> None:
    env = {"S3_SOURCE_BUCKET": "b-ucket", "SQS_QUEUE_URL": "http://h/1/q"}
    cfg = Config.from_env({**env, "INITIAL_SCAN": "since:2026-01-01T00:00:00"})
    assert cfg.initial_scan.since == datetime(2026, 1, 1, tzinfo=UTC)


async def _scan_through(proxy: FaultProxy, config: Config) -> dict[str, Any]:
    rule = proxy.inject(Rewrite(strip_zone), "ListObjectsV2")
    summary = await scan(config)
    assert rule.hits > 0
    return summary


async def test_min_object_age_with_zoneless_listing(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    env.put(bucket, "incoming/b/2.csv")
    young = env.config(bucket, queue_url, endpoint_url=proxy.url, min_object_age_seconds=3600)
    summary = await _scan_through(proxy, young)
    assert (summary["statusCode"], summary["queued"], summary["deferred"]) == (200, 0, 2)
    proxy.clear()
    # A file just written is seconds old: it goes once the minimum age is that small.
    settled = env.config(bucket, queue_url, endpoint_url=proxy.url, min_object_age_seconds=0.01)
    summary = await _scan_through(proxy, settled)
    assert (summary["statusCode"], summary["queued"], summary["deferred"]) == (200, 2, 0)
    assert sorted(b["key"] for b in env.bodies(queue_url)) == [
        "incoming/a/1.csv",
        "incoming/b/2.csv",
    ]


@pytest.mark.parametrize(("hours", "queued", "marked"), [(-1, 1, 0), (1, 0, 1)])
async def test_initial_scan_since_with_zoneless_listing(
    proxy: FaultProxy,
    env: MotoEnv,
    bucket: str,
    queue_url: str,
    hours: int,
    queued: int,
    marked: int,
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    since = datetime.now(UTC) + timedelta(hours=hours)
    config = env.config(
        bucket,
        queue_url,
        endpoint_url=proxy.url,
        initial_scan=InitialScan(mode="since", since=since),
    )
    summary = await _scan_through(proxy, config)
    assert (summary["statusCode"], summary["queued"], summary["marked"]) == (200, queued, marked)
    state = env.state(bucket)
    assert state is not None and list(state["files"]) == ["incoming/a/1.csv"]
    # The message carries the timestamp as UTC, with its zone.
    bodies = env.bodies(queue_url)
    assert len(bodies) == queued
    for body in bodies:
        assert body["last_modified"].endswith("Z")
