"""The state-cost scenario: the state work of one run that changes one file, per layout.

No listing: the bucket holds only synthetic state (``files`` entries over ``folders``
folders, built with :func:`~.seed.state_objects` and put directly on moto), so a million
tracked files cost no million ``PutObject`` calls. Each layout is measured in a child
process of its own (:mod:`.child`, kind ``state_cost``), through the scanner's own code
paths against moto over HTTP (no latency proxy):

- ``single``: :func:`~async_discovery.stages.commit.open_unit` of the state object
  (``GetObject``, streamed into the decoder), one entry upserted,
  :func:`~async_discovery.stages.commit.write_state` (encode, conditional ``PutObject``).
- ``folders``: :class:`~async_discovery.stages.shards.Shards` ``open`` of every folder's
  shard (every folder is listed by a run), ``LIST_CONCURRENCY`` folders at a time as
  the scanner's listers hold them; the one changed entry upserted in its folder's shard;
  ``commit`` of each folder, which writes only the changed shard and drops each one. The
  scanner holds a shard while its folder's pages are listed; here a shard is dropped as
  soon as it is decided, so the figure is the state work alone.

Measured per run: wall and CPU seconds of the state work (clients opened before the
clock starts), ``GetObject``/``PutObject`` calls, bytes read (``ContentLength`` of each
``GetObject`` answered), bytes written (the sizes of the objects whose ETag changed, read
from moto after the run), peak RSS (``VmHWM``) and the RSS after imports and setup.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from .seed import BODY_V1, PREFIX, STATE_KEY

if TYPE_CHECKING:
    from .scenarios import Bench

LAYOUTS = ("single", "folders")
CHANGED_ETAG = "f" * 32  # the changed file's new ETag


def synthetic_entries(files: int, folders: int) -> Iterator[tuple[str, str]]:
    """``(key, etag)`` of ``files`` tracked files over ``folders`` folders (folder by
    folder, so a folder's keys are contiguous like a listing's)."""
    per = -(-files // folders)
    for i in range(files):
        folder = i // per
        yield f"{PREFIX}f{folder:03d}/2026-11-{i % 28 + 1:02d}-export-{i:07d}.csv", f"{i:032x}"


def changed_key(files: int, folders: int) -> str:
    """The one file the measured run changes: the first of the middle folder."""
    per = -(-files // folders)
    i = (folders // 2) * per
    return f"{PREFIX}f{i // per:03d}/2026-11-{i % 28 + 1:02d}-export-{i:07d}.csv"


# -- child side -------------------------------------------------------------------------


async def state_work(spec: dict[str, Any], peak_rss_kib: Any) -> dict[str, Any]:
    """One run's state work under ``spec["layout"]``; the measurement (child side)."""
    from ..aws import S3StateObjects, S3StateStore, open_clients
    from ..config import Config
    from ..deadline import Deadline
    from ..layout import single_key
    from ..stages.commit import open_unit, write_state
    from ..stages.context import RunContext
    from ..stages.decide import Tally
    from ..stages.plan import Job
    from ..stages.shards import Shards
    from ..state import FileEntry, StateChanges
    from ..summary import RunStats

    layout, bucket = spec["layout"], spec["bucket"]
    config = Config(
        source_bucket=bucket,
        state_bucket=bucket,
        prefix=PREFIX,
        state_key=STATE_KEY,
        state_layout=layout,
        endpoint_url=spec["endpoint"],
        state_max_bytes=int(spec.get("max_bytes", 1 << 30)),
        prune_missing=False,
        **spec.get("tuning", {}),
    )
    key = spec["changed_key"]
    folder_of_change = key[len(PREFIX) :].split("/")[0]
    calls: Counter[str] = Counter()
    read = {"bytes": 0}

    def on_get(parsed: dict[str, Any], **_: Any) -> None:
        if "ETag" in parsed:
            read["bytes"] += int(parsed.get("ContentLength", 0))

    async with open_clients(config, calls) as clients:
        clients.s3.meta.events.register("after-call.s3.GetObject", on_get)
        stats = RunStats()
        ctx = RunContext(config, stats, Tally(stats), Deadline(), lambda: datetime.now(UTC))
        entry = FileEntry(CHANGED_ETAG, len(BODY_V1) + 1, folder_of_change, "2026-11-28T00:00:00Z")
        baseline = peak_rss_kib()
        cpu0, t0 = time.process_time(), time.perf_counter()
        if layout == "single":
            store = S3StateStore(clients.s3, bucket, single_key(STATE_KEY), config.state_max_bytes)
            unit = await open_unit(ctx, store)
            unit.upserts[key] = entry
            changes = StateChanges(prefix=PREFIX, source_bucket=bucket, upserts=unit.upserts)
            await write_state(ctx, unit, changes)
            del unit, changes
        else:
            shards = Shards(ctx, S3StateObjects(clients.s3, bucket, config.state_max_bytes))
            todo = iter(spec["folders"])

            async def lister() -> None:
                for folder in todo:  # shared iterator: each folder taken once
                    unit = await shards.open(Job(folder))
                    if folder == folder_of_change:
                        unit.upserts[key] = entry
                    del unit
                    await shards.commit(folder, complete=False)

            async with anyio.create_task_group() as tg:
                for _ in range(config.list_concurrency):
                    tg.start_soon(lister)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if ctx.fatal is not None:
        raise SystemExit(f"state work failed: {ctx.fatal}")
    return {
        "layout": layout,
        "wall_s": wall,
        "cpu_s": cpu,
        "bytes_read": read["bytes"],
        "objects_read": stats.state_objects_read,
        "objects_written": stats.state_objects_written,
        "api_calls": dict(sorted(calls.items())),
        "setup_rss_kb": baseline,
        "list_concurrency": config.list_concurrency,
    }


