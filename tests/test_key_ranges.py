"""Key ranges under ``STATE_LAYOUT=folders`` against moto (SPEC "Key ranges"): a folder
with more than ``SHARD_MAX_FILES`` files is kept as range shards named by its index,
listed range by range, split as it grows, emptied ranges removed."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

import pytest

from async_discovery.config import Config
from async_discovery.deadline import Deadline
from async_discovery.handler import lambda_handler
from async_discovery.layout import item_key, range_key, ranges_prefix, runs_key, shard_key
from async_discovery.stages.plan import Job
from async_discovery.stages.runs import item_id
from async_discovery.summary import RunStats
from async_discovery.testing.fault_proxy import FaultProxy, Hold

from .helpers import MotoEnv, scan
from .operator_support import candidate_budget, run_until_complete, scan_with_budget

SP = "state/processed_files/"
P = "incoming/"
MAX = 4  # SHARD_MAX_FILES: ranges of at most 2 files when split


@pytest.fixture(autouse=True, params=["whole", "head"])
def shard_reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every clause holds both ways a range is opened: read whole, and by its head and
    fingerprint (any shard over 256 bytes)."""
    if request.param == "head":
        monkeypatch.setattr("async_discovery.stages.folders.HEAD_BYTES", 256)
    return str(request.param)


def config(env: MotoEnv, bucket: str, queue_url: str | None, **kw: Any) -> Config:
    kw.setdefault("shard_max_files", MAX)
    return env.config(bucket, queue_url, state_layout="folders", **kw)


def index(env: MotoEnv, bucket: str, folder: str) -> dict[str, Any]:
    doc = env.state(bucket, shard_key(SP, P, folder))
    assert doc is not None and doc["version"] == 3, doc
    return doc


def ranges(env: MotoEnv, bucket: str, folder: str) -> list[tuple[str | None, dict[str, Any]]]:
    """Each range of the folder's index: its upper bound and its shard's body."""
    out = []
    for ref in index(env, bucket, folder)["ranges"]:
        body: dict[str, Any] = {"files": {}}
        if ref["shard"] is not None:
            found = env.state(bucket, range_key(SP, P, folder, ref["shard"]))
            assert found is not None
            body = found
        out.append((ref["until"], body))
    return out


def range_objects(env: MotoEnv, bucket: str, folder: str) -> list[str]:
    head = ranges_prefix(SP, P, folder)
    resp = env.s3.list_objects_v2(Bucket=bucket, Prefix=head)
    return sorted(item["Key"] for item in resp.get("Contents", []))


def recorded(env: MotoEnv, bucket: str, folder: str, cap: int = MAX) -> dict[str, str]:
    """Every key the folder's ranges record, with its ETag; checks each range holds only
    keys within its bounds and at most ``cap`` files."""
    out: dict[str, str] = {}
    after: str | None = None
    for until, body in ranges(env, bucket, folder):
        assert len(body["files"]) <= cap
        for key, entry in body["files"].items():
            assert (after is None or key > after) and (until is None or key <= until), key
            assert key not in out
            out[key] = entry["etag"]
        after = until
    return out


def keys_of(folder: str, names: list[str]) -> list[str]:
    return [f"{P}{folder}/{n}" for n in names]


def sent(env: MotoEnv, queue_url: str) -> Counter[str]:
    return Counter(body["key"] for body in env.bodies(queue_url))


