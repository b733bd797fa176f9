"""A first end-to-end check that the fixtures and the scanner meet."""

from __future__ import annotations

from .helpers import MotoEnv, scan


async def test_scan_queues_new_file_then_nothing(env: MotoEnv, bucket: str, queue_url: str) -> None:
    env.put(bucket, "incoming/a/1.csv")
    first = await scan(env.config(bucket, queue_url))
    second = await scan(env.config(bucket, queue_url))
    assert (first["statusCode"], first["queued"]) == (200, 1)
    assert (second["statusCode"], second["queued"], second["skipped"]) == (200, 0, 1)
    assert [b["key"] for b in env.bodies(queue_url)] == ["incoming/a/1.csv"]
