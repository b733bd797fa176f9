"""``STATE_LAYOUT=folders`` against moto: one shard per folder (SPEC "State layout
`folders`"), read when its folder is listed, written only when it changed."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from async_discovery.config import Config, parse_initial_scan
from async_discovery.errors import ConfigError
from async_discovery.layout import runs_key, shard_key, shard_name, state_prefix
from async_discovery.summary import RunStats
from async_discovery.testing.fault_proxy import FaultProxy, Hold

from .helpers import MotoEnv, scan
from .operator_support import candidate_budget

SP = "state/processed_files/"  # the state prefix of the default S3_STATE_KEY
P = "incoming/"


@pytest.fixture(autouse=True, params=["whole", "head"])
def shard_reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every clause holds both ways a shard is opened: read whole (a shard smaller than
    the first read), and by its head and fingerprint (here: any shard over 256 bytes)."""
    if request.param == "head":
        monkeypatch.setattr("async_discovery.stages.folders.HEAD_BYTES", 256)
    return str(request.param)


def shard(env: MotoEnv, bucket: str, folder: str) -> dict[str, Any] | None:
    return env.state(bucket, shard_key(SP, P, folder))


def state_keys(env: MotoEnv, bucket: str) -> list[str]:
    resp = env.s3.list_objects_v2(Bucket=bucket, Prefix="state/")
    return sorted(item["Key"] for item in resp.get("Contents", []))


def folders_config(env: MotoEnv, bucket: str, queue_url: str | None, **kw: Any) -> Config:
    return env.config(bucket, queue_url, state_layout="folders", **kw)


def seed(env: MotoEnv, bucket: str, folders: dict[str, int]) -> list[str]:
    keys = [f"{P}{f}/{i:02d}.csv" for f, n in folders.items() for i in range(n)]
    env.put_many(bucket, keys)
    return keys


# -- keys and names ------------------------------------------------------------------


def test_shard_and_run_object_keys() -> None:
    assert state_prefix("state/processed_files.json") == SP
    assert state_prefix("state/x/") == "state/x/"
    assert shard_key(SP, P, "sales") == f"{SP}folders/{P}sales.json"
    assert runs_key(SP, P, "cursor.json") == f"{SP}runs/{P}cursor.json"
    long = "é" * 600  # 1,200 bytes of UTF-8: the plain key would pass 1,024
    hashed = shard_key(SP, P, long)
    assert hashed == f"{SP}folders/{P}{shard_name(long)}.json"
    assert len(shard_name(long)) == 2 + 64


def test_folders_layout_needs_folder_listings() -> None:
    base = {"S3_SOURCE_BUCKET": "bkt-a", "SQS_QUEUE_URL": "http://127.0.0.1:1/1/q"}
    with pytest.raises(ConfigError, match="LIST_STRATEGY"):
        Config.from_env({**base, "STATE_LAYOUT": "folders", "LIST_STRATEGY": "flat"})
    with pytest.raises(ConfigError, match="--folders"):
        Config.from_env(base, folders="a,b")
    assert Config.from_env({**base, "STATE_LAYOUT": "folders"}).state_layout == "folders"


# -- shards: one per folder, written when changed ----------------------------------------


