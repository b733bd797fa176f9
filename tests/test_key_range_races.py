"""Key ranges under overlapping runs, against moto: a split, or a range removed, while
another run writes the same folder. Each race is made deterministic by running the other
run whole at a chosen write of this one (moto's conditional writes are then atomic
enough: nothing else writes at the same moment). No run's entries are lost, no range is
left that the index does not name, and the next run sends nothing."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel

from async_discovery.aws import S3Lister, S3StateObjects, S3StateStore, SqsSender, open_clients
from async_discovery.config import Config
from async_discovery.errors import StorageError
from async_discovery.layout import range_key, ranges_prefix, shard_key
from async_discovery.pipeline import Scanner
from async_discovery.ports import ObjectHead, StateSink
from async_discovery.summary import RunStats, build_summary

from .helpers import MotoEnv, scan

SP = "state/processed_files/"
P = "incoming/"

Hook = Callable[[str], Awaitable[None]]


class HookedStore:
    """A real S3 state store that awaits ``hook(key)`` before each write."""

    def __init__(self, inner: S3StateStore, hook: Hook) -> None:
        self.inner, self.hook = inner, hook

    @property
    def name(self) -> str:
        return self.inner.name

    async def load(self) -> tuple[bytes | None, str | None]:
        return await self.inner.load()

    async def load_into(self, sink: StateSink) -> tuple[bool, str | None]:
        return await self.inner.load_into(sink)

    async def load_head(self, size: int) -> ObjectHead | None:
        return await self.inner.load_head(size)

    async def save(
        self, body: bytes, *, if_match: str | None, metadata: Mapping[str, str] | None = None
    ) -> str:
        await self.hook(self.inner.key)
        return await self.inner.save(body, if_match=if_match, metadata=metadata)

    async def save_stream(
        self, body: io.RawIOBase, *, if_match: str | None, metadata: Mapping[str, str] | None = None
    ) -> str:
        await self.hook(self.inner.key)
        return await self.inner.save_stream(body, if_match=if_match, metadata=metadata)


class HookedObjects(S3StateObjects):
    """The state objects with every store hooked."""

    def __init__(self, inner: S3StateObjects, hook: Hook) -> None:
        super().__init__(inner.client, inner.bucket, inner.max_bytes)
        self.hook = hook

    def store(self, key: str) -> HookedStore:  # type: ignore[override]
        return HookedStore(super().store(key), self.hook)


async def run_hooked(cfg: Config, hook: Hook) -> dict[str, Any]:
    """One run whose state writes each await ``hook(key)`` first."""
    stats = RunStats()
    async with open_clients(cfg, stats.api_calls) as clients:
        objects = HookedObjects(
            S3StateObjects(clients.s3, cfg.state_bucket, cfg.state_max_bytes), hook
        )
        assert cfg.queue_url is not None
        scanner = Scanner(
            cfg,
            S3Lister(clients.s3, cfg.source_bucket),
            S3StateStore(clients.s3, cfg.state_bucket, cfg.state_key, cfg.state_max_bytes),
            SqsSender(clients.sqs, cfg.queue_url),
            objects=objects,
            stats=stats,
        )
        error = await scanner.run()
    return build_summary(stats, 0.0, error=error)


def recorded(env: MotoEnv, bucket: str, folder: str) -> set[str]:
    """Every key the folder's state records (its shard, or each range of its index); the
    range objects under its ranges prefix are exactly those its index names."""
    doc = env.state(bucket, shard_key(SP, P, folder))
    assert doc is not None
    if doc["version"] == 2:
        return set(doc["files"])
    named = {range_key(SP, P, folder, r["shard"]) for r in doc["ranges"] if r["shard"]}
    listed = env.s3.list_objects_v2(Bucket=bucket, Prefix=ranges_prefix(SP, P, folder))
    assert {o["Key"] for o in listed.get("Contents", [])} == named
    keys: set[str] = set()
    for key in named:
        body = env.state(bucket, key)
        assert body is not None and "moved_to" not in body
        keys |= set(body["files"])
    return keys


def once(action: Callable[[], Awaitable[None]], when: Callable[[str], bool]) -> Hook:
    """A hook that runs ``action`` before the first write whose key ``when`` accepts."""
    done = False

    async def hook(key: str) -> None:
        nonlocal done
        if not done and when(key):
            done = True
            await action()

    return hook


async def test_two_runs_splitting_one_folder_keep_every_entry(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """Both runs grow the folder's one shard past the bound; the other run's split lands
    first; this run's index write then fails, its new ranges are deleted, and its
    entries go into the other run's ranges."""
    keys = [f"{P}f/{i}.csv" for i in range(3)]
    env.put_many(bucket, keys)
    cfg = env.config(bucket, queue_url, state_layout="folders", shard_max_files=4)
    await scan(cfg)
    more = [f"{P}f/{i}.csv" for i in range(3, 9)]
    env.put_many(bucket, more)
    other: dict[str, Any] = {}

    async def other_run() -> None:
        other.update(await scan(cfg))

    index_key = shard_key(SP, P, "f")
    summary = await run_hooked(cfg, once(other_run, lambda key: key == index_key))
    assert summary["statusCode"] == 200, summary
    assert other["statusCode"] == 200 and other["state_objects_written"] >= 3
    assert recorded(env, bucket, "f") == set(keys + more)
    assert (await scan(cfg))["queued"] == 0


