"""Unchanged folders under ``STATE_LAYOUT=folders``: a shard carries the fingerprint of
its files (``files-digest`` metadata); a folder listed from its start whose candidates
give the same fingerprint is unchanged, and only its shard's head is read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from async_discovery.config import Config
from async_discovery.deadline import Deadline
from async_discovery.fingerprint import META_KEY, Fingerprint, of_files
from async_discovery.layout import shard_key
from async_discovery.stages import gate
from async_discovery.state import FileEntry
from async_discovery.summary import RunStats
from async_discovery.testing.fault_proxy import FaultProxy

from .helpers import MotoEnv, RequestClock, scan

SP = "state/processed_files/"
P = "incoming/"
HEAD = 512  # bytes: a shard of a few entries is read by its head


@pytest.fixture(autouse=True)
def small_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards of more than a few entries are opened by their head (16 KiB in a run)."""
    monkeypatch.setattr("async_discovery.stages.folders.HEAD_BYTES", HEAD)


def entry(etag: str) -> FileEntry:
    return FileEntry(etag, 1, "a", "2026-11-28T00:00:00Z")


# -- the fingerprint ---------------------------------------------------------------------


def listing_value(pairs: list[tuple[str, str]], cuts: list[int]) -> str | None:
    """The fingerprint of ``pairs`` fed as pages cut at ``cuts``."""
    fp, start = Fingerprint(), 0
    for end in [*cuts, len(pairs)]:
        page = pairs[start:end]
        fp.add([k for k, _ in page], [e for _, e in page])
        start = end
    return fp.value()


def test_a_listing_of_exactly_the_shards_files_has_its_fingerprint() -> None:
    keys = [f"{P}a/{n}.csv" for n in ("b", "é", "a", "z", "a b", "+%")]
    files = {k: entry(f'"{i:032x}"') for i, k in enumerate(keys)}  # quoted, unsorted
    listed = sorted((k, f"{i:032x}") for i, k in enumerate(keys))
    value = of_files(files)
    assert value is not None and value.startswith(f"1 {len(keys)} ")
    for cuts in ([], [1], [3, 3], [0, 2, 5]):
        assert listing_value(listed, cuts) == value


def test_any_difference_gives_another_fingerprint() -> None:
    listed = [(f"{P}a/{i}.csv", f"{i:032x}") for i in range(5)]
    value = listing_value(listed, [2])
    changed = [listed[0], (listed[1][0], "f" * 32), *listed[2:]]
    variants = [
        changed,
        listed[:-1],  # a file gone
        [*listed, (f"{P}a/9.csv", "0" * 32)],  # a file new
        [listed[1], listed[0], *listed[2:]],  # listed in another order
        [(f"{P}a/0.csv\n{P}a/1.csv", listed[0][1]), *listed[2:]],  # keys joined
    ]
    assert len({value, *(listing_value(v, [1]) for v in variants)}) == len(variants) + 1


def test_a_key_holding_the_separator_gives_no_fingerprint() -> None:
    odd = f"{P}a/x\x00y.csv"
    assert listing_value([(odd, "0" * 32)], []) is None
    assert of_files({odd: entry("0" * 32)}) is None


# -- runs against moto -----------------------------------------------------------------


def seed(env: MotoEnv, bucket: str, folders: dict[str, int]) -> list[str]:
    keys = [f"{P}{f}/{i:02d}-some-longer-name.csv" for f, n in folders.items() for i in range(n)]
    env.put_many(bucket, keys)
    return keys


def config_of(env: MotoEnv, bucket: str, queue_url: str | None, **kw: Any) -> Config:
    return env.config(bucket, queue_url, state_layout="folders", **kw)


def shard_gets(proxy: FaultProxy, bucket: str) -> list[tuple[str, str | None]]:
    """(folder, Range header) of each shard ``GetObject`` the proxy saw."""
    head = f"{SP}folders/{P}"
    gets = [
        ((r.key or "")[len(head) : -len(".json")], r.headers.get("Range"))
        for r in proxy.requests
        if r.operation == "GetObject" and r.bucket == bucket and (r.key or "").startswith(head)
    ]
    return sorted(gets, key=lambda get: (get[0], get[1] or ""))