async def test_a_shard_per_folder_written_only_when_it_changed(
    env: MotoEnv, bucket: str, queue_url: str, shard_reads: str
) -> None:
    keys = seed(env, bucket, {"a": 3, "b": 2, "c": 4})
    env.put(bucket, f"{P}logs/skip.csv")
    config = folders_config(env, bucket, queue_url)

    first = await scan(config)
    assert (first["statusCode"], first["queued"]) == (200, 9)
    assert (first["state_objects_read"], first["state_objects_written"]) == (0, 3)
    doc = shard(env, bucket, "a")
    assert doc is not None
    assert (doc["version"], doc["source_bucket"], doc["prefix"], doc["folder"]) == (
        2,
        bucket,
        P,
        "a",
    )
    assert sorted(doc["files"]) == [k for k in keys if "/a/" in k]
    assert doc["files"][f"{P}a/00.csv"]["status"] == "queued"
    assert isinstance(doc["updated_at"], str)
    assert shard(env, bucket, "logs") is None  # skipped: never a shard
    assert env.state(bucket) is None  # no single state object either
    assert sorted(b["key"] for b in env.bodies(queue_url)) == sorted(keys)

    # Warm: every shard read, none written.
    warm = await scan(config)
    assert (warm["queued"], warm["skipped"]) == (0, 9)
    assert (warm["state_objects_read"], warm["state_objects_written"]) == (3, 0)
    assert warm["state_objects_verified"] == (3 if shard_reads == "head" else 0)

    # Changes in two folders: two shard writes, the third shard untouched.
    before_c = env.state_bytes(bucket, shard_key(SP, P, "c"))
    env.put(bucket, f"{P}a/00.csv", b"changed\n")
    env.put(bucket, f"{P}b/new.csv")
    third = await scan(config)
    assert (third["queued"], third["new"], third["updated"]) == (2, 1, 1)
    assert third["state_objects_written"] == 2
    assert env.state_bytes(bucket, shard_key(SP, P, "c")) == before_c