async def test_a_range_written_while_another_run_splits_it_keeps_its_entries(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    keys = [f"{P}f/{i}.csv" for i in range(6)]  # ranges of 2: ..1, 2..3, 4..
    env.put_many(bucket, keys)
    cfg = env.config(bucket, queue_url, state_layout="folders", shard_max_files=4)
    await scan(cfg)
    env.put(bucket, f"{P}f/0x.csv")  # this run's new file, in the first range
    first_range = (env.state(bucket, shard_key(SP, P, "f")) or {})["ranges"][0]["shard"]
    other: dict[str, Any] = {}

    async def other_run() -> None:
        # Three more files in the first range: the other run splits it (0x, 0y, 0z, 0, 1).
        env.put_many(bucket, [f"{P}f/0y.csv", f"{P}f/0z.csv"])
        other.update(await scan(cfg))

    target = range_key(SP, P, "f", first_range)
    summary = await run_hooked(cfg, once(other_run, lambda key: key == target))
    assert summary["statusCode"] == 200, summary
    assert other["statusCode"] == 200
    everything = {*keys, f"{P}f/0x.csv", f"{P}f/0y.csv", f"{P}f/0z.csv"}
    assert recorded(env, bucket, "f") == everything
    again = await scan(cfg)
    assert (again["queued"], again["skipped"]) == (0, len(everything))


async def test_a_split_that_stopped_half_way_is_repaired_by_the_next_run(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """The range was forwarded to its new ranges, but the index write failed: the next
    run finds the forwarding body, repairs the index, and loses nothing."""
    keys = [f"{P}f/{i}.csv" for i in range(6)]
    env.put_many(bucket, keys)
    cfg = env.config(bucket, queue_url, state_layout="folders", shard_max_files=4)
    await scan(cfg)
    env.put_many(bucket, [f"{P}f/0a.csv", f"{P}f/0b.csv", f"{P}f/0c.csv"])  # first range: 5
    index_key = shard_key(SP, P, "f")

    async def fail(key: str) -> None:
        if key == index_key:
            raise StorageError("injected: the index write failed")

    broken = await run_hooked(cfg, fail)
    assert broken["statusCode"] == 500, broken
    env.bodies(queue_url)
    repaired = await scan(cfg)
    assert repaired["statusCode"] == 200, repaired
    assert Counter(b["key"] for b in env.bodies(queue_url)) == Counter()
    assert recorded(env, bucket, "f") == {*keys, f"{P}f/0a.csv", f"{P}f/0b.csv", f"{P}f/0c.csv"}


async def test_a_run_writing_a_range_another_run_has_just_forwarded_follows_it(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """Run B loaded range R; run A splits R: writes the new ranges, forwards R to them,
    and before A rewrites the index, B writes R. B's conditional write fails on the
    forwarding body; B takes its entries to the new ranges (repairing the index A has
    not written yet); A's index write then meets B's and A follows too."""
    keys = [f"{P}f/{i}.csv" for i in range(6)]
    env.put_many(bucket, keys)
    cfg = env.config(bucket, queue_url, state_layout="folders", shard_max_files=4)
    await scan(cfg)
    index_key = shard_key(SP, P, "f")
    first_range = (env.state(bucket, index_key) or {})["ranges"][0]["shard"]
    target = range_key(SP, P, "f", first_range)
    env.put(bucket, f"{P}f/0x.csv")  # B's (and A's) new file in R
    forwarded, b_wrote = anyio.Event(), anyio.Event()
    results: dict[str, dict[str, Any]] = {}

    async def b_hook(key: str) -> None:
        if key == target and not forwarded.is_set():
            await forwarded.wait()  # B writes R only once A has forwarded it

    async def a_hook(key: str) -> None:
        if key == index_key and not forwarded.is_set():
            forwarded.set()  # A has written the new ranges and forwarded R
            with anyio.fail_after(30):
                await b_wrote.wait()

    async def run_b() -> None:
        results["b"] = await run_hooked(cfg, b_hook)
        b_wrote.set()

    async def run_a() -> None:
        await anyio.lowlevel.checkpoint()  # B first: it loads R before A changes anything
        # A also sees two more files in R: 0, 0x, 0y, 0z, 1 is past the bound of 4.
        env.put_many(bucket, [f"{P}f/0y.csv", f"{P}f/0z.csv"])
        results["a"] = await run_hooked(cfg, a_hook)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_b)
        tg.start_soon(run_a)
    assert results["a"]["statusCode"] == 200, results["a"]
    assert results["b"]["statusCode"] == 200, results["b"]
    everything = {*keys, f"{P}f/0x.csv", f"{P}f/0y.csv", f"{P}f/0z.csv"}
    assert recorded(env, bucket, "f") == everything
    assert (await scan(cfg))["queued"] == 0
