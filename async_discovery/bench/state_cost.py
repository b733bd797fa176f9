"""The state-cost scenario: the state work of one run that changes one file, per layout.

No listing: the bucket holds only synthetic state (``files`` entries over ``folders``
folders, built with :func:`~.seed.state_objects` and put directly on moto), so a million
tracked files cost no million ``PutObject`` calls; the listing the run would get is
built in memory (pages of 1,000 candidates) before the clock starts. Each layout is
measured in a child process of its own (:mod:`.child`, kind ``state_cost``), through
the scanner's own code paths against moto over HTTP (no latency proxy):

- ``single``: :func:`~async_discovery.stages.commit.open_unit` of the state object
  (``GetObject``, streamed into the decoder), one entry upserted,
  :func:`~async_discovery.stages.commit.write_state` (encode, conditional ``PutObject``).
- ``folders``: each listed folder's pages through a
  :class:`~async_discovery.stages.gate.FolderGate` over
  :class:`~async_discovery.stages.shards.Shards`, ``LIST_CONCURRENCY`` folders at a time
  as the scanner's listers take them: the shard's head read, the fingerprint of the
  folder's candidates computed and compared (an unchanged folder's files are never
  read; the changed folder's shard is read whole), the one changed entry upserted,
  ``commit`` of each folder (only the changed shard is written). The figure includes
  the fingerprint of every listed candidate; the per-candidate comparison that both
  layouts do in the decider is not in either figure.

Measured per run: wall and CPU seconds of the state work (clients opened before the
clock starts), ``GetObject``/``PutObject`` calls, bytes read (``ContentLength`` of each
``GetObject`` answered), bytes written (the sizes of the objects whose ETag changed, read
from moto after the run), peak RSS (``VmHWM``) and the RSS after imports and setup.
"""

from __future__ import annotations

import bisect
import gc
import math
import statistics
import time
from collections import Counter
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import anyio

from ..settings import DEFAULTS
from .seed import BODY_V1, PREFIX, STATE_KEY

if TYPE_CHECKING:
    from .scenarios import Bench

# Measured side by side: the single object; one shard per folder (SHARD_MAX_FILES set
# out of reach: how a folder was kept before key ranges); the folders layout as it is,
# a folder of more than SHARD_MAX_FILES files kept as range shards.
VARIANTS: dict[str, tuple[Literal["single", "folders"], int | None]] = {
    "single": ("single", None),
    "folders": ("folders", 1 << 40),
    "ranges": ("folders", None),
}
LAYOUTS = tuple(VARIANTS)
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
    from ..stages.commit import open_unit, unit_of, write_state
    from ..stages.context import RunContext
    from ..stages.decide import Tally
    from ..stages.shards import Shards
    from ..state import FileEntry, StateChanges
    from ..summary import RunStats

    variant, bucket = spec["layout"], spec["bucket"]
    layout, shard_max_files = VARIANTS[variant]
    tuning = dict(spec.get("tuning", {}))
    if shard_max_files is not None:
        tuning["shard_max_files"] = shard_max_files
    config = Config(
        source_bucket=bucket,
        state_bucket=bucket,
        prefix=PREFIX,
        state_key=STATE_KEY,
        state_layout=layout,
        endpoint_url=spec["endpoint"],
        state_max_bytes=int(spec.get("max_bytes", 1 << 30)),
        prune_missing=False,
        **tuning,
    )
    key = spec["changed_key"]
    folder_of_change = key[len(PREFIX) :].split("/")[0]
    calls: Counter[str] = Counter()
    read = {"bytes": 0}

    def on_get(parsed: dict[str, Any], **_: Any) -> None:
        if "ETag" in parsed:
            read["bytes"] += int(parsed.get("ContentLength", 0))

    listing = _Listing(_listing(spec) if layout == "folders" else {})
    # A million listed objects built up front are the bench's, not the run's (a run holds
    # a few pages): kept out of the collector's generations so its passes over them
    # are not charged to the state work.
    gc.freeze()

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
            await _list_and_decide(ctx, listing, spec["folders"], shards, key, entry)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        listing_cpu = 0.0
        if layout == "folders":
            # The same listing through the same stages with no state at all (one listing
            # per folder, every page taken as unchanged): not state work, subtracted.
            bare = RunContext(config, RunStats(), Tally(RunStats()), Deadline(), ctx.clock)
            bare.single = unit_of(
                bare, S3StateStore(clients.s3, bucket, "-", 1), None, None, 0, None
            )
            bare.single.verified = True
            cpu1 = time.process_time()
            await _list_and_decide(bare, listing, spec["folders"], None, key, entry)
            listing_cpu = time.process_time() - cpu1
    if ctx.fatal is not None:
        raise SystemExit(f"state work failed: {ctx.fatal}")
    return {
        "layout": variant,
        "wall_s": wall,
        "cpu_s": cpu - listing_cpu,
        "cpu_total_s": cpu,
        "listing_cpu_s": listing_cpu,
        "bytes_read": read["bytes"],
        "objects_read": stats.state_objects_read,
        "objects_written": stats.state_objects_written,
        "objects_verified": stats.state_objects_verified,
        "api_calls": dict(sorted(calls.items())),
        "setup_rss_kb": baseline,
        "list_concurrency": config.list_concurrency,
    }