async def test_an_unreadable_shard_fails_its_folder_only(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    seed(env, bucket, {"a": 2, "b": 2, "c": 2})
    config = folders_config(env, bucket, queue_url, state_max_bytes=4000)
    await scan(config)
    env.bodies(queue_url)
    bad = {
        "a": b"{not json",
        "b": json.dumps({"version": 1, "files": {}}).encode(),  # a v1 object, not a shard
        "c": b'{"version": 2, "files": {}, "pad": "' + b"x" * 5000 + b'"}',  # over the cap
    }
    for folder, body in bad.items():
        env.s3.put_object(Bucket=bucket, Key=shard_key(SP, P, folder), Body=body)
    env.put(bucket, f"{P}d/1.csv")
    for folder in "abc":
        env.put(bucket, f"{P}{folder}/new.csv")

    summary = await scan(config)
    assert summary["statusCode"] == 207
    assert summary["folder_errors"] == 3
    for folder in "abc":
        assert shard_key(SP, P, folder) in summary["error"]
        raw = env.s3.get_object(Bucket=bucket, Key=shard_key(SP, P, folder))["Body"].read()
        assert raw == bad[folder]  # left byte for byte
    # The other folder went ahead; nothing of the failed ones was sent.
    assert [b["key"] for b in env.bodies(queue_url)] == [f"{P}d/1.csv"]
    assert shard(env, bucket, "d") is not None


async def test_a_shard_bound_to_another_bucket_fails_its_folder_unless_rebinding(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    seed(env, bucket, {"a": 1, "b": 1})
    config = folders_config(env, bucket, queue_url)
    await scan(config)
    env.bodies(queue_url)
    doc = shard(env, bucket, "a")
    assert doc is not None
    doc["source_bucket"] = "another-bucket"
    env.s3.put_object(Bucket=bucket, Key=shard_key(SP, P, "a"), Body=json.dumps(doc).encode())
    summary = await scan(config)
    assert summary["statusCode"] == 207 and "another-bucket" in summary["error"]
    rebound = await scan(folders_config(env, bucket, queue_url, force_rebind=True))
    assert rebound["statusCode"] == 200
    assert (shard(env, bucket, "a") or {})["source_bucket"] == bucket


# -- pruning -------------------------------------------------------------------------


async def test_prune_removes_vanished_files_and_deletes_vanished_folders_shards(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    seed(env, bucket, {"a": 3, "gone": 2, "logs": 1})
    config = folders_config(env, bucket, queue_url)
    await scan(folders_config(env, bucket, queue_url, skip_folders=frozenset()))
    assert shard(env, bucket, "logs") is not None  # scanned while not skipped
    env.s3.delete_object(Bucket=bucket, Key=f"{P}a/00.csv")
    for key in (f"{P}gone/00.csv", f"{P}gone/01.csv", f"{P}logs/00.csv"):
        env.s3.delete_object(Bucket=bucket, Key=key)

    summary = await scan(config)
    assert summary["statusCode"] == 200 and summary["pruned"] == 1
    assert sorted((shard(env, bucket, "a") or {})["files"]) == [f"{P}a/01.csv", f"{P}a/02.csv"]
    assert shard(env, bucket, "gone") is None  # the folder no longer exists
    assert shard(env, bucket, "logs") is not None  # skipped folders are never touched


# -- truncated runs: the cursor object -------------------------------------------------


async def test_truncated_runs_cover_every_folder_through_the_cursor_object(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    # One folder larger than a run can finish.
    keys = seed(env, bucket, {"a": 5, "big": 60, "c": 5, "d": 5})
    config = folders_config(
        env, bucket, queue_url, list_page_size=10, workers=1, list_concurrency=1
    )
    cursor_key = runs_key(SP, P, "cursor.json")
    runs = 0
    while True:
        runs += 1
        stats = RunStats()
        summary = await scan(config, stats=stats, deadline=candidate_budget(stats, 15))
        assert summary["statusCode"] == 200, summary
        if not summary["truncated"]:
            break
        cursor = env.state(bucket, cursor_key)
        assert cursor is not None and cursor["cursor"]["strategy"] == "folders"
        assert runs < 30
    assert runs >= 5
    assert Counter(b["key"] for b in env.bodies(queue_url)) == Counter(keys)
    assert env.state(bucket, cursor_key) is None  # the finished pass removed it
    assert sorted((shard(env, bucket, "big") or {})["files"]) == [k for k in keys if "/big/" in k]


async def test_a_run_cut_short_writes_the_shards_it_holds_together(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    """The shards of the folders a truncated run was listing are written at once (up to
    LIST_CONCURRENCY), not one round trip after another out of the deadline's margin: a
    barrier lets no shard write through until a second one has arrived."""
    seed(env, bucket, {f: 30 for f in "abcd"})
    config = folders_config(
        env, bucket, queue_url, list_page_size=5, list_concurrency=4, endpoint_url=proxy.url
    )
    barrier = proxy.inject(
        Hold(2, timeout=5), "PutObject", when=lambda r: (r.key or "").startswith(SP + "folders/")
    )
    stats = RunStats()
    summary = await scan(config, stats=stats, deadline=candidate_budget(stats, 40))
    assert summary["statusCode"] == 200 and summary["truncated"] is True
    assert summary["state_objects_written"] >= 2
    assert not barrier.timed_out


# -- the first-run policy, fixed by the prefix's first run ---------------------------------


async def test_initial_scan_is_fixed_by_the_first_run_and_applies_to_new_folders(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    seed(env, bucket, {"a": 2, "b": 2})
    await anyio.sleep(1.1)  # older than the second the first run starts in
    config = folders_config(
        env, bucket, queue_url, initial_scan=parse_initial_scan("mark-existing", [])
    )
    first = await scan(config)
    assert (first["statusCode"], first["queued"], first["marked"]) == (200, 0, 4)
    initial = env.state(bucket, runs_key(SP, P, "initial.json"))
    assert initial is not None and initial["initial_scan"].startswith("since:")
    since = datetime.fromisoformat(initial["initial_scan"][6:].replace("Z", "+00:00"))
    assert since <= datetime.now(UTC)

    # A folder that appears later is sent in full (its files are newer than the policy).
    env.put(bucket, f"{P}c/1.csv")
    env.put(bucket, f"{P}a/new.csv")
    later = await scan(config)
    assert (later["queued"], later["marked"]) == (2, 0)
    assert sorted(b["key"] for b in env.bodies(queue_url)) == [f"{P}a/new.csv", f"{P}c/1.csv"]


async def test_initial_scan_does_not_apply_once_shards_exist(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    seed(env, bucket, {"a": 1})
    await scan(folders_config(env, bucket, queue_url))  # INITIAL_SCAN=all
    env.bodies(queue_url)
    env.put(bucket, f"{P}b/1.csv")
    await anyio.sleep(1.1)
    marking = folders_config(
        env, bucket, queue_url, initial_scan=parse_initial_scan("mark-existing", [])
    )
    summary = await scan(marking)
    assert (summary["queued"], summary["marked"]) == (1, 0)
    assert env.state(bucket, runs_key(SP, P, "initial.json")) is None


# -- dry run, explain, min age ---------------------------------------------------------


async def test_dry_run_explain_and_min_age_with_shards(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    seed(env, bucket, {"a": 2})
    lines: list[dict[str, Any]] = []
    dry = folders_config(env, bucket, None, dry_run=True)
    summary = await scan(dry, explain=lines.append)
    assert (summary["queued"], summary["dry_run"]) == (2, True)
    assert state_keys(env, bucket) == []  # nothing written
    assert [d["action"] for d in lines if "action" in d] == ["send", "send"]

    young = await scan(folders_config(env, bucket, queue_url, min_object_age_seconds=3600))
    assert (young["queued"], young["deferred"]) == (0, 2)
    assert state_keys(env, bucket) == []


async def test_shard_writes_are_conditional_and_merge_on_conflict(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    """Another run writes the shard between this run's read and write: this run's
    entries are merged into the fresh shard (If-Match refused, reload, retry)."""
    seed(env, bucket, {"a": 2})
    config = folders_config(env, bucket, queue_url, endpoint_url=proxy.url)
    await scan(config)
    env.put(bucket, f"{P}a/new.csv")
    other = {"version": 2, "files": {f"{P}a/other.csv": {"status": "queued", "etag": "e"}}}
    fired: list[bool] = []

    def interfere(request: Any) -> bool:
        if request.operation == "PutObject" and not fired:
            fired.append(True)
            doc = shard(env, bucket, "a") or {}
            doc["files"].update(other["files"])
            env.s3.put_object(
                Bucket=bucket, Key=shard_key(SP, P, "a"), Body=json.dumps(doc).encode()
            )
        return False

    proxy.inject(proxy_noop(), "PutObject", when=interfere)
    summary = await scan(config)
    assert summary["statusCode"] == 200 and fired
    files = (shard(env, bucket, "a") or {})["files"]
    assert {f"{P}a/new.csv", f"{P}a/other.csv"} <= set(files)
    assert summary["state_objects_written"] == 1


def proxy_noop() -> Any:
    from async_discovery.testing.fault_proxy import Latency

    return Latency(0.0)


async def test_a_folder_settled_while_every_committer_is_busy_is_still_pruned(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    """With one committer held up by slow shard writes, folders that settle meanwhile are
    written at the end of the run: as complete folders, so their vanished files are
    pruned all the same."""
    from async_discovery.testing.fault_proxy import Latency

    names = [f"f{i}" for i in range(6)]
    seed(env, bucket, dict.fromkeys(names, 2))
    await scan(folders_config(env, bucket, queue_url))
    for folder in names:
        env.s3.delete_object(Bucket=bucket, Key=f"{P}{folder}/00.csv")
        env.put(bucket, f"{P}{folder}/new.csv")  # every shard changes: six writes
    proxy.inject(Latency(0.3), "PutObject")
    config = folders_config(env, bucket, queue_url, endpoint_url=proxy.url, list_concurrency=1)
    summary = await scan(config)
    assert (summary["statusCode"], summary["queued"]) == (200, 6)
    assert summary["pruned"] == 6
    for folder in names:
        assert sorted((shard(env, bucket, folder) or {})["files"]) == [
            f"{P}{folder}/01.csv",
            f"{P}{folder}/new.csv",
        ]
