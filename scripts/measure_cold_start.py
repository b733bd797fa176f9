"""Lambda cold start and warm invokes, in-process, against moto (in its own process).

    python scripts/measure_cold_start.py [--processes 5] [--invokes 6] [--files 100]

Seeds ``--files`` CSVs over 5 folders and scans them once, so every measured invocation
is the same warm scan (nothing new: the state read, the listings, no send, no write).
Then ``--processes`` times, a fresh interpreter (a new Lambda execution environment):

* **init**: ``import async_discovery.handler``, what Lambda's init phase runs;
* **first invoke**: the first ``lambda_handler`` call of the process;
* **warm invoke**: the median of the next ``--invokes - 1`` calls;
* **clients**: opening and closing the run's S3 and SQS clients alone (no request), in
  an ``anyio.run`` of their own, as each invocation does: the median of ``--invokes``.

Wall seconds (``perf_counter``) and CPU seconds of the process (``process_time``, all
threads); the medians over the processes are printed as one JSON object. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

FOLDERS = 5


def clock() -> tuple[float, float]:
    """(wall, CPU) now."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    """(wall, CPU) seconds since ``start``."""
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def child(invokes: int, out_path: str) -> None:
    """One execution environment: import, then ``invokes`` invocations; figures to
    ``out_path`` (stderr carries the handler's logs and metrics lines)."""
    start = clock()
    import async_discovery.handler as handler  # the measured import

    init = since(start)
    import anyio

    from async_discovery.aws.clients import open_clients
    from async_discovery.config import Config

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 900_000

    runs: list[tuple[float, float]] = []
    for _ in range(invokes):
        start = clock()
        summary = handler.lambda_handler({}, Context())
        runs.append(since(start))
        if summary["statusCode"] != 200 or summary["queued"] != 0:
            raise SystemExit(f"not a warm scan: {summary}")
    config = Config.from_env(os.environ)

    async def open_and_close() -> None:
        async with open_clients(config):
            pass

    clients: list[tuple[float, float]] = []
    for _ in range(invokes):
        start = clock()
        anyio.run(open_and_close)
        clients.append(since(start))
    figures = {"init": init, "first": runs[0], "warm": runs[1:], "clients": clients}
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(figures, fh)


def median(pairs: list[tuple[float, float]]) -> dict[str, float]:
    """Median wall and CPU seconds of (wall, CPU) pairs."""
    return {
        "wall_s": round(statistics.median(p[0] for p in pairs), 4),
        "cpu_s": round(statistics.median(p[1] for p in pairs), 4),
    }


def main() -> None:
    """Seed, scan once, then measure fresh processes; print the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=5, help="fresh interpreters")
    ap.add_argument("--invokes", type=int, default=6, help="invocations per interpreter")
    ap.add_argument("--files", type=int, default=100, help="CSV files in the bucket")
    ap.add_argument("--child", nargs=2, metavar=("INVOKES", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1])
        return

    import anyio
    import boto3

    from async_discovery.bench.seed import put_objects
    from async_discovery.bench.servers import moto_process
    from async_discovery.testing.moto_server import use_fake_credentials

    use_fake_credentials()
    keys = [f"incoming/f{i % FOLDERS:02d}/{i:05d}.csv" for i in range(args.files)]
    with moto_process() as moto:
        bucket = "coldstart"
        anyio.run(lambda: put_objects(moto.url, bucket, keys, create=True))
        sqs = boto3.client("sqs", endpoint_url=moto.url, region_name="us-east-1")
        queue_url = sqs.create_queue(QueueName="coldstart")["QueueUrl"]
        env = {
            **os.environ,
            "S3_SOURCE_BUCKET": bucket,
            "S3_PREFIX": "incoming/",
            "SQS_QUEUE_URL": queue_url,
            "AWS_ENDPOINT_URL": moto.url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "LOG_LEVEL": "ERROR",
        }
        first = subprocess.run(
            [sys.executable, "-m", "async_discovery", "scan"],
            env=env,
            capture_output=True,
            check=False,
        )
        if first.returncode != 0:
            raise SystemExit(f"seeding scan failed: {first.stderr.decode()[-500:]}")
        results: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.processes):
                out = os.path.join(tmp, f"{i}.json")
                subprocess.run(
                    [sys.executable, __file__, "--child", str(args.invokes), out],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,  # logs and the metrics lines
                    check=True,
                )
                with open(out, encoding="utf-8") as fh:
                    results.append(json.load(fh))
    report = {
        "files": args.files,
        "processes": args.processes,
        "invokes_per_process": args.invokes,
        "init_import": median([r["init"] for r in results]),
        "first_invoke": median([r["first"] for r in results]),
        "warm_invoke": median([w for r in results for w in r["warm"]]),
        "clients_open_close": median([c for r in results for c in r["clients"]]),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