async def test_a_folder_past_the_bound_is_kept_as_ranges(
    env: MotoEnv, bucket: str, queue_url: str, shard_reads: str
) -> None:
    keys = keys_of("big", [f"{i:02d}.csv" for i in range(10)])
    env.put_many(bucket, keys)
    env.put_many(bucket, keys_of("small", ["a.csv", "b.csv"]))
    cfg = config(env, bucket, queue_url)

    first = await scan(cfg)
    assert (first["statusCode"], first["queued"]) == (200, 12)
    assert sent(env, queue_url) == Counter(keys + keys_of("small", ["a.csv", "b.csv"]))
    doc = index(env, bucket, "big")
    assert (doc["folder"], doc["prefix"], doc["source_bucket"]) == ("big", P, bucket)
    bounds = [r["until"] for r in doc["ranges"]]
    assert bounds[-1] is None and bounds[:-1] == sorted(bounds[:-1])
    assert all(b in keys for b in bounds[:-1])  # split at keys the run recorded
    assert set(recorded(env, bucket, "big")) == set(keys)
    assert len(doc["ranges"]) == 5  # 10 files in ranges of MAX // 2
    small = env.state(bucket, shard_key(SP, P, "small"))  # a small folder: one shard
    assert small is not None and small["version"] == 2 and len(small["files"]) == 2

    # Warm: nothing written; with heads, every range (and the small shard) verified.
    warm = await scan(cfg)
    assert (warm["queued"], warm["skipped"], warm["state_objects_written"]) == (0, 12, 0)
    if shard_reads == "head":
        assert warm["state_objects_verified"] == 6


async def test_every_key_is_decided_once_whatever_changed_around_the_bounds(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    names = ["b.csv", "d.csv", "f.csv", "h.csv", "j.csv", "l.csv"]
    env.put_many(bucket, keys_of("f", names))
    cfg = config(env, bucket, queue_url)
    await scan(cfg)
    env.bodies(queue_url)
    bounds = [r["until"] for r in index(env, bucket, "f")["ranges"]][:-1]
    assert len(bounds) == 2  # 6 files: ranges of 2, bounded at d.csv and h.csv

    # Keys before the first bound, after the last, between; a bound deleted and one
    # rewritten with new content; awkward characters.
    env.s3.delete_object(Bucket=bucket, Key=bounds[0])
    env.put(bucket, bounds[1], b"new content\n")
    added = keys_of("f", ["a.csv", "c.csv", "e e.csv", "i+%.csv", "z\U0001f600.csv", "é.csv"])
    env.put_many(bucket, added)
    second = await scan(cfg)
    assert second["statusCode"] == 200
    assert sent(env, queue_url) == Counter([*added, bounds[1]])
    assert (second["new"], second["updated"], second["pruned"]) == (6, 1, 1)
    listed = {o["Key"] for o in env.s3.list_objects_v2(Bucket=bucket, Prefix=P)["Contents"]}
    assert set(recorded(env, bucket, "f")) == listed

    # And the next pass decides each of them once more, as unchanged.
    third = await scan(cfg)
    assert (third["queued"], third["skipped"], third["listed"]) == (0, len(listed), len(listed))
    assert sent(env, queue_url) == Counter()


async def test_a_grown_range_is_split_and_an_emptied_one_removed(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put_many(bucket, keys_of("f", [f"{i}.csv" for i in range(6)]))  # 0..5
    cfg = config(env, bucket, queue_url)
    await scan(cfg)
    before = ranges(env, bucket, "f")
    assert len(before) == 3
    untouched = [r for r in index(env, bucket, "f")["ranges"]][2]

    # Three new files in the first range: it grows to 5 > MAX and is split; the last
    # range is not touched.
    env.put_many(bucket, keys_of("f", ["0a.csv", "0b.csv", "0c.csv"]))
    grown = await scan(cfg)
    assert grown["queued"] == 3
    after = index(env, bucket, "f")["ranges"]
    assert len(after) == 5 and after[-1] == untouched
    assert len(recorded(env, bucket, "f")) == 9
    # the replaced range's object is gone: only the index's ranges exist
    named = {range_key(SP, P, "f", r["shard"]) for r in after if r["shard"]}
    assert set(range_objects(env, bucket, "f")) == named

    # Every file of the middle ranges deleted: those ranges are removed, their keys
    # given to a neighbour.
    doomed = [k for k in recorded(env, bucket, "f") if k.endswith(("/2.csv", "/3.csv"))]
    env.s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in doomed]})
    pruned = await scan(cfg)
    assert (pruned["statusCode"], pruned["pruned"]) == (200, 2)
    left = index(env, bucket, "f")["ranges"]
    assert len(left) == 4
    named = {range_key(SP, P, "f", r["shard"]) for r in left if r["shard"]}
    assert set(range_objects(env, bucket, "f")) == named
    assert len(recorded(env, bucket, "f")) == 7
    assert (await scan(cfg))["state_objects_written"] == 0


