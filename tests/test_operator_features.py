"""Operator features against a moto server: first-run policy, settle time, pruning, the
source bucket binding, the ``id`` message attribute and reading older state objects.

Resumable scans are in ``test_resume.py``, explain/dry-run in ``test_explain.py``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from async_discovery.config import Config, parse_initial_scan
from async_discovery.errors import ConfigError
from async_discovery.testing.fault_proxy import FaultProxy, S3Error

from .helpers import MotoEnv, scan
from .operator_support import run_scanner, scan_with_budget, seed_folders

MARK = parse_initial_scan("mark-existing", [])


def files(
    env: MotoEnv, bucket: str, key: str = "state/processed_files.json"
) -> dict[str, dict[str, Any]]:
    state = env.state(bucket, key)
    assert state is not None
    return dict(state["files"])


# -- 1. INITIAL_SCAN ---------------------------------------------------------------------


async def test_mark_existing_sends_nothing_then_exactly_the_new_file(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    for key in ("incoming/a/1.csv", "incoming/a/2.csv", "incoming/b/3.csv"):
        env.put(bucket, key)
    await anyio.sleep(1.1)  # older than the second the pass starts in (LastModified)
    config = env.config(bucket, queue_url, initial_scan=MARK)

    first = await scan(config)
    assert (first["statusCode"], first["queued"], first["marked"]) == (200, 0, 3)
    assert env.bodies(queue_url) == []
    recorded = files(env, bucket)
    assert sorted(recorded) == ["incoming/a/1.csv", "incoming/a/2.csv", "incoming/b/3.csv"]
    assert {entry["status"] for entry in recorded.values()} == {"marked"}

    env.put(bucket, "incoming/b/4.csv")
    second = await scan(config)
    assert (second["queued"], second["skipped"], second["marked"]) == (1, 3, 0)
    assert [b["key"] for b in env.bodies(queue_url)] == ["incoming/b/4.csv"]
    assert files(env, bucket)["incoming/b/4.csv"]["status"] == "queued"


async def test_mark_existing_on_an_empty_bucket_still_ends_the_first_run(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """The first run must leave a state object even when it found nothing to mark:
    otherwise the second run is a "first run" again and marks the new file too."""
    config = env.config(bucket, queue_url, initial_scan=MARK)
    first = await scan(config)
    assert (first["statusCode"], first["marked"]) == (200, 0)
    assert env.state(bucket) is not None

    env.put(bucket, "incoming/a/new.csv")
    second = await scan(config)
    assert (second["queued"], second["marked"]) == (1, 0)
    assert [b["key"] for b in env.bodies(queue_url)] == ["incoming/a/new.csv"]


async def test_since_sends_only_files_modified_at_or_after_the_instant(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/old.csv")
    await anyio.sleep(1.1)  # S3 LastModified has one-second resolution
    env.put(bucket, "incoming/a/new.csv")
    env.put(bucket, "incoming/b/new.csv")
    since = env.s3.head_object(Bucket=bucket, Key="incoming/a/new.csv")["LastModified"]
    policy = parse_initial_scan(f"since:{since.isoformat()}", [])
    assert policy.since == since

    summary = await scan(env.config(bucket, queue_url, initial_scan=policy))
    assert (summary["statusCode"], summary["queued"], summary["marked"]) == (200, 2, 1)
    assert sorted(b["key"] for b in env.bodies(queue_url)) == [
        "incoming/a/new.csv",
        "incoming/b/new.csv",
    ]
    recorded = files(env, bucket)
    assert recorded["incoming/a/old.csv"]["status"] == "marked"
    assert recorded["incoming/a/new.csv"]["status"] == "queued"


async def test_mark_existing_survives_a_failed_folder_on_the_first_run(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    """A folder that cannot be listed on the first run must still be marked, not sent,
    by the next run: the policy is saved with a cursor for the unfinished folder."""
    keys = seed_folders(env, bucket, folders=2, files=4)
    await anyio.sleep(1.1)  # older than the second the pass starts in (LastModified)
    config = env.config(bucket, queue_url, initial_scan=MARK, endpoint_url=proxy.url)
    proxy.inject(
        S3Error(), "ListObjectsV2", when=lambda r: r.query.get("prefix") == "incoming/f01/"
    )
    first = await scan(config)
    assert (first["statusCode"], first["folder_errors"], first["marked"]) == (207, 1, 4)
    cursor = env.state(bucket)["cursors"]["incoming/"]  # type: ignore[index]
    assert cursor["pending"] == {"f01": None}
    assert cursor["initial_scan"].startswith("since:")

    proxy.clear()
    second = await scan(config)
    assert (second["statusCode"], second["queued"], second["marked"]) == (200, 0, 4)
    assert env.bodies(queue_url) == []
    state = env.state(bucket)
    assert state is not None and state.get("cursors", {}) == {}
    assert {state["files"][k]["status"] for k in keys} == {"marked"}


async def test_initial_scan_applies_only_when_no_state_exists(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    await scan(env.config(bucket, queue_url))  # default: all
    env.put(bucket, "incoming/a/2.csv")
    later = await scan(env.config(bucket, queue_url, initial_scan=MARK))
    assert (later["queued"], later["marked"]) == (1, 0)
    assert sorted(b["key"] for b in env.bodies(queue_url)) == [
        "incoming/a/1.csv",
        "incoming/a/2.csv",
    ]


async def test_initial_scan_all_is_the_default(env: MotoEnv, bucket: str, queue_url: str) -> None:
    env.put(bucket, "incoming/a/1.csv")
    assert str(env.config(bucket, queue_url).initial_scan) == "all"
    summary = await scan(env.config(bucket, queue_url))
    assert (summary["queued"], summary["marked"]) == (1, 0)


async def test_mark_existing_dry_run_writes_nothing(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    await anyio.sleep(1.1)  # older than the second the pass starts in (LastModified)
    summary = await scan(env.config(bucket, None, initial_scan=MARK, dry_run=True))
    assert (summary["statusCode"], summary["queued"], summary["marked"]) == (200, 0, 1)
    assert env.state(bucket) is None


def test_initial_scan_parsing() -> None:
    base = {"S3_SOURCE_BUCKET": "bkt-a", "SQS_QUEUE_URL": "http://127.0.0.1:1/1/q"}
    assert str(Config.from_env({**base, "INITIAL_SCAN": "mark-existing"}).initial_scan) == (
        "mark-existing"
    )
    since = Config.from_env({**base, "INITIAL_SCAN": "since:2026-01-02T03:04:05Z"}).initial_scan
    assert since.since == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    naive = Config.from_env({**base, "INITIAL_SCAN": "since:2026-01-02"}).initial_scan
    assert naive.since == datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(ConfigError, match="INITIAL_SCAN"):
        Config.from_env({**base, "INITIAL_SCAN": "since:yesterday"})
    with pytest.raises(ConfigError, match="INITIAL_SCAN"):
        Config.from_env({**base, "INITIAL_SCAN": "some"})


# -- 2. MIN_OBJECT_AGE_SECONDS -----------------------------------------------------------


async def test_young_files_are_deferred_then_picked_up(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    env.put(bucket, "incoming/a/2.csv")
    config = env.config(bucket, queue_url, min_object_age_seconds=600)

    first = await run_scanner(config)
    assert (first["statusCode"], first["queued"], first["deferred"]) == (200, 0, 2)
    assert env.bodies(queue_url) == []
    assert env.state(bucket) is None  # neither sent nor recorded

    later = datetime.now(UTC) + timedelta(seconds=601)
    second = await run_scanner(config, clock=lambda: later)
    assert (second["queued"], second["deferred"]) == (2, 0)
    assert sorted(b["key"] for b in env.bodies(queue_url)) == [
        "incoming/a/1.csv",
        "incoming/a/2.csv",
    ]


async def test_settle_time_defers_an_update_and_keeps_the_old_entry(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    old_etag = env.put(bucket, "incoming/a/1.csv", "v1\n")
    env.put(bucket, "incoming/a/2.csv")
    await scan(env.config(bucket, queue_url))
    env.bodies(queue_url)
    new_etag = env.put(bucket, "incoming/a/1.csv", "v2, longer\n")
    config = env.config(bucket, queue_url, min_object_age_seconds=600)

    deferred = await run_scanner(config)
    # The unchanged file is skipped, not deferred; the young update is not pruned either.
    assert (deferred["deferred"], deferred["skipped"], deferred["pruned"]) == (1, 1, 0)
    assert files(env, bucket)["incoming/a/1.csv"]["etag"] == old_etag

    later = datetime.now(UTC) + timedelta(hours=1)
    sent = await run_scanner(config, clock=lambda: later)
    assert (sent["queued"], sent["updated"]) == (1, 1)
    [body] = env.bodies(queue_url)
    assert (body["key"], body["etag"], body["event"]) == ("incoming/a/1.csv", new_etag, "updated")


def test_min_object_age_parsing() -> None:
    base = {"S3_SOURCE_BUCKET": "bkt-a", "SQS_QUEUE_URL": "http://127.0.0.1:1/1/q"}
    assert Config.from_env(base).min_object_age_seconds == 0
    assert Config.from_env({**base, "MIN_OBJECT_AGE_SECONDS": "90"}).min_object_age_seconds == 90
    with pytest.raises(ConfigError, match="MIN_OBJECT_AGE_SECONDS"):
        Config.from_env({**base, "MIN_OBJECT_AGE_SECONDS": "-1"})


# -- 3. PRUNE_MISSING --------------------------------------------------------------------


async def test_deleted_files_are_pruned_after_a_complete_listing(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    for key in ("incoming/a/1.csv", "incoming/a/2.csv", "incoming/b/3.csv"):
        env.put(bucket, key)
    config = env.config(bucket, queue_url)
    await scan(config)
    env.s3.delete_object(Bucket=bucket, Key="incoming/a/2.csv")
    env.s3.delete_object(Bucket=bucket, Key="incoming/b/3.csv")  # the whole folder is gone

    summary = await scan(config)
    assert (summary["statusCode"], summary["pruned"], summary["skipped"]) == (200, 2, 1)
    assert sorted(files(env, bucket)) == ["incoming/a/1.csv"]


async def test_prune_missing_false_keeps_entries(env: MotoEnv, bucket: str, queue_url: str) -> None:
    env.put(bucket, "incoming/a/1.csv")
    await scan(env.config(bucket, queue_url))
    env.s3.delete_object(Bucket=bucket, Key="incoming/a/1.csv")
    summary = await scan(env.config(bucket, queue_url, prune_missing=False))
    assert summary["pruned"] == 0
    assert sorted(files(env, bucket)) == ["incoming/a/1.csv"]
    assert (
        Config.from_env(
            {"S3_SOURCE_BUCKET": "bkt-a", "PRUNE_MISSING": "false"}, dry_run=True
        ).prune_missing
        is False
    )


async def test_dry_run_reports_pruning_but_writes_nothing(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    await scan(env.config(bucket, queue_url))
    before = env.state_bytes(bucket)
    env.s3.delete_object(Bucket=bucket, Key="incoming/a/1.csv")
    summary = await scan(env.config(bucket, None, dry_run=True))
    assert (summary["pruned"], summary["dry_run"]) == (1, True)
    assert env.state_bytes(bucket) == before


async def test_pruning_stays_inside_the_prefix_and_out_of_skipped_folders(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """Three scans share one state object: ``incoming/``, ``other/`` and the whole bucket
    (whose candidates are one level deep, so ``incoming/a/x.csv`` is not one of its)."""
    for key in ("incoming/a/1.csv", "incoming/logs/l.csv", "other/a/2.csv", "top/3.csv"):
        env.put(bucket, key)
    await scan(env.config(bucket, queue_url, skip_folders=frozenset()))  # records logs/
    await scan(env.config(bucket, queue_url, prefix="other/"))
    await scan(env.config(bucket, queue_url, prefix=""))
    assert sorted(files(env, bucket)) == [
        "incoming/a/1.csv",
        "incoming/logs/l.csv",
        "other/a/2.csv",
        "top/3.csv",
    ]
    for key in ("incoming/logs/l.csv", "other/a/2.csv", "top/3.csv"):
        env.s3.delete_object(Bucket=bucket, Key=key)

    # incoming/ with logs skipped: nothing under incoming/ is gone but logs/, which it
    # does not list; other/ and top/ are outside its prefix.
    inner = await scan(env.config(bucket, queue_url))
    assert inner["pruned"] == 0
    # The whole bucket: top/3.csv is its own; incoming/a/1.csv and other/a/2.csv are
    # deeper than its candidates, so not its to prune (nor logs/ inside them).
    outer = await scan(env.config(bucket, queue_url, prefix=""))
    assert outer["pruned"] == 1
    assert sorted(files(env, bucket)) == [
        "incoming/a/1.csv",
        "incoming/logs/l.csv",
        "other/a/2.csv",
    ]
    # other/ prunes its own.
    assert (await scan(env.config(bucket, queue_url, prefix="other/")))["pruned"] == 1
    assert sorted(files(env, bucket)) == ["incoming/a/1.csv", "incoming/logs/l.csv"]


async def test_a_listing_error_never_prunes(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    """Folder b fails on its second page (after retries): nothing at all is pruned, not
    even the deleted file of the healthy folder a; the next clean run prunes both."""
    seed_folders(env, bucket, folders=2, files=6)  # incoming/f00, incoming/f01
    config = env.config(bucket, queue_url, list_page_size=2, endpoint_url=proxy.url)
    await scan(config)
    env.bodies(queue_url)
    for key in ("incoming/f00/k005.csv", "incoming/f01/k000.csv", "incoming/f01/k005.csv"):
        env.s3.delete_object(Bucket=bucket, Key=key)

    rule = proxy.inject(
        S3Error(),
        "ListObjectsV2",
        when=lambda r: r.query.get("prefix") == "incoming/f01/" and "continuation-token" in r.query,
    )
    failed = await scan(config)
    assert rule.hits >= 1
    assert (failed["statusCode"], failed["folder_errors"], failed["pruned"]) == (207, 1, 0)
    assert len(files(env, bucket)) == 12

    proxy.clear()
    clean = await scan(config)
    assert (clean["statusCode"], clean["pruned"]) == (200, 3)
    assert len(files(env, bucket)) == 9


async def test_a_failed_prefix_listing_is_500_and_leaves_state_alone(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    seed_folders(env, bucket, folders=2, files=3)
    config = env.config(bucket, queue_url, endpoint_url=proxy.url, list_strategy="flat")
    await scan(config)
    before = env.state_bytes(bucket)
    env.s3.delete_object(Bucket=bucket, Key="incoming/f00/k000.csv")
    proxy.inject(S3Error(), "ListObjectsV2")
    summary = await scan(config)
    assert summary["statusCode"] == 500
    assert "listed" in summary["error"]
    assert env.state_bytes(bucket) == before


async def test_a_truncated_run_never_prunes(env: MotoEnv, bucket: str, queue_url: str) -> None:
    seed_folders(env, bucket, folders=3, files=10)
    config = env.config(bucket, queue_url, list_page_size=5, workers=1, list_concurrency=1)
    await scan(config)
    env.s3.delete_object(Bucket=bucket, Key="incoming/f02/k009.csv")
    env.s3.delete_object(Bucket=bucket, Key="incoming/f00/k000.csv")

    truncated = await scan_with_budget(config, candidates=5)
    assert (truncated["truncated"], truncated["pruned"]) == (True, 0)
    # The resumed pass finishes the listing but began mid-bucket: still no pruning.
    resumed = await scan(config)
    assert (resumed["truncated"], resumed["pruned"]) == (False, 0)
    assert len(files(env, bucket)) == 30
    fresh = await scan(config)
    assert fresh["pruned"] == 2
    assert len(files(env, bucket)) == 28


# -- 4. source bucket binding ------------------------------------------------------------


async def test_state_is_bound_to_its_source_bucket(env: MotoEnv, queue_url: str) -> None:
    state_bucket, first, second = env.new_bucket(), env.new_bucket(), env.new_bucket()
    env.put(first, "incoming/a/1.csv")
    env.put(second, "incoming/a/1.csv")
    await scan(env.config(first, queue_url, state_bucket=state_bucket))
    assert env.state(state_bucket)["source_bucket"] == first  # type: ignore[index]
    env.bodies(queue_url)
    before = env.state_bytes(state_bucket)

    refused = await scan(env.config(second, queue_url, state_bucket=state_bucket))
    assert refused["statusCode"] == 500
    assert first in refused["error"] and second in refused["error"]
    assert "--force-rebind" in refused["error"]
    assert refused["queued"] == 0 and env.bodies(queue_url) == []
    assert env.state_bytes(state_bucket) == before

    # A deliberate move: the same file (same ETag) in the new bucket is not re-sent,
    # and the binding is written even though nothing was queued.
    moved = await scan(env.config(second, queue_url, state_bucket=state_bucket, force_rebind=True))
    assert (moved["statusCode"], moved["queued"], moved["skipped"]) == (200, 0, 1)
    assert env.state(state_bucket)["source_bucket"] == second  # type: ignore[index]
    again = await scan(env.config(second, queue_url, state_bucket=state_bucket))
    assert again["statusCode"] == 200
    back = await scan(env.config(first, queue_url, state_bucket=state_bucket))
    assert back["statusCode"] == 500


def test_force_rebind_from_env() -> None:
    base = {"S3_SOURCE_BUCKET": "bkt-a", "SQS_QUEUE_URL": "http://127.0.0.1:1/1/q"}
    assert Config.from_env(base).force_rebind is False
    assert Config.from_env({**base, "FORCE_REBIND": "true"}).force_rebind is True
    with pytest.raises(ConfigError, match="FORCE_REBIND"):
        Config.from_env({**base, "FORCE_REBIND": "maybe"})


async def test_an_older_state_object_loads_and_gets_bound(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """A version-1 state object written before source_bucket/cursors existed."""
    etag = env.put(bucket, "incoming/a/1.csv")
    env.put(bucket, "incoming/a/2.csv")
    old = {
        "version": 1,
        "updated_at": "2025-01-01T00:00:00Z",
        "files": {
            "incoming/a/1.csv": {
                "status": "queued",
                "etag": etag,
                "size": 8,
                "folder": "a",
                "queued_at": "2025-01-01T00:00:00Z",
            }
        },
    }
    env.s3.put_object(Bucket=bucket, Key="state/processed_files.json", Body=json.dumps(old))

    summary = await scan(env.config(bucket, queue_url))
    assert (summary["statusCode"], summary["queued"], summary["skipped"]) == (200, 1, 1)
    state = env.state(bucket)
    assert state is not None
    assert (state["version"], state["source_bucket"]) == (1, bucket)
    assert "cursors" not in state  # only written while a pass is unfinished
    assert state["files"]["incoming/a/1.csv"] == old["files"]["incoming/a/1.csv"]  # type: ignore[index]


async def test_an_older_state_is_bound_even_when_nothing_changes(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    etag = env.put(bucket, "incoming/a/1.csv")
    entry = {"status": "queued", "etag": etag, "size": 8, "folder": "a", "queued_at": "x"}
    old = {"version": 1, "files": {"incoming/a/1.csv": entry}}
    env.s3.put_object(Bucket=bucket, Key="state/processed_files.json", Body=json.dumps(old))
    summary = await scan(env.config(bucket, queue_url))
    assert (summary["queued"], summary["skipped"]) == (0, 1)
    assert env.state(bucket)["source_bucket"] == bucket  # type: ignore[index]


# -- 7. the id message attribute ---------------------------------------------------------


@pytest.mark.parametrize("fifo", [False, True])
async def test_id_is_also_a_string_message_attribute(env: MotoEnv, bucket: str, fifo: bool) -> None:
    queue = env.new_queue(fifo=fifo)
    etag = env.put(bucket, "incoming/a/q 1+%.csv")
    env.put(bucket, "incoming/b/2.csv")
    summary = await scan(env.config(bucket, queue))
    assert summary["queued"] == 2
    messages = env.receive_all(queue)
    assert len(messages) == 2
    for message in messages:
        body = json.loads(message["Body"])
        attribute = message["MessageAttributes"]["id"]
        assert attribute == {"DataType": "String", "StringValue": body["id"]}
        if body["key"] == "incoming/a/q 1+%.csv":
            digest = hashlib.sha256(f"{bucket}/incoming/a/q 1+%.csv@{etag}".encode()).hexdigest()
            assert body["id"] == digest
        if fifo:
            assert message["Attributes"]["MessageDeduplicationId"] == body["id"]
