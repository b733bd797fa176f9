"""Progress per Lambda invocation under a real deadline, and where each one's time goes.

    python scripts/measure_deadline.py [--files 200] [--folders 10] [--page 2]
        [--latency-ms 100] [--seconds 3] [--invocations 12] [--margin 2]
        [--layout single|folders]

A truncated sequence as a Lambda function runs it: every invocation is one
``anyio.run`` of the scan (as the handler does) with a deadline that runs out in real
time ``--seconds`` after the invocation starts, less ``DEADLINE_MARGIN_SECONDS``
(default 2). moto runs in its own process behind the latency proxy (the bench's, in its
own process too: ``--latency-ms`` on every request). The queue is drained after each
invocation; the figures are the files covered after each invocation (sent at least
once), files sent twice, and per invocation, from the API calls' own timestamps:

* ``setup``: invocation start to its first API call (event loop, session, clients);
* ``startup_requests``: first API call to the first listing of a folder's files (state
  or cursor reads, the folder discovery listing);
* ``working``: from there until the deadline's margin is reached;
* ``wind_down``: margin reached to the run's return (sends in flight, state writes);
* ``unused``: the rest of the invocation's time;
* ``cpu``: the client's CPU seconds in the invocation (moto and the proxy are other
  processes).

Prints one JSON object; medians over the invocations that hit the deadline. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from typing import Any

import anyio
import boto3

import async_discovery.aws.clients as clients
from async_discovery.bench.seed import put_objects
from async_discovery.bench.servers import moto_process, proxy_process
from async_discovery.config import Config
from async_discovery.deadline import Deadline
from async_discovery.logs import configure_logging
from async_discovery.runner import run_scan
from async_discovery.testing.moto_server import use_fake_credentials

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure_truncated import drain  # a sibling script, not a package

PREFIX = "incoming/"
CALLS: list[tuple[float, str, str]] = []  # (time, operation, S3 prefix listed or "")


def timed_calls(client: Any, counter: Counter[str]) -> None:
    """In place of ``count_calls``: also record each call's start and listed prefix."""

    def on_call(model: Any, params: Any = None, **_: Any) -> None:
        counter[model.name] += 1
        query = params.get("query_string") if isinstance(params, dict) else None
        prefix = query.get("prefix", "") if isinstance(query, dict) else ""
        CALLS.append((time.monotonic(), model.name, prefix))

    client.meta.events.register("before-call.*.*", on_call)


def invoke(config: Config, seconds: float) -> tuple[dict[str, Any], dict[str, float]]:
    """One invocation: the summary and where its time went."""
    CALLS.clear()
    cpu = time.process_time()
    start = time.monotonic()
    end = start + seconds
    deadline = Deadline(lambda: end - time.monotonic(), margin=config.deadline_margin_seconds)
    summary = anyio.run(lambda: run_scan(config, deadline=deadline, emit_metrics=False))
    returned = time.monotonic()
    cpu = time.process_time() - cpu
    margin_at = end - config.deadline_margin_seconds
    first = CALLS[0][0] if CALLS else returned
    folder_listing = next(
        (t for t, op, prefix in CALLS if op == "ListObjectsV2" and prefix.count("/") >= 2),
        margin_at,
    )
    phases = {
        "setup": first - start,
        "startup_requests": folder_listing - first,
        "working": max(0.0, margin_at - folder_listing),
        "wind_down": returned - margin_at,
        "unused": end - returned,
        "cpu": cpu,
    }
    return summary, {k: round(v, 3) for k, v in phases.items()}


def main() -> None:
    """Seed, invoke ``--invocations`` times, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--folders", type=int, default=10)
    ap.add_argument("--page", type=int, default=2, help="LIST_PAGE_SIZE")
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per invocation")
    ap.add_argument("--invocations", type=int, default=12)
    ap.add_argument("--margin", type=float, default=2.0, help="DEADLINE_MARGIN_SECONDS")
    ap.add_argument("--layout", choices=("single", "folders"), default="single")
    args = ap.parse_args()
    use_fake_credentials()
    configure_logging("ERROR")
    clients.count_calls = timed_calls
    keys = [f"{PREFIX}f{i % args.folders:02d}/{i:05d}.csv" for i in range(args.files)]
    with moto_process() as moto, proxy_process(moto.url, args.latency_ms) as proxy:
        kw: dict[str, Any] = {"endpoint_url": moto.url, "region_name": "us-east-1"}
        sqs = boto3.client("sqs", **kw)
        bucket = "deadline"
        anyio.run(lambda: put_objects(moto.url, bucket, keys, create=True))
        queue_url = sqs.create_queue(QueueName="deadline")["QueueUrl"]
        layout: dict[str, Any] = {"state_layout": args.layout} if args.layout != "single" else {}
        config = Config(
            source_bucket=bucket,
            prefix=PREFIX,
            queue_url=queue_url,
            state_bucket=bucket,
            endpoint_url=proxy.url,
            list_page_size=args.page,
            deadline_margin_seconds=args.margin,
            **layout,  # (not passed for single: versions before the layouts took none)
        )
        sent: Counter[str] = Counter()
        rows: list[dict[str, Any]] = []
        for _ in range(args.invocations):
            summary, phases = invoke(config, args.seconds)
            sent.update(drain(sqs, queue_url))
            rows.append(
                {
                    "queued": summary["queued"],
                    "truncated": summary.get("truncated", False),
                    "status": summary["statusCode"],
                    "covered": len(sent),
                    **phases,
                }
            )
    cut = [r for r in rows if r["truncated"]] or rows
    out = {
        "files": args.files,
        "folders": args.folders,
        "page": args.page,
        "latency_ms": args.latency_ms,
        "seconds_per_invocation": args.seconds,
        "margin_s": config.deadline_margin_seconds,
        "layout": args.layout,
        "covered_after": [r["covered"] for r in rows],
        "queued_per_invocation": [r["queued"] for r in rows],
        "sent_twice_or_more": sum(1 for n in sent.values() if n > 1),
        "statuses": sorted({r["status"] for r in rows}),
        "median_s": {
            k: round(statistics.median(r[k] for r in cut), 3)
            for k in ("setup", "startup_requests", "working", "wind_down", "unused", "cpu")
        },
    }
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
