"""``bench --one-folder``: one large folder, warm, against its two listing references.

The bucket holds ``files`` candidates in one folder (``incoming/big/``), seeded through
the bench moto's seeding route, and the complete state in the bench's layout (nothing
changed: a warm run). Each repetition runs, side by side against the same server:

- **scanner**: the warm run (``run_scan``);
- **sequential**: one ``ListObjectsV2`` pagination of the folder with the scanner's
  lister, no client work (:func:`.listing_refs.list_sequential`);
- **range floor**: the folder as key ranges listed at once, ``--range-concurrency`` in
  flight (the scanner's ``LIST_CONCURRENCY`` by default), no client work
  (:func:`.listing_refs.list_ranges`): the very ranges the scanner lists, the bounds of
  the folder's index in the seeded state (``STATE_LAYOUT=folders``); with no index (the
  single layout, or a folder under ``SHARD_MAX_FILES``), every ``--range-keys``-th key;

plus the start-up runs (the scanner over an empty prefix) for the client CPU per 1,000
listed keys without start-up.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..layout import shard_key, state_prefix
from ..ranges import INDEX_VERSION, decode_index, version_at_start
from .listing_refs import every_nth
from .scenarios import EMPTY_PREFIX, Bench, aggregate, cpu_per_1000
from .seed import BODY_V1, PREFIX, STATE_KEY

FOLDER = "big"
KINDS = ("scanner", "sequential", "ranges")


def folder_keys(files: int) -> list[str]:
    """The folder's keys, in listing order."""
    return [f"{PREFIX}{FOLDER}/file-{i:08d}.csv" for i in range(files)]


def index_bounds(state: dict[str, bytes]) -> list[str] | None:
    """The bounds of the folder's key ranges in the seeded state (None: no index)."""
    body = state.get(shard_key(state_prefix(STATE_KEY), PREFIX, FOLDER))
    if body is None or version_at_start(body) != INDEX_VERSION:
        return None
    index = decode_index(body, name=FOLDER, prefix=PREFIX, folder=FOLDER)
    return [ref.until for ref in index.ranges[:-1] if ref.until is not None]


def run_one_folder(
    bench: Bench,
    *,
    files: int,
    reps: int,
    sequential_reps: int,
    range_keys: int,
    concurrency: int,
) -> dict[str, Any]:
    """Seed the folder and its warm state, then ``reps`` repetitions of the three runs
    (the sequential reference ``sequential_reps`` times); medians and ratios."""
    bucket = bench.new_bucket()
    keys = folder_keys(files)
    bench.seed(bucket, keys, create=True)
    etag = hashlib.md5(BODY_V1).hexdigest()
    bench.say(f"one folder: encoding the warm state of {files} files")
    complete = bench.state(bucket, ((key, etag) for key in keys))
    from_index = index_bounds(complete)
    bounds = from_index if from_index is not None else every_nth(keys, range_keys)
    prefix = f"{PREFIX}{FOLDER}/"
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    startup: list[dict[str, Any]] = []
    for rep in range(reps):
        bench.say(f"one folder: rep {rep + 1}/{reps}, scanner")
        bench.put_state(bucket, complete)
        runs["scanner"].append(bench.measure("scanner", bucket))
        bench.say(f"one folder: rep {rep + 1}/{reps}, start-up")
        startup.append(bench.measure("scanner", bucket, prefix=EMPTY_PREFIX))
        if rep < sequential_reps:
            bench.say(f"one folder: rep {rep + 1}/{reps}, sequential listing")
            runs["sequential"].append(bench.measure("list_sequential", bucket, prefix=prefix))
        bench.say(f"one folder: rep {rep + 1}/{reps}, range floor")
        runs["ranges"].append(
            bench.measure(
                "list_ranges", bucket, prefix=prefix, bounds=bounds, concurrency=concurrency
            )
        )
    out: dict[str, Any] = {kind: aggregate(r) for kind, r in runs.items() if r}
    out["startup"] = aggregate(startup)
    walls = {kind: out[kind]["wall_s"]["median"] for kind in out if kind in KINDS}
    out.update(
        files=files,
        bucket=bucket,
        range_count=len(bounds) + 1,
        range_keys=range_keys,
        ranges_from_index=from_index is not None,
        concurrency=concurrency,
        state_layout=bench.state_layout,
        cpu_per_1000_listed=cpu_per_1000(out["scanner"], out["startup"]),
        scanner_over_ranges=walls["scanner"] / walls["ranges"],
    )
    if "sequential" in walls:
        out["sequential_over_scanner"] = walls["sequential"] / walls["scanner"]
        out["sequential_over_ranges"] = walls["sequential"] / walls["ranges"]
    return out