async def _list_and_decide(
    ctx: Any, listing: _Listing, folders: list[str], shards: Any, key: str, entry: Any
) -> None:
    """The listed folders' pages through the scanner's list stage (jobs cut at range
    bounds, units opened, fingerprints checked, settled units written) and a decider
    that only upserts the one changed file (deciding is not state work)."""
    from ..stages.listing import Listers
    from ..stages.plan import Job, Plan
    from ..stages.units import Page, Unit

    plan = Plan("folders", [Job(folder) for folder in folders])
    plan.untaken = dict.fromkeys(plan.jobs)
    # Settled units to write: at most one per range listed (bench code: the scanner's
    # own stream is bounded, its committers always keep up here).
    settled_in, settled_out = anyio.create_memory_object_stream[Unit](math.inf)
    pages_in, pages_out = anyio.create_memory_object_stream[Page](ctx.config.queue_size)
    listers = Listers(ctx, listing, plan, shards, settled_in.send_nowait)

    async def decide(pages: Any) -> None:
        async with pages:
            async for page in pages:
                unit = page.listing.unit
                if not unit.verified:
                    for _, obj in page.candidates:
                        if obj.key == key:
                            unit.upserts[key] = entry
                page.listing.progress.handled(page.seq)

    async def commit(units: Any) -> None:
        async with units:
            async for unit in units:
                await shards.commit(unit)

    async with anyio.create_task_group() as outer:
        outer.start_soon(commit, settled_out)
        async with settled_in, anyio.create_task_group() as tg:
            tg.start_soon(listers.run, pages_in)
            tg.start_soon(decide, pages_out)
    if shards is not None:
        await shards.commit_rest()


def _listing(spec: dict[str, Any]) -> dict[str, list[Any]]:
    """What a listing of each listed folder gives: its objects in key order (as S3
    lists), the changed file with its new ETag; served 1,000 a page by :class:`_Listing`."""
    from ..models import ListedObject

    listed, changed = set(spec["folders"]), spec["changed_key"]
    when = datetime(2026, 11, 1, tzinfo=UTC)
    objects: dict[str, list[ListedObject]] = {folder: [] for folder in listed}
    for key, etag in synthetic_entries(spec["files"], spec["folder_count"]):
        folder = key[len(PREFIX) :].split("/")[0]
        if folder in listed:
            etag = CHANGED_ETAG if key == changed else etag
            objects[folder].append(ListedObject(key, etag, len(BODY_V1), when))
    for found in objects.values():
        found.sort(key=lambda obj: obj.key)
    return dict(objects)


class _Listing:
    """The listing port over the objects built before the clock: a folder's objects
    after ``start_after``, 1,000 a page (no top-level objects, no deeper levels)."""

    def __init__(self, objects: dict[str, list[Any]]) -> None:
        self.objects = objects
        self.keys = {folder: [o.key for o in found] for folder, found in objects.items()}

    async def pages(
        self, prefix: str, *, delimiter: bool, start_after: str | None = None
    ) -> AsyncGenerator[Any, None]:
        from ..ports import RawPage

        folder = prefix[len(PREFIX) :].rstrip("/")
        found, keys = self.objects.get(folder, []), self.keys.get(folder, [])
        start = bisect.bisect_right(keys, start_after) if start_after else 0
        for i in range(start, len(found), 1000):
            yield RawPage(found[i : i + 1000], [])


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
        split = DEFAULTS["shard_max_files"] if layout == "ranges" else None
        objects = state_objects(
            bucket, synthetic_entries(files, folders), VARIANTS[layout][0], shard_max_files=split
        )
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
                    "files": files,
                    "folder_count": folders,
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
    out["ratio"] = _ratios(out["folders"], out["single"])
    out["ratio_ranges"] = _ratios(out["ranges"], out["folders"])
    return out


def _ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """``a``'s figures over ``b``'s."""

    def over(name: str) -> float:
        return float(a[name]) / float(b[name]) if b[name] else 0.0

    return {
        "cpu": over("cpu_s"),
        "bytes_written": over("bytes_written"),
        "bytes_read": over("bytes_read"),
        "peak_rss_over_setup": over("rss_over_setup_mb"),
    }


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
        "listing_cpu_s": med("listing_cpu_s") if "listing_cpu_s" in last else 0.0,
        "bytes_read": last["bytes_read"],
        "bytes_written": last["bytes_written"],
        "objects_read": last["objects_read"],
        "objects_written": last["objects_written"],
        "objects_verified": last["objects_verified"],
        "api_calls": last["api_calls"],
        "state_bytes_total": last["state_bytes_total"],
        "state_objects_total": last["state_objects_total"],
        "peak_rss_mb": med("peak_rss_kb") / 1024,
        "setup_rss_mb": med("setup_rss_kb") / 1024,
        "rss_over_setup_mb": (med("peak_rss_kb") - med("setup_rss_kb")) / 1024,
        "list_concurrency": last["list_concurrency"],
    }