# -- parent side ------------------------------------------------------------------------


def _sizes(s3: Any, bucket: str) -> dict[str, tuple[str, int]]:
    """Key -> (ETag, size) of every state object in ``bucket``."""
    out: dict[str, tuple[str, int]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="state/"):
        for item in page.get("Contents", ()):
            out[item["Key"]] = (item["ETag"], item["Size"])
    return out


def run_state_cost(
    bench: Bench, *, files: int, folders: int, reps: int, listed: int | None = None
) -> dict[str, Any]:
    """Seed the synthetic state in both layouts (a bucket each) and measure each layout
    ``reps`` times, re-seeding before every run so each starts from the same state.

    ``listed``: how many folders the run lists (default all), the changed one first: a
    ``folders`` run reads only their shards (a fan-out child given a few folders, or a
    run resuming a cursor); a ``single`` run reads the whole object whatever it lists.
    """
    from .seed import state_objects

    key = changed_key(files, folders)
    listed = folders if listed is None else max(1, min(listed, folders))
    out: dict[str, Any] = {
        "files": files,
        "folder_count": folders,
        "listed_folders": listed,
        "changed_key": key,
    }
    for layout in LAYOUTS:
        bucket = bench.new_bucket()
        bench.s3.create_bucket(Bucket=bucket)
        bench.say(f"state cost: encoding {files} entries ({layout})")
        objects = state_objects(bucket, synthetic_entries(files, folders), layout)
        names = _listed(files, folders, key, listed)
        runs: list[dict[str, Any]] = []
        for rep in range(reps):
            bench.say(f"state cost: {layout}, putting {len(objects)} object(s)")
            bench.put_state_objects(bucket, objects)
            before = _sizes(bench.s3, bucket)
            bench.say(f"state cost: {layout}, rep {rep + 1}/{reps}")
            run = bench.measure_child(
                {
                    "kind": "state_cost",
                    "layout": layout,
                    "endpoint": bench.servers.direct,
                    "bucket": bucket,
                    "changed_key": key,
                    "folders": names,
                    "tuning": bench.tuning_for_state(),
                }
            )
            after = _sizes(bench.s3, bucket)
            run["bytes_written"] = sum(
                size for k, (etag, size) in after.items() if before.get(k, ("", 0))[0] != etag
            )
            run["state_bytes_total"] = sum(size for _, size in before.values())
            run["state_objects_total"] = len(before)
            runs.append(run)
        del objects
        bench.put_state_objects(bucket, None)  # moto holds the state in memory: free it
        out[layout] = _aggregate(runs)
    single, shard = out["single"], out["folders"]
    out["ratio"] = {
        "cpu": shard["cpu_s"] / single["cpu_s"] if single["cpu_s"] else 0.0,
        "bytes_written": shard["bytes_written"] / single["bytes_written"]
        if single["bytes_written"]
        else 0.0,
        "bytes_read": shard["bytes_read"] / single["bytes_read"] if single["bytes_read"] else 0.0,
        "peak_rss_over_setup": shard["rss_over_setup_mb"] / single["rss_over_setup_mb"]
        if single["rss_over_setup_mb"]
        else 0.0,
    }
    return out


def _listed(files: int, folders: int, key: str, listed: int) -> list[str]:
    """The folders the measured run lists: the changed one, then the next ones in order."""
    per = -(-files // folders)
    names = sorted({f"f{i // per:03d}" for i in range(0, files, per)})
    first = names.index(key[len(PREFIX) :].split("/")[0])
    return (names[first:] + names[:first])[:listed]


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(name: str) -> float:
        return float(statistics.median(r[name] for r in runs))

    last = runs[-1]
    return {
        "reps": len(runs),
        "wall_s": med("wall_s"),
        "cpu_s": med("cpu_s"),
        "cpu_s_all": [r["cpu_s"] for r in runs],
        "bytes_read": last["bytes_read"],
        "bytes_written": last["bytes_written"],
        "objects_read": last["objects_read"],
        "objects_written": last["objects_written"],
        "api_calls": last["api_calls"],
        "state_bytes_total": last["state_bytes_total"],
        "state_objects_total": last["state_objects_total"],
        "peak_rss_mb": med("peak_rss_kb") / 1024,
        "setup_rss_mb": med("setup_rss_kb") / 1024,
        "rss_over_setup_mb": (med("peak_rss_kb") - med("setup_rss_kb")) / 1024,
        "list_concurrency": last["list_concurrency"],
    }
