"""The ``bench`` subcommand's flags (argparse only: cheap to import with the CLI)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bench flags to ``parser``; every help says ``[flag only]`` (no bench flag
    has an environment variable behind it), like the other subcommands' helps."""

    def add(*names: str, **kwargs: Any) -> None:
        kwargs["help"] = f"{kwargs.get('help', '')} [flag only]"
        parser.add_argument(*names, **kwargs)

    add("--files", type=int, default=5000, help="candidate CSV files to seed (default 5000)")
    add("--folders", type=int, default=10, help="folders they are spread over (default 10)")
    add(
        "--junk",
        type=float,
        default=0.1,
        help="junk objects as a fraction of --files: skipped folders, a deeper level, "
        "non-CSV, top-level (default 0.1; 0 = none)",
    )
    add(
        "--latency-ms",
        type=float,
        default=20.0,
        help="latency the proxy adds to every request (default 20; 0 = no proxy)",
    )
    add("--reps", type=int, default=3, help="repetitions per scenario (default 3)")
    add(
        "--sequential-reps",
        type=int,
        default=1,
        help="repetitions of the (slow) sequential reference, at most --reps (default 1)",
    )
    add(
        "--scenarios",
        default="cold,warm,incremental",
        help="comma-separated: cold, warm, incremental (default all; empty = none)",
    )
    add(
        "--fifo",
        action="store_true",
        help="send to FIFO queues (one message group per folder); the scanner's order "
        "within each group is checked against the listing order",
    )
    add(
        "--state-layout",
        choices=("single", "folders"),
        default="single",
        help="the scanner's STATE_LAYOUT; the warm and incremental state is seeded in it "
        "and the floor reads and writes state the same way (default single)",
    )
    add(
        "--fanout",
        type=int,
        default=0,
        metavar="N",
        help="also run each scenario as the Step Functions fan-out: the plan step, then "
        "N scanner children at once over ceil(folders / N) folders each, then the sum, "
        "into one queue; compared with the single run (same messages, API calls within "
        "N + 2); and once with the children one after another, for per-child figures. "
        "Needs --state-layout folders (default 0 = no fan-out)",
    )
    add(
        "--state-cost",
        action="store_true",
        help="also measure the state work of a run that changes one file, on synthetic "
        "state, both layouts side by side (no listing)",
    )
    add(
        "--state-cost-files",
        type=int,
        default=100000,
        help="tracked files in the state-cost runs (default 100000)",
    )
    add(
        "--state-cost-folders",
        type=int,
        default=100,
        help="folders they are spread over (default 100)",
    )
    add(
        "--state-cost-listed",
        type=int,
        default=None,
        help="folders the state-cost run lists, the changed one first (default all): "
        "a folders-layout run reads only their shards",
    )
    add("--state-cost-reps", type=int, default=1, help="repetitions per layout (default 1)")
    add(
        "--one-folder",
        action="store_true",
        help="instead of the scenarios: --files candidates in ONE folder, warm, side by side "
        "with one sequential ListObjectsV2 pagination of the folder and the range floor "
        "(the folder's key ranges listed at once, no client work)",
    )
    add(
        "--range-keys",
        type=int,
        default=10000,
        help="--one-folder: the range floor splits the folder at every N-th key (default 10000)",
    )
    add(
        "--range-concurrency",
        type=int,
        default=None,
        help="--one-folder: ranges listed at once by the range floor (default: the "
        "scanner's LIST_CONCURRENCY)",
    )
    add(
        "--events",
        action="store_true",
        help="instead of the scan scenarios, the event path: listen's latency from PUT to "
        "message, the drain rate of a backlog against --batch-size 1, and no loss with "
        "notifications dropped or doubled (STATE_LAYOUT from --state-layout)",
    )
    add("--events-files", type=int, default=1000, help="files put for the latency (default 1000)")
    add("--events-rate", type=float, default=50.0, help="puts per second (default 50)")
    add(
        "--events-backlog",
        type=int,
        default=20000,
        help="notifications in the throughput backlog (default 20000)",
    )
    add(
        "--events-backlog-folders",
        type=int,
        default=100,
        help="folders the backlog is spread over (default 100)",
    )
    add(
        "--events-batch-size",
        type=int,
        default=1000,
        help="listen --batch-size draining the backlog (default 1000)",
    )
    add(
        "--events-batch-window",
        type=float,
        default=1.0,
        help="listen --batch-window draining the backlog (default 1)",
    )
    add(
        "--events-reference-records",
        type=int,
        default=300,
        help="records the --batch-size 1 reference handles (default 300)",
    )
    add(
        "--events-loss-files",
        type=int,
        default=1000,
        help="files of each no-loss run (default 1000)",
    )
    add("--endpoint-url", default=None, help="use this S3/SQS endpoint instead of starting moto")
    add("--json", action="store_true", help="one JSON document on stdout")
    add("--no-progress", action="store_true", help="no progress line on stderr")
    add("--workers", type=int, default=None, help="scanner WORKERS (default: Config's)")
    add("--list-concurrency", type=int, default=None, help="scanner LIST_CONCURRENCY")
    add("--queue-size", type=int, default=None, help="scanner QUEUE_SIZE")
    add(
        "--floor-concurrency",
        type=int,
        default=16,
        help="requests in flight for the floor (default 16)",
    )
    add(
        "--stock-moto",
        action="store_true",
        help="run moto without the bench's queue-counter patch (to see its cost)",
    )
    add(
        "--profile",
        default=None,
        metavar="DIR",
        help="after each scenario, one extra scanner run under pyinstrument (not in the "
        "figures); profiles written to DIR/<scenario>.txt",
    )
    add("--sweep", action="store_true", help="also sweep WORKERS, LIST_CONCURRENCY, QUEUE_SIZE")
    add("--sweep-reps", type=int, default=1, help="repetitions per sweep point (default 1)")
    add("--sweep-workers", default="2,4,8,16", help="WORKERS values to try")
    add("--sweep-list-concurrency", default="2,4,8,16", help="LIST_CONCURRENCY values to try")
    add("--sweep-queue-size", default="2,8,32", help="QUEUE_SIZE values to try")
    add("--memory", action="store_true", help="also run the memory measurements")
    add(
        "--memory-listed",
        default="5000,20000,50000",
        help="listed objects for the flat-in-listed runs",
    )
    add("--memory-state-files", type=int, default=5000, help="state entries in those runs")
    add(
        "--memory-entries",
        default="10000,50000,100000",
        help="state entries for the bytes-per-entry runs",
    )
    add("--memory-reps", type=int, default=1, help="repetitions per memory point")