def recorded_fingerprint(env: MotoEnv, bucket: str, folder: str) -> tuple[str, str | None]:
    """The shard's ``files-digest`` metadata, and the fingerprint of its files."""
    key = shard_key(SP, P, folder)
    meta = env.s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    doc = json.loads(env.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    files = {k: entry(v["etag"]) for k, v in doc["files"].items()}
    return meta.get(META_KEY, ""), of_files(files)


async def test_a_warm_run_reads_only_the_heads_of_unchanged_shards(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    seed(env, bucket, {"a": 20, "b": 20, "c": 20})
    config = config_of(env, bucket, queue_url, endpoint_url=proxy.url)
    cold = await scan(config)
    assert (cold["queued"], cold["state_objects_written"]) == (60, 3)
    for folder in "abc":
        stored, computed = recorded_fingerprint(env, bucket, folder)
        assert stored == computed and stored.startswith("1 20 ")
        assert len(env.state_bytes(bucket, shard_key(SP, P, folder)) or b"") > HEAD

    proxy.reset_counts()
    warm = await scan(config)
    assert (warm["statusCode"], warm["queued"], warm["skipped"]) == (200, 0, 60)
    assert warm["state_objects_read"] == 3
    assert (warm["state_objects_verified"], warm["state_objects_written"]) == (3, 0)
    assert shard_gets(proxy, bucket) == [(f, f"bytes=0-{HEAD - 1}") for f in "abc"]


@pytest.mark.parametrize("change", ["new", "updated", "deleted"])
async def test_a_changed_folder_has_its_shard_read_whole_and_written(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy, change: str
) -> None:
    keys = seed(env, bucket, {"a": 12, "b": 12, "c": 12})
    config = config_of(env, bucket, queue_url, endpoint_url=proxy.url, prune_missing=True)
    await scan(config)
    env.bodies(queue_url)
    target = f"{P}b/05-some-longer-name.csv"
    if change == "new":
        target = f"{P}b/99-new.csv"
        env.put(bucket, target)
    elif change == "updated":
        env.put(bucket, target, b"changed\n")
    else:
        env.s3.delete_object(Bucket=bucket, Key=target)

    proxy.reset_counts()
    run = await scan(config)
    sent = [b["key"] for b in env.bodies(queue_url)]
    assert sent == ([] if change == "deleted" else [target])
    assert (run["pruned"], run["skipped"]) == (
        (1, 35) if change == "deleted" else (0, 36 if change == "new" else 35)
    )
    assert (run["state_objects_verified"], run["state_objects_written"]) == (2, 1)
    whole_b = [g for g in shard_gets(proxy, bucket) if g == ("b", None)]
    assert len(whole_b) == 1  # b: its head, then the whole shard; a and c: heads only
    assert len(shard_gets(proxy, bucket)) == 4

    doc = env.state(bucket, shard_key(SP, P, "b"))
    assert doc is not None and (target in doc["files"]) == (change != "deleted")
    stored, computed = recorded_fingerprint(env, bucket, "b")
    assert stored == computed
    again = await scan(config)
    assert (again["queued"], again["state_objects_verified"]) == (0, 3)
    assert sorted(keys) != []


async def test_a_shard_rewritten_without_a_fingerprint_is_read_whole(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """A shard written by an older writer or by hand carries no fingerprint (a PUT
    drops the metadata): it is read whole, and an entry it lost is sent again."""
    seed(env, bucket, {"a": 12, "b": 12})
    config = config_of(env, bucket, queue_url)
    await scan(config)
    env.bodies(queue_url)
    key = shard_key(SP, P, "a")
    doc = env.state(bucket, key)
    assert doc is not None
    lost = f"{P}a/03-some-longer-name.csv"
    del doc["files"][lost]
    env.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())

    run = await scan(config)
    assert [b["key"] for b in env.bodies(queue_url)] == [lost]
    assert (run["state_objects_verified"], run["state_objects_written"]) == (1, 1)
    stored, computed = recorded_fingerprint(env, bucket, "a")
    assert stored == computed and stored.startswith("1 12 ")


async def test_a_folder_longer_than_the_hold_bound_is_read_whole(
    env: MotoEnv, bucket: str, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gate, "HOLD_CANDIDATES", 5)
    seed(env, bucket, {"a": 12, "b": 4})
    config = config_of(env, bucket, queue_url, list_page_size=3)
    await scan(config)
    env.bodies(queue_url)
    warm = await scan(config)
    assert (warm["skipped"], warm["state_objects_verified"]) == (16, 1)  # b only
    env.put(bucket, f"{P}a/11-some-longer-name.csv", b"changed\n")
    env.put(bucket, f"{P}a/50-new.csv")
    run = await scan(config)
    assert sorted(b["key"] for b in env.bodies(queue_url)) == [
        f"{P}a/11-some-longer-name.csv",
        f"{P}a/50-new.csv",
    ]
    assert (run["new"], run["updated"], run["state_objects_written"]) == (1, 1, 1)


async def test_explain_and_dry_run_over_a_verified_folder(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    keys = seed(env, bucket, {"a": 10})
    await scan(config_of(env, bucket, queue_url))
    before = env.state_bytes(bucket, shard_key(SP, P, "a"))
    lines: list[dict[str, Any]] = []
    dry = await scan(config_of(env, bucket, None, dry_run=True), explain=lines.append)
    assert (dry["skipped"], dry["state_objects_verified"]) == (10, 1)
    skips = [(d["key"], d["action"], d["reason"]) for d in lines if "action" in d]
    assert skips == [(k, "skip", "unchanged") for k in keys]
    assert all(d["etag"] for d in lines if "action" in d)
    assert env.state_bytes(bucket, shard_key(SP, P, "a")) == before


async def test_a_run_stopped_while_pages_are_held_sends_nothing_twice(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """The deadline passes while a changed folder's pages wait for the end of its
    listing: they are dropped unhandled, the folder stays pending in the cursor, and
    the next run sends the change once."""
    seed(env, bucket, {"a": 12, "b": 3})
    config = config_of(env, bucket, queue_url, list_page_size=3, list_concurrency=1)
    await scan(config)
    env.bodies(queue_url)
    changed = f"{P}a/10-some-longer-name.csv"
    env.put(bucket, changed, b"changed\n")

    stats = RunStats()

    def remaining() -> float:  # expires once two pages of folder a were listed
        return 0.0 if stats.api_calls["ListObjectsV2"] >= 3 else 3600.0

    cut = await scan(config, stats=stats, deadline=Deadline(remaining, margin=1.0))
    assert (cut["truncated"], cut["queued"], cut["state_objects_written"]) == (True, 0, 0)
    rest = await scan(config)
    assert (rest["truncated"], rest["queued"]) == (False, 1)
    assert [b["key"] for b in env.bodies(queue_url)] == [changed]


async def test_an_empty_shard_fails_its_folder_only(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """No range fits an empty object (``InvalidRange``): it is read whole, and, not
    being JSON, fails its folder only."""
    seed(env, bucket, {"a": 4, "b": 4})
    config = config_of(env, bucket, queue_url)
    await scan(config)
    env.bodies(queue_url)
    env.s3.put_object(Bucket=bucket, Key=shard_key(SP, P, "a"), Body=b"")
    env.put(bucket, f"{P}b/new.csv")
    run = await scan(config)
    assert (run["statusCode"], run["folder_errors"], run["queued"]) == (207, 1, 1)
    assert shard_key(SP, P, "a") in run["error"] and "not valid JSON" in run["error"], run["error"]
    assert env.state_bytes(bucket, shard_key(SP, P, "a")) == b""
    assert [b["key"] for b in env.bodies(queue_url)] == [f"{P}b/new.csv"]


@pytest.mark.slow
def test_a_changed_folder_longer_than_an_invocation_is_covered_under_its_fingerprint(
    threaded_proxy: FaultProxy,
    env: MotoEnv,
    bucket: str,
    queue_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One folder of 300 files, every one changed since its shard (with a fingerprint)
    was written; pages of 3 keys, 100 ms a request, 4 s per invocation with the default
    2 s margin. Each invocation lists about twenty pages: the first holds them for the
    fingerprint when the deadline comes, the next ones read the shard whole and stream,
    so repeated invocations send every file, each once."""
    from async_discovery.handler import lambda_handler

    keys = [f"{P}big/{i:03d}.csv" for i in range(300)]
    env.put_many(bucket, keys)
    for name, value in {
        "S3_SOURCE_BUCKET": bucket,
        "S3_PREFIX": P,
        "SQS_QUEUE_URL": queue_url,
        "STATE_LAYOUT": "folders",
        "AWS_ENDPOINT_URL": threaded_proxy.url,
    }.items():
        monkeypatch.setenv(name, value)
    assert lambda_handler({}, RequestClock(600, threaded_proxy, 0.0))["queued"] == 300
    env.bodies(queue_url)
    assert env.state(bucket, shard_key(SP, P, "big")) is not None
    env.put_many(bucket, keys, body=b"changed\n")
    monkeypatch.setenv("LIST_PAGE_SIZE", "3")

    sent: dict[str, int] = {}
    for invocation in range(1, 17):  # noqa: B007 (read after the loop)
        summary = lambda_handler({}, RequestClock(4.0, threaded_proxy, 0.1))
        assert summary["statusCode"] == 200, summary
        for body in env.bodies(queue_url):
            sent[body["key"]] = sent.get(body["key"], 0) + 1
        if not summary["truncated"]:
            break
    assert summary["truncated"] is False, f"{len(sent)} of 300 sent in {invocation} invocations"
    assert set(sent) == set(keys) and set(sent.values()) == {1}
