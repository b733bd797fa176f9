"""Client CPU seconds per 10,000 listed objects against moto (in its own process).

    python scripts/measure_cpu.py [--objects 10000] [--repeat 3] [--profile DIR]

* warm: every object already in state, unchanged: listing + classify + compare only.
* cold: no state: every object is sent (1,000 SendMessageBatch calls) and the state
  written. moto's SQS recounts the queue (O(depth)) on every call; the seeded server
  pins those counters to 0 (see ``_harness.serve``); each run gets a fresh queue.

Each run is a fresh process timing only ``run_scan`` (``getrusage`` user + system);
moto's CPU is its own process's. The best of ``--repeat`` runs is shown. ``--profile``
writes a cProfile text profile (by own time) per mode. Not a test.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (
    BUCKET,
    object_keys,
    run_client,
    s3_client,
    seeded_moto,
    sqs_client,
    state_bytes,
)

STATE_KEY = "state/processed_files.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--modes", default="warm,cold")
    args = parser.parse_args()
    n = args.objects
    with seeded_moto([["c/", n, 0]]) as endpoint:
        s3, sqs = s3_client(endpoint), sqs_client(endpoint)
        config = {
            "source_bucket": BUCKET,
            "state_bucket": BUCKET,
            "state_key": STATE_KEY,
            "endpoint_url": endpoint,
            "prefix": "c/",
        }
        warm_state = state_bytes(object_keys("c/", n), "c/")
        print(f"{'mode':<6}{'listed':>8}{'sent':>7}{'cpu s':>8}{'cpu s/10k':>11}{'wall s':>8}")
        for mode in args.modes.split(","):
            best: dict[str, float] | None = None
            for i in range(args.repeat):
                if mode == "warm":
                    s3.put_object(Bucket=BUCKET, Key=STATE_KEY, Body=warm_state)
                else:
                    s3.delete_object(Bucket=BUCKET, Key=STATE_KEY)
                profile = None
                if args.profile and i == 0:
                    os.makedirs(args.profile, exist_ok=True)
                    profile = os.path.join(args.profile, f"{mode}.txt")
                # A fresh queue per run (PurgeQueue is allowed once a minute).
                queue_url = sqs.create_queue(QueueName=f"measure-{mode}-{i}")["QueueUrl"]
                rep = run_client({**config, "queue_url": queue_url}, profile)
                sqs.delete_queue(QueueUrl=queue_url)
                if profile is None and (best is None or rep["cpu_s"] < best["cpu_s"]):
                    best = {
                        "cpu_s": rep["cpu_s"],
                        "wall_s": rep["wall_s"],
                        "listed": rep["summary"]["listed"],
                        "queued": rep["summary"]["queued"],
                    }
            assert best is not None
            print(
                f"{mode:<6}{best['listed']:>8.0f}{best['queued']:>7.0f}{best['cpu_s']:>8.2f}"
                f"{best['cpu_s'] * 10_000 / best['listed']:>11.2f}{best['wall_s']:>8.2f}"
            )


if __name__ == "__main__":
    main()
