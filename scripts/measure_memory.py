"""Peak RSS of whole scan runs against moto (in its own process); prints a table.

    python scripts/measure_memory.py [--state 10000,50000,100000] [--listed 5000,20000,50000]

1. State slope: warm runs over S state entries (S listed CSV objects, all in state, plus
   one new file per 1,000 so the run sends and writes the whole state back). The bytes
   per state entry are the least-squares slope of peak RSS against S.
2. Listing flatness: warm runs with a fixed 5,000-entry state and L listed objects
   (5,000 CSV in state plus L-5,000 ignored sidecar files); nothing sent or written.

Each run is a fresh process reporting its own peak RSS (``VmHWM``). Not a test: it asserts
nothing, and the figures vary with the machine and Python version.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (
    BUCKET,
    FOLDERS,
    object_keys,
    run_client,
    s3_client,
    seeded_moto,
    sqs_client,
    state_bytes,
)

STATE_KEY = "state/processed_files.json"


def slope(xs: list[int], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", default="10000,50000,100000")
    parser.add_argument("--listed", default="5000,20000,50000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.state.split(",")]
    listed = [int(s) for s in args.listed.split(",")]
    layout: list[list[Any]] = [["s/", max(sizes), 0]] + [[f"l{n}/", 5000, n - 5000] for n in listed]
    print(f"seeding moto with {sum(c + j for _, c, j in layout)} objects ...", flush=True)
    with seeded_moto(layout) as endpoint:
        s3, sqs = s3_client(endpoint), sqs_client(endpoint)
        base = {
            "source_bucket": BUCKET,
            "state_bucket": BUCKET,
            "state_key": STATE_KEY,
            "endpoint_url": endpoint,
        }
        print(f"{'run':<28}{'entries':>9}{'listed':>9}{'sent':>6}{'peak MiB':>10}{'cpu s':>8}")
        flat: list[float] = []
        for n in listed:
            keys = object_keys(f"l{n}/", 5000)
            s3.put_object(Bucket=BUCKET, Key=STATE_KEY, Body=state_bytes(keys, f"l{n}/"))
            queue_url = sqs.create_queue(QueueName=f"measure-l{n}")["QueueUrl"]
            rep = run_client({**base, "queue_url": queue_url, "prefix": f"l{n}/"})
            flat.append(rep["peak_kib"] * 1024)
            s = rep["summary"]
            print(
                f"{'listing flatness':<28}{5000:>9}{s['listed']:>9}{s['queued']:>6}"
                f"{rep['peak_kib'] / 1024:>10.1f}{rep['cpu_s']:>8.2f}"
            )
        print(f"bytes per listed object (slope of peak RSS): {slope(listed, flat):.1f}")
        peaks: list[float] = []
        all_keys = object_keys("s/", max(sizes))
        for n in sizes:
            folders = n * FOLDERS // max(sizes)  # list (and record) only the first folders
            keys = [k for k in all_keys if int(k[3:6]) < folders]
            recorded = [k for i, k in enumerate(keys) if i % 1000 != 7]
            s3.put_object(Bucket=BUCKET, Key=STATE_KEY, Body=state_bytes(recorded, "s/"))
            skip = [f"f{i:03d}" for i in range(folders, FOLDERS)]
            queue_url = sqs.create_queue(QueueName=f"measure-{n}")["QueueUrl"]
            rep = run_client({**base, "queue_url": queue_url, "prefix": "s/", "skip_folders": skip})
            peaks.append(rep["peak_kib"] * 1024)
            s = rep["summary"]
            print(
                f"{'state slope':<28}{n:>9}{s['listed']:>9}{s['queued']:>6}"
                f"{rep['peak_kib'] / 1024:>10.1f}{rep['cpu_s']:>8.2f}"
            )
        print(f"bytes per state entry (slope of peak RSS): {slope(sizes, peaks):.0f}")


if __name__ == "__main__":
    main()
