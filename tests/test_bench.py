"""Smoke test of ``async-discovery bench``: a tiny run, the JSON's shape and sanity.

Not a timed test: nothing here asserts a speed, only that every figure is there, the
references ran against the same data and the counts add up.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from itertools import pairwise

import pytest

from async_discovery.bench.seed import PREFIX, Layout
from async_discovery.cli import main
from async_discovery.layout import runs_key, shard_key, state_prefix
from async_discovery.summary import RunStats

from .helpers import MotoEnv, scan
from .operator_support import candidate_budget


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_json_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "--files", "50", "--folders", "2", "--reps", "1",
            "--latency-ms", "0", "--json", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["setup"]["files"] == 50
    assert doc["setup"]["moto_patch"] is True
    scenarios = doc["scenarios"]
    expected_new = {"cold": 50, "warm": 0, "incremental": 1}
    for name, new in expected_new.items():
        sc = scenarios[name]
        assert sc["new"] == new
        for kind in ("scanner", "floor", "sequential"):
            run = sc[kind]
            assert run["reps"] == 1
            assert run["wall_s"]["min"] <= run["wall_s"]["median"] <= run["wall_s"]["max"]
            assert run["wall_s"]["median"] > 0
            assert run["cpu_s"]["median"] >= 0
            assert run["peak_rss_mb"]["median"] > 10
            assert run["queued"] == new
        scanner = sc["scanner"]
        assert scanner["status"] == [200]
        # Every reference listed what the scanner listed, from the same bucket.
        assert scanner["listed"] == sc["floor"]["listed"]
        assert sc["sequential"]["listed"] >= scanner["listed"]
        assert math.isfinite(sc["ratio_to_floor"]) and sc["ratio_to_floor"] > 0
        assert math.isfinite(sc["speedup_vs_sequential"]) and sc["speedup_vs_sequential"] > 0
        calls = scanner["api_calls"]
        assert calls["GetObject"] == 1
        assert calls.get("PutObject", 0) == (1 if new else 0)
        assert calls.get("SendMessageBatch", 0) >= math.ceil(new / 10)
        assert sc["sequential"]["api_calls"].get("SendMessage", 0) == new
        assert sc["floor"]["api_calls"].get("SendMessageBatch", 0) == math.ceil(new / 10)
        assert all(v["ok"] for v in sc["api_minimum"].values())
        per = sc["cpu_per_1000_listed"]
        assert 0 < per["run"] < per["total"] and per["excl_startup"] < per["run"]
    startup = scenarios["startup"]
    assert startup["listed"] == 0 and startup["status"] == [200]
    assert 0 < startup["cpu_s"]["median"] < startup["cpu_total_s"]["median"]


def test_bench_subcommand_is_registered() -> None:
    from async_discovery.cli import build_parser

    args = build_parser().parse_args(["bench", "--files", "10", "--sweep"])
    assert args.files == 10 and args.sweep and args.latency_ms == 20.0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_folders_layout_and_state_cost(capsys: pytest.CaptureFixture[str]) -> None:
    """``--state-layout folders``: the scanner reads a shard per listed folder (plus the
    cursor object) and writes only the changed shards, the floor does the same requests;
    ``--state-cost``: a one-file change reads the head of every listed shard, the
    changed one whole, and writes one."""
    code = main(
        [
            "bench",
            "--files", "60", "--folders", "3", "--reps", "1", "--sequential-reps", "0",
            "--latency-ms", "0", "--json", "--no-progress", "--state-layout", "folders",
            "--state-cost", "--state-cost-files", "2000", "--state-cost-folders", "10",
        ]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["setup"]["state_layout"] == "folders"
    # The 1% incremental change (one file) falls in one folder: one shard written.
    expected = {"cold": (60, 3), "warm": (0, 0), "incremental": (1, 1)}
    for name, (new, shards_written) in expected.items():
        sc = doc["scenarios"][name]
        scanner, floor = sc["scanner"], sc["floor"]
        assert scanner["status"] == [200] and scanner["queued"] == new
        assert scanner["listed"] == floor["listed"]
        assert floor["api_calls"]["GetObject"] >= 3  # a shard per listed folder
        assert scanner["api_calls"]["GetObject"] == floor["api_calls"]["GetObject"] + 1
        assert scanner["api_calls"].get("PutObject", 0) == shards_written
        assert floor["api_calls"].get("PutObject", 0) == shards_written
        assert sc["state_objects_written"] == shards_written
        assert all(v["ok"] for v in sc["api_minimum"].values()), sc["api_minimum"]
    cost = doc["state_cost"]
    single, folders = cost["single"], cost["folders"]
    assert single["api_calls"] == {"GetObject": 1, "PutObject": 1}
    # A ranged GetObject per shard (200 entries, over 16 KiB), the changed one whole.
    assert folders["api_calls"] == {"GetObject": 11, "PutObject": 1}
    assert (single["objects_written"], folders["objects_written"]) == (1, 1)
    assert (folders["state_objects_total"], folders["objects_verified"]) == (10, 9)
    shard_bytes = single["bytes_read"] / 10
    assert folders["bytes_read"] == pytest.approx(10 * 16384 + shard_bytes, rel=0.05)
    # One shard of ten written.
    assert folders["bytes_written"] < single["bytes_written"] / 5
    assert single["bytes_written"] >= single["bytes_read"] > 0
    assert cost["ratio"]["bytes_written"] == folders["bytes_written"] / single["bytes_written"]
    # Folders of 200 files: under SHARD_MAX_FILES, key ranges keep them as they were.
    ranged = cost["ranges"]
    assert ranged["api_calls"] == folders["api_calls"]
    assert ranged["state_objects_total"] == 10 and ranged["objects_verified"] == 9


# -- the truncated-run sequence under STATE_LAYOUT=folders -------------------------------

# 400 files in 10 folders; scripts/measure_truncated.py runs the same at 2,000 files.
TRUNCATED_FOLDERS = {**{f"f{i:02d}": 20 for i in range(9)}, "big": 220}
PER_INVOCATION = 60  # candidates one invocation considers before its deadline


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_truncated_runs_under_folders_cover_every_file_once(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """Repeated runs, each cut short by its deadline, over 400 files in 10 folders, one
    of them (220 files) larger than an invocation can finish: the sequence takes at
    least five invocations, sends every file exactly once (none skipped, none twice) and
    leaves every folder's shard complete and no cursor behind."""
    keys = [f"incoming/{f}/{i:04d}.csv" for f, n in TRUNCATED_FOLDERS.items() for i in range(n)]
    env.put_many(bucket, keys)
    config = env.config(
        bucket,
        queue_url,
        state_layout="folders",
        list_page_size=20,
        workers=1,
        list_concurrency=1,
    )
    cursor_key = runs_key(state_prefix(config.state_key), "incoming/", "cursor.json")
    queued: list[int] = []
    big_cut_inside = False  # a run stopped inside the big folder and the next went on
    while True:
        stats = RunStats()
        summary = await scan(config, stats=stats, deadline=candidate_budget(stats, PER_INVOCATION))
        assert summary["statusCode"] == 200, summary
        queued.append(summary["queued"])
        if not summary["truncated"]:
            break
        assert summary["queued"] > 0, "a truncated run made no progress"
        cursor = env.state(bucket, cursor_key)
        assert cursor is not None
        todo = cursor["cursor"]["todo"]
        big_cut_inside |= any(part["after"] is not None for part in todo.get("big", []))
        assert len(queued) < 40, "no complete pass"
    sent = Counter(body["key"] for body in env.bodies(queue_url))
    assert len(queued) >= 5
    assert big_cut_inside
    assert sent == Counter(keys)  # every file, each exactly once
    assert sum(queued) == len(keys)
    assert env.state(bucket, cursor_key) is None
    for folder in TRUNCATED_FOLDERS:
        shard = env.state(bucket, shard_key(state_prefix(config.state_key), "incoming/", folder))
        assert shard is not None
        assert sorted(shard["files"]) == [k for k in keys if k.startswith(f"incoming/{folder}/")]
    print(f"truncated sequence: {len(queued)} invocations, queued per run {queued}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_fanout_sends_what_one_run_sends(capsys: pytest.CaptureFixture[str]) -> None:
    """``--fanout 2``: the plan, two scanner children at once over half the folders each
    and the sum send the same messages as one invocation over the same files, into one
    queue, with API calls (plan and children) within children + 2 of the single run's;
    the children run once more one after another for per-child figures."""
    code = main(
        [
            "bench",
            "--files", "200", "--folders", "8", "--reps", "1", "--sequential-reps", "0",
            "--latency-ms", "0", "--json", "--no-progress", "--state-layout", "folders",
            "--scenarios", "cold", "--fanout", "2",
        ]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sc = doc["scenarios"]["cold"]
    scanner, fanout = sc["scanner"], sc["fanout"]
    assert scanner["messages"] == {**scanner["messages"], "count": 200, "distinct": 200}
    assert fanout["messages"] == scanner["messages"] and fanout["messages_ok"]
    assert fanout["status"] == 200 and fanout["queued"] == 200
    assert fanout["children"] == 2 and len(fanout["per_child"]) == 2
    # Every item the plan wrote (a folder each here) is scanned by exactly one child.
    assert fanout["plan"]["items"] == fanout["plan"]["folders"]
    assert sum(c["items"] for c in fanout["per_child"]) == fanout["plan"]["items"]
    # The children list the folders; the single run also lists the top-level objects.
    top = [k for k in Layout(200, 8).junk_keys() if "/" not in k[len(PREFIX) :]]
    assert top
    assert sum(c["listed"] for c in fanout["per_child"]) == scanner["listed"] - len(top)
    assert all(c["queued"] > 0 and c["wall_s"] > 0 for c in fanout["per_child"])
    used = Counter(fanout["plan"]["api_calls"])
    for child in fanout["per_child"]:
        used.update(child["api_calls"])
    assert dict(sorted(used.items())) == fanout["api_calls"]
    single = sum(scanner["api_calls"].values())
    assert abs(sum(used.values()) - single) <= fanout["children"] + 2
    assert fanout["api_calls_ok"] and fanout["api_calls_bound"] == 4
    assert fanout["wall_s"]["median"] >= fanout["plan"]["wall_s"] + fanout["children_wall_s"]
    serial = fanout["serial"]
    assert serial["messages_ok"] and len(serial["per_child"]) == 2


def test_bench_fanout_needs_the_folders_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--fanout", "2", "--no-progress"]) == 2
    assert "--state-layout folders" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_one_folder_lists_every_key_three_ways(capsys: pytest.CaptureFixture[str]) -> None:
    """``--one-folder``: the warm scanner, the sequential listing and the range floor all
    list the folder's every key; the ranges take one request each (bounds are keys)."""
    code = main(
        [
            "bench", "--one-folder", "--files", "300", "--range-keys", "100", "--reps", "1",
            "--latency-ms", "0", "--json", "--no-progress", "--state-layout", "folders",
        ]
    )  # fmt: skip
    assert code == 0
    of = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["one_folder"]
    assert (of["files"], of["range_count"], of["concurrency"]) == (300, 3, 8)
    for kind in ("scanner", "sequential", "ranges"):
        assert of[kind]["listed"] == 300 and of[kind]["status"] == [200], kind
    assert of["scanner"]["queued"] == 0  # warm: nothing to send
    assert of["ranges"]["api_calls"] == {"ListObjectsV2": 3}
    assert of["sequential"]["api_calls"] == {"ListObjectsV2": 1}
    assert of["startup"]["listed"] == 0
    assert of["scanner_over_ranges"] > 0 and of["sequential_over_scanner"] > 0
    assert 0 < of["cpu_per_1000_listed"]["run"] < of["cpu_per_1000_listed"]["total"]


AWKWARD_KEYS = sorted(
    [f"in/f/{name}" for name in ("a", "a b", "a+b", "a%b", "b", "é", "\U0001f600", "z\x01", "zz")],
    key=lambda k: k.encode(),
)


@pytest.mark.parametrize(
    "bounds",
    [
        [],
        ["in/f/a"],  # a bound equal to a key: listed once, in the range it closes
        ["in/f/", "in/f/a b", "in/f/é"],  # below the first key
        ["in/f/a+", "in/f/b", "in/f/zzz"],  # not keys; the last past every key
        # Every key but the last (one key per range), but for U+0001: moto echoes
        # StartAfter unencoded, which no XML parser reads (S3 encodes it).
        [k for k in AWKWARD_KEYS[:-1] if "\x01" not in k],
    ],
)
@pytest.mark.parametrize("concurrency", [1, 3])
async def test_range_floor_lists_every_key_once(
    env: MotoEnv, bucket: str, bounds: list[str], concurrency: int
) -> None:
    from async_discovery.aws import S3Lister, open_clients
    from async_discovery.bench.listing_refs import list_ranges, list_sequential

    env.put_many(bucket, AWKWARD_KEYS)
    async with open_clients(env.config(bucket, None)) as clients:
        lister = S3Lister(clients.s3, bucket, page_size=2)
        ranges = await list_ranges(lister, "in/f/", bounds, concurrency)
        sequential = await list_sequential(lister, "in/f/")
    assert sequential == {"listed": len(AWKWARD_KEYS), "pages": 5}
    edges = [None, *bounds, None]
    expected = [
        sum(1 for k in AWKWARD_KEYS if (lo is None or k > lo) and (hi is None or k <= hi))
        for lo, hi in pairwise(edges)
    ]
    assert ranges["per_range"] == expected
    assert ranges["listed"] == len(AWKWARD_KEYS)
    assert ranges["ranges"] == len(bounds) + 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_events_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    """``bench --events`` at a tiny size: every part ran, nothing was lost or doubled,
    no batch wrote a state unit twice, listen exited 0 on SIGTERM."""
    code = main(
        [
            "bench", "--events", "--state-layout", "folders", "--latency-ms", "0",
            "--events-files", "40", "--events-rate", "40",
            "--events-backlog", "300", "--events-backlog-folders", "10",
            "--events-reference-records", "20", "--events-loss-files", "60",
            "--events-batch-size", "100",
            "--json", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["events"]
    latency = doc["latency"]
    assert latency["listen_exit"]["exit_status"] == 0
    assert latency["sent_more_than_once"] == 0
    p = latency["put_to_message_s"]
    assert 0 < p["p50"] <= p["p95"] <= p["max"]
    throughput = doc["throughput"]
    for run in (throughput["reference"], throughput["batched"]):
        assert run["files_sent"] == run["backlog"] and run["sent_more_than_once"] == 0
        assert run["batches_writing_a_unit_twice"] == 0
        assert run["state_writes"] <= run["units_touched"]
    assert throughput["reference"]["state_writes"] == throughput["reference"]["backlog"]
    assert throughput["ratio"] is not None and throughput["ratio"] > 0
    dropped = doc["no_loss_dropped"]
    assert dropped["every_file_sent"] and dropped["sent_more_than_once"] == 0
    assert dropped["sent_by_events"] + dropped["sent_by_the_scan"] == dropped["files"]
    assert dropped["sent_by_the_scan"] == dropped["found_by_reconciliation"]
    twice = doc["no_loss_twice"]
    assert twice["every_current_version_sent"] and twice["sent_more_than_once"] == 0
    assert twice["notifications"] >= 2 * (twice["files"] + twice["overwritten"])
