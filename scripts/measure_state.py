"""Measure the state object at N entries (default 100,000): size, encode/decode time,
memory held, and a full load (S3 GetObject + decode) from a moto server on 127.0.0.1.

    python scripts/measure_state.py [--entries 100000] [--repeat 5]

Prints one JSON object. Figures vary with the machine; the README note quotes a run.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import anyio

from async_discovery.aws import S3StateStore, open_clients
from async_discovery.config import Config
from async_discovery.discovery import Verdict, classify
from async_discovery.state import FileEntry, State
from async_discovery.state_codec import decode, encode
from async_discovery.testing.moto_server import threaded_moto_server, use_fake_credentials

BUCKET = "state-measure"
KEY = "state/processed_files.json"


def build(entries: int) -> State:
    """Realistic entries: 100 folders, dated file names, MD5 ETags, one timestamp each."""
    files: dict[str, FileEntry] = {}
    for i in range(entries):
        folder = f"vendor-{i % 100:03d}"
        key = f"incoming/{folder}/2026-11-{i % 28 + 1:02d}-export-{i:07d}.csv"
        etag = f"{i:032x}"
        files[key] = FileEntry(etag, 1000 + i, folder, f"2026-11-25T18:{i % 60:02d}:58Z")
    return State(files=files, source_bucket=BUCKET)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of ``repeat`` calls, and the last result."""
    samples: list[float] = []
    result: Any = None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


async def full_load(endpoint: str, body: bytes, repeat: int) -> float:
    """Median seconds of S3StateStore.load() + decode() against moto."""
    config = Config(source_bucket=BUCKET, state_bucket=BUCKET, endpoint_url=endpoint, dry_run=True)
    samples: list[float] = []
    async with open_clients(config) as clients:
        await clients.s3.create_bucket(Bucket=BUCKET)
        await clients.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
        store = S3StateStore(clients.s3, BUCKET, KEY, config.state_max_bytes)
        for _ in range(repeat):
            gc.collect()
            start = time.perf_counter()
            raw, _etag = await store.load()
            assert raw is not None
            decode(raw, name=store.name)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    state = build(args.entries)
    encode_s, body = timed(functools.partial(encode, state, "2026-11-25T18:05:58Z"), args.repeat)
    decode_s, _ = timed(lambda: decode(body, name="measure"), args.repeat)

    # Memory the decoded state holds for the whole run, and the peak while decoding.
    del state
    gc.collect()
    tracemalloc.start()
    kept = decode(body, name="measure")
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # The prune bookkeeping: the keys that are this scan's candidates (once per run).
    skip = frozenset({"logs", "temp", "backups"})
    unseen_s, unseen = timed(
        lambda: {k for k in kept.files if classify(k, "incoming/", skip)[0] is Verdict.CANDIDATE},
        args.repeat,
    )
    assert len(unseen) == args.entries

    use_fake_credentials()
    with threaded_moto_server() as endpoint:
        load_s = anyio.run(full_load, endpoint, body, args.repeat)

    print(
        json.dumps(
            {
                "entries": args.entries,
                "state_bytes": len(body),
                "bytes_per_entry": round(len(body) / args.entries, 1),
                "encode_seconds": round(encode_s, 3),
                "decode_seconds": round(decode_s, 3),
                "decoded_state_mib": round(held / 2**20, 1),
                "decode_peak_mib": round(peak / 2**20, 1),
                "prune_candidate_set_seconds": round(unseen_s, 3),
                "full_load_seconds_moto": round(load_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
