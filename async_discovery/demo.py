"""``async-discovery demo``: a moto server on 127.0.0.1, a sample bucket, two scans.

Needs no AWS account: fake credentials, an explicit loopback endpoint. The second scan
must queue nothing, which is the point of the state object.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from typing import Any

import anyio
from aiobotocore.session import get_session

from .config import Config
from .runner import run_scan
from .testing.moto_server import threaded_moto_server, use_fake_credentials

BUCKET = "demo-bucket"
QUEUE = "demo-queue"
PREFIX = "incoming"

# key -> what the discovery rule makes of it
SAMPLE: dict[str, str] = {
    "incoming/sales/2026-11-01.csv": "candidate",
    "incoming/sales/2026-11-02.CSV": "candidate (upper-case extension)",
    "incoming/inventory/stock.csv": "candidate",
    "incoming/inventory/q3 report+final 100%.csv": "candidate (space, +, %)",
    "incoming/café/données été.csv": "candidate (unicode)",
    "incoming/logs/app.csv": "ignored: skipped folder",
    "incoming/temp/scratch.csv": "ignored: skipped folder",
    "incoming/sales/archive/2025.csv": "ignored: deeper level",
    "incoming/sales/readme.txt": "ignored: not a CSV",
    "incoming/top-level.csv": "ignored: top-level file",
    "incoming/empty/": "ignored: folder marker",
    "elsewhere/other.csv": "ignored: other prefix",
}


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")


async def seed_sample(endpoint: str, bucket: str = BUCKET, queue: str = QUEUE) -> str:
    """Create ``bucket`` with the :data:`SAMPLE` objects and the queue ``queue`` at
    ``endpoint`` (a moto server); return the queue URL. Safe to run again: an existing
    bucket or queue is reused and the objects are overwritten (same bytes, same ETags).
    """
    session = get_session()
    kwargs: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    async with (
        session.create_client("s3", **kwargs) as s3,
        session.create_client("sqs", **kwargs) as sqs,
    ):
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            await s3.create_bucket(Bucket=bucket)
        for key in SAMPLE:
            body = b"" if key.endswith("/") else b"id,value\n1,42\n"
            await s3.put_object(Bucket=bucket, Key=key, Body=body)
        created = await sqs.create_queue(QueueName=queue)
        return str(created["QueueUrl"])


async def _peek(endpoint: str, queue_url: str) -> list[dict[str, Any]]:
    session = get_session()
    async with session.create_client("sqs", endpoint_url=endpoint, region_name="us-east-1") as sqs:
        resp = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in resp.get("Messages", [])]


def run_demo() -> int:
    """Run the demo; exit status 0 when the first scan queued every candidate and the
    second queued nothing."""
    use_fake_credentials()
    expected = sum(1 for verdict in SAMPLE.values() if verdict.startswith("candidate"))
    with threaded_moto_server() as endpoint:
        _say(f"moto server on {endpoint}; seeding s3://{BUCKET}/ with {len(SAMPLE)} objects:")
        queue_url = anyio.run(seed_sample, endpoint)
        for key, verdict in SAMPLE.items():
            _say(f"  {key!r:48} {verdict}")
        config = Config(
            source_bucket=BUCKET,
            prefix=PREFIX + "/",
            queue_url=queue_url,
            state_bucket=BUCKET,
            endpoint_url=endpoint,
        )
        summaries = []
        for run in (1, 2):
            summary = anyio.run(functools.partial(run_scan, config, emit_metrics=False))
            summaries.append(summary)
            sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            _say(
                f"scan {run}: statusCode {summary['statusCode']}, queued {summary['queued']}, "
                f"skipped {summary['skipped']}, ignored {summary['ignored']}"
            )
            if run == 1:
                sample = anyio.run(_peek, endpoint, queue_url)
                if sample:
                    _say("a message body: " + json.dumps(sample[0], ensure_ascii=False))
    first, second = summaries
    ok = first["statusCode"] == 200 and first["queued"] == expected and second["queued"] == 0
    _say(
        "demo ok: the second scan queued nothing"
        if ok
        else f"demo FAILED: expected {expected} queued then 0"
    )
    return 0 if ok else 1
