"""A truncated-run sequence under ``STATE_LAYOUT=folders``: repeated runs, each cut short
by a deadline, until a run finishes the pass; reports the invocations and checks that
every file was sent exactly once (none skipped, none twice).

    python scripts/measure_truncated.py [--big 1100] [--small 100] [--folders 10]
                                        [--per-run 300] [--page 100]

moto runs in its own process (the bench's). The deadline is deterministic: a run stops
taking pages once it has considered ``--per-run`` candidates (the test suite's
``candidate_budget``), with one worker and one lister, so one folder (``big``) is larger
than one invocation can finish. Prints one JSON object. Not a test: the test suite's
``tests/test_bench.py`` runs a smaller sequence with assertions.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections import Counter
from typing import Any

import anyio
import boto3

from async_discovery.bench.seed import put_objects
from async_discovery.bench.servers import moto_process
from async_discovery.config import Config
from async_discovery.deadline import Deadline
from async_discovery.layout import runs_key, shard_key, state_prefix
from async_discovery.logs import configure_logging
from async_discovery.runner import run_scan
from async_discovery.summary import RunStats
from async_discovery.testing.moto_server import use_fake_credentials

PREFIX = "incoming/"


def budget(stats: RunStats, candidates: int) -> Deadline:
    """Expires once the run has considered ``candidates`` candidates."""
    return Deadline(lambda: 0.0 if stats.candidates >= candidates else 3600.0, margin=1.0)


def drain(sqs: Any, queue_url: str) -> list[str]:
    """Every message's key (deleted as read)."""
    keys: list[str] = []
    while True:
        msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            return keys
        keys.extend(json.loads(m["Body"])["key"] for m in msgs)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
            ],
        )


def main() -> None:
    """Seed, run until the pass completes, print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", type=int, default=1100, help="files in the big folder")
    ap.add_argument("--small", type=int, default=100, help="files in each other folder")
    ap.add_argument("--folders", type=int, default=10, help="folders, the big one included")
    ap.add_argument("--per-run", type=int, default=300, help="candidates per invocation")
    ap.add_argument("--page", type=int, default=100, help="LIST_PAGE_SIZE")
    args = ap.parse_args()
    use_fake_credentials()
    configure_logging("ERROR")
    sizes = {**{f"f{i:02d}": args.small for i in range(args.folders - 1)}, "big": args.big}
    keys = [f"{PREFIX}{f}/{i:05d}.csv" for f, n in sizes.items() for i in range(n)]
    with moto_process() as moto:
        kw: dict[str, Any] = {"endpoint_url": moto.url, "region_name": "us-east-1"}
        s3, sqs = boto3.client("s3", **kw), boto3.client("sqs", **kw)
        bucket = "truncated"
        anyio.run(lambda: put_objects(moto.url, bucket, keys, create=True))
        queue_url = sqs.create_queue(QueueName="truncated")["QueueUrl"]
        config = Config(
            source_bucket=bucket,
            prefix=PREFIX,
            queue_url=queue_url,
            state_bucket=bucket,
            endpoint_url=moto.url,
            state_layout="folders",
            list_page_size=args.page,
            workers=1,
            list_concurrency=1,
        )
        sp = state_prefix(config.state_key)
        cursor_key = runs_key(sp, PREFIX, "cursor.json")
        runs: list[dict[str, Any]] = []
        sent: Counter[str] = Counter()
        t0 = time.perf_counter()
        while len(runs) < 100:
            stats = RunStats()
            run = functools.partial(
                run_scan,
                config,
                emit_metrics=False,
                stats=stats,
                deadline=budget(stats, args.per_run),
            )
            summary = anyio.run(run)
            got = drain(sqs, queue_url)
            sent.update(got)
            pending: dict[str, Any] = {}
            if summary["truncated"]:
                body = s3.get_object(Bucket=bucket, Key=cursor_key)["Body"].read()
                pending = json.loads(body)["cursor"]["pending"]
            runs.append(
                {
                    "status": summary["statusCode"],
                    "queued": summary["queued"],
                    "truncated": summary["truncated"],
                    "pending": pending,
                }
            )
            if not summary["truncated"] or summary["statusCode"] != 200:
                break
        wall = time.perf_counter() - t0
        shards_ok = all(
            sorted(
                json.loads(
                    s3.get_object(Bucket=bucket, Key=shard_key(sp, PREFIX, f))["Body"].read()
                )["files"]
            )
            == [k for k in keys if k.startswith(f"{PREFIX}{f}/")]
            for f in sizes
        )
        cursor_left = "Contents" in s3.list_objects_v2(Bucket=bucket, Prefix=cursor_key)
    out = {
        "files": len(keys),
        "folders": len(sizes),
        "big_folder_files": args.big,
        "candidates_per_invocation": args.per_run,
        "invocations": len(runs),
        "queued_per_invocation": [r["queued"] for r in runs],
        "big_cut_inside": any(r["pending"].get("big") is not None for r in runs),
        "sent_once": sum(1 for n in sent.values() if n == 1),
        "sent_twice_or_more": sum(1 for n in sent.values() if n > 1),
        "skipped": len(set(keys) - set(sent)),
        "unexpected": len(set(sent) - set(keys)),
        "shards_complete": shards_ok,
        "cursor_left": cursor_left,
        "statuses": sorted({r["status"] for r in runs}),
        "wall_s": round(wall, 2),
    }
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