async def test_an_unreadable_range_fails_only_its_range(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put_many(bucket, keys_of("f", [f"{i}.csv" for i in range(6)]))
    cfg = config(env, bucket, queue_url)
    await scan(cfg)
    env.bodies(queue_url)
    middle = index(env, bucket, "f")["ranges"][1]["shard"]
    bad_key = range_key(SP, P, "f", middle)
    env.put(bucket, bad_key, b"{not json")
    env.put_many(bucket, keys_of("f", ["0x.csv", "2x.csv", "5x.csv"]))  # one per range

    run = await scan(cfg)
    assert run["statusCode"] == 207 and run["folder_errors"] == 1
    assert bad_key in run["error"]
    assert sent(env, queue_url) == Counter(keys_of("f", ["0x.csv", "5x.csv"]))
    assert env.state_bytes(bucket, bad_key) == b"{not json"


async def test_ranges_are_listed_at_once_with_one_request_more_per_range(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    keys = keys_of("f", [f"{i:03d}.csv" for i in range(40)])
    env.put_many(bucket, keys)
    cfg = config(env, bucket, queue_url, shard_max_files=10, list_page_size=5)
    await scan(cfg)
    env.bodies(queue_url)
    assert len(index(env, bucket, "f")["ranges"]) == 8  # ranges of 5

    # Four range listings held until all four have arrived: they only can at once.
    hold = proxy.inject(
        Hold(4, timeout=5), "ListObjectsV2", when=lambda r: "start-after" in r.query, times=4
    )
    cfg = config(env, bucket, queue_url, shard_max_files=10, list_page_size=5)
    warm = await scan(dataclasses.replace(cfg, endpoint_url=proxy.url))
    assert (warm["queued"], warm["listed"]) == (0, 40)
    assert hold.hits == 4 and not hold.timed_out
    # One discovery page; the folder's sequential listing is 40 / 5 = 8 pages; at most
    # one request more per range.
    assert warm["api_calls"]["ListObjectsV2"] - 1 <= 8 + 8


# -- truncation and fan-out items ------------------------------------------------------


async def test_truncated_runs_record_each_ranges_progress_and_cover_every_key(
    env: MotoEnv, bucket: str, queue_url: str, shard_reads: str
) -> None:
    keys = keys_of("f", [f"{i:03d}.csv" for i in range(40)])
    env.put_many(bucket, keys)
    cfg = config(env, bucket, queue_url, shard_max_files=10)
    await scan(cfg)
    env.bodies(queue_url)
    env.put_many(bucket, keys, body=b"changed\n")  # every range changed
    small = dataclasses.replace(cfg, list_page_size=2)

    first = await scan_with_budget(small, candidates=6)
    assert first["truncated"] is True
    cursor = env.state(bucket, runs_key(SP, P, "cursor.json"))
    assert cursor is not None
    todo = cursor["cursor"]["todo"]["f"]
    assert todo and all(set(t) <= {"after", "until", "whole"} for t in todo)
    # What is left starts after a key the run handled; every key before it is recorded.
    first_left = todo[0]["after"]
    assert first_left is not None and first_left in keys
    assert {k for k in keys if k <= first_left} <= set(recorded(env, bucket, "f", cap=10))

    done = await run_until_complete(env, small, queue_url, candidates=6)
    assert done.summaries[-1]["truncated"] is False
    assert set(done.sent) == set(keys) and set(done.sent.values()) == {1}
    assert env.state(bucket, runs_key(SP, P, "cursor.json")) is None
    assert recorded(env, bucket, "f", cap=10) == {
        k: env.s3.head_object(Bucket=bucket, Key=k)["ETag"].strip('"') for k in keys
    }


async def test_a_listing_held_for_its_fingerprint_at_the_deadline_still_progresses(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    """Every file of a folder changed; its shard read by its head holds the listing's
    pages for the fingerprint; every run is cut before the listing ends. The next run
    reads that shard whole instead, so its pages stream and every run moves on."""
    keys = keys_of("f", [f"{i:03d}.csv" for i in range(60)])
    env.put_many(bucket, keys)
    cfg = config(env, bucket, queue_url, shard_max_files=10_000)
    await scan(cfg)
    env.bodies(queue_url)
    assert (env.state(bucket, shard_key(SP, P, "f")) or {}).get("version") == 2
    env.put_many(bucket, keys, body=b"changed\n")
    slow = dataclasses.replace(cfg, list_page_size=3, endpoint_url=proxy.url)

    sent: Counter[str] = Counter()
    for _ in range(30):
        # The deadline comes once the run has made 6 listing requests (the folder
        # discovery's and 5 pages of the folder): never the folder's end.
        start = proxy.counts["ListObjectsV2"]

        def remaining(start: int = start) -> float:
            return 0.0 if proxy.counts["ListObjectsV2"] - start >= 6 else 3600.0

        run = await scan(slow, deadline=Deadline(remaining, margin=1.0))
        sent.update(sent_now := Counter(b["key"] for b in env.bodies(queue_url)))
        if not run["truncated"]:
            break
    else:
        raise AssertionError(f"not covered in 30 runs: {len(sent)} of {len(keys)} sent")
    assert set(sent) == set(keys) and set(sent.values()) == {1}, sent_now


async def test_fan_out_items_continue_where_a_child_before_stopped(
    env: MotoEnv, bucket: str, queue_url: str, shard_reads: str
) -> None:
    """A child cut short by the deadline leaves each unfinished item's progress; the
    next child given the item continues it, then removes the progress."""
    keys = keys_of("f", [f"{i:03d}.csv" for i in range(40)])
    env.put_many(bucket, keys)
    cfg = config(env, bucket, queue_url, shard_max_files=20, list_page_size=3)
    await scan(dataclasses.replace(cfg, dry_run=True))  # nothing recorded yet

    item = [Job("f")]
    sent: Counter[str] = Counter()
    for runs in range(1, 30):  # noqa: B007 (read after the loop)
        stats = RunStats()
        run = await scan(cfg, stats=stats, deadline=candidate_budget(stats, 9), items=item)
        sent.update(b["key"] for b in env.bodies(queue_url))
        progress = env.state(bucket, item_key(SP, P, item_id(item[0])))
        assert (progress is None) == (not run["truncated"])
        if not run["truncated"]:
            break
    assert runs > 2
    assert set(sent) == set(keys) and set(sent.values()) == {1}

    # Now split: the plan gives one item per range, each a child of its own.
    changed = keys[5::7]
    env.put_many(bucket, changed, body=b"v2\n")
    plan = [Job("f", s["after"], s["until"]) for s in _spans(index(env, bucket, "f"))]
    assert len(plan) >= 3
    sent.clear()
    for job in plan:
        for _ in range(30):
            stats = RunStats()
            run = await scan(cfg, stats=stats, deadline=candidate_budget(stats, 4), items=[job])
            if not run["truncated"]:
                break
    sent.update(b["key"] for b in env.bodies(queue_url))
    assert sent == Counter(changed)


def _spans(doc: dict[str, Any]) -> list[dict[str, str | None]]:
    after: str | None = None
    spans = []
    for ref in doc["ranges"]:
        spans.append({"after": after, "until": ref["until"]})
        after = ref["until"]
    return spans


def test_the_plan_gives_one_item_per_range(
    env: MotoEnv, bucket: str, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.put_many(bucket, keys_of("big", [f"{i}.csv" for i in range(6)]))
    env.put_many(bucket, keys_of("small", ["a.csv"]))
    env.set_variables(
        monkeypatch, bucket, queue_url, STATE_LAYOUT="folders", SHARD_MAX_FILES=str(MAX)
    )
    assert lambda_handler({}, Context())["queued"] == 7
    env.bodies(queue_url)
    result = lambda_handler({"action": "plan"}, Context())
    assert (result["folders"], result["items"]) == (2, 4)
    body = env.s3.get_object(Bucket=bucket, Key=result["key"])["Body"].read()
    items = json.loads(body)
    spans = _spans(index(env, bucket, "big"))
    assert items == [{"folder": "big", **s} for s in spans] + [{"folder": "small"}]

    env.put_many(bucket, keys_of("big", ["0.csv", "5.csv"]), body=b"v2\n")
    child = lambda_handler({"Items": items[:1], "BatchInput": {}}, Context())
    assert (child["statusCode"], child["queued"]) == (200, 1)  # only the first range's
    assert [b["key"] for b in env.bodies(queue_url)] == keys_of("big", ["0.csv"])


class Context:
    def get_remaining_time_in_millis(self) -> int:
        return 600_000


async def test_a_change_in_one_range_writes_that_range_and_the_index_only(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    keys = keys_of("f", [f"{i}.csv" for i in range(8)])  # four ranges of two
    env.put_many(bucket, keys)
    cfg = config(env, bucket, queue_url)
    await scan(cfg)
    before = {
        o["Key"]: o["ETag"]
        for o in env.s3.list_objects_v2(Bucket=bucket, Prefix=ranges_prefix(SP, P, "f"))["Contents"]
    }
    env.put(bucket, keys[5], b"v2\n")  # the third range
    run = await scan(cfg)
    assert (run["queued"], run["updated"]) == (1, 1)
    assert run["state_objects_written"] == 2  # the range shard, and the index's digests
    after = {
        o["Key"]: o["ETag"]
        for o in env.s3.list_objects_v2(Bucket=bucket, Prefix=ranges_prefix(SP, P, "f"))["Contents"]
    }
    changed = [k for k in before if after.get(k) != before[k]]
    third = range_key(SP, P, "f", index(env, bucket, "f")["ranges"][2]["shard"])
    assert changed == [third] and set(after) == set(before)


async def test_a_folder_named_like_a_ranges_prefix_is_its_own_folder(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """``f``'s ranges live under ``f.ranges/``; a folder literally named ``f.ranges`` has
    its shard at ``f.ranges.json``: neither meets the other."""
    env.put_many(bucket, keys_of("f", [f"{i}.csv" for i in range(6)]))
    env.put_many(bucket, keys_of("f.ranges", ["a.csv", "b.csv"]))
    cfg = config(env, bucket, queue_url)
    assert (await scan(cfg))["queued"] == 8
    assert len(recorded(env, bucket, "f")) == 6
    twin = env.state(bucket, shard_key(SP, P, "f.ranges"))
    assert twin is not None and twin["version"] == 2 and len(twin["files"]) == 2
    assert (await scan(cfg))["state_objects_written"] == 0


async def test_a_split_folder_that_vanished_loses_its_index_and_ranges(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    keys = keys_of("gone", [f"{i}.csv" for i in range(6)])
    env.put_many(bucket, [*keys, f"{P}kept/a.csv"])
    cfg = config(env, bucket, queue_url)
    await scan(cfg)
    assert len(range_objects(env, bucket, "gone")) == 3
    env.s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    run = await scan(cfg)
    assert run["statusCode"] == 200
    assert env.state(bucket, shard_key(SP, P, "gone")) is None
    assert range_objects(env, bucket, "gone") == []
    assert env.state(bucket, shard_key(SP, P, "kept")) is not None
