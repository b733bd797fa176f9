"""Nothing lost, nothing doubled: the delivery promise under injected faults.

Every test runs the real scanner (aiobotocore) through the fault proxy in front of moto,
then checks the real outcome: messages drained from the queue, the state object read
back. The retry figures assume ``max_attempts=3`` (tests/helpers.py ``MotoEnv.config``).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any

import anyio
import pytest

from async_discovery.config import DEFAULT_STATE_KEY
from async_discovery.handler import lambda_handler
from async_discovery.summary import RunStats
from async_discovery.testing.fault_proxy import (
    Drop,
    Exclusive,
    FailEntries,
    FaultProxy,
    Hold,
    Latency,
    ProxiedRequest,
    S3Error,
    SqsError,
)

from .helpers import MotoEnv, RequestClock, scan

ATTEMPTS = 3  # MotoEnv.config's max_attempts


# -- helpers -------------------------------------------------------------------------


def seed(env: MotoEnv, bucket: str, folders: int, per_folder: int) -> dict[str, str]:
    """Put ``folders`` x ``per_folder`` candidates (plus ignored objects); key -> ETag."""
    keys = {
        f"incoming/f{f}/file-{i:02d}.csv": f"f{f},{i}\n"
        for f in range(folders)
        for i in range(per_folder)
    }
    etags = {key: env.put(bucket, key, body) for key, body in keys.items()}
    env.put(bucket, "incoming/top.csv")  # top level: ignored
    env.put(bucket, "incoming/f0/notes.txt")  # not a CSV: ignored
    return etags


def state_files(env: MotoEnv, bucket: str) -> dict[str, str]:
    """The state's files as key -> ETag ({} when there is no state object)."""
    doc = env.state(bucket)
    return {} if doc is None else {k: v["etag"] for k, v in doc["files"].items()}


def sent(env: MotoEnv, queue_url: str) -> list[tuple[str, str]]:
    """Drain the queue: the (key, ETag) of every message, in no particular order."""
    return [(b["key"], b["etag"]) for b in env.bodies(queue_url)]


def entry_key(entry: Any) -> str:
    """The S3 key inside one SendMessageBatch request entry."""
    return str(json.loads(entry["MessageBody"])["key"])


def batch_keys(request: ProxiedRequest) -> list[str]:
    """The S3 keys a SendMessageBatch request carries."""
    doc = request.json()
    return [entry_key(e) for e in doc["Entries"]] if isinstance(doc, dict) else []


def batches(proxy: FaultProxy) -> list[list[str]]:
    """Every SendMessageBatch the proxy received, as lists of keys."""
    return [batch_keys(r) for r in proxy.requests if r.operation == "SendMessageBatch"]


def is_state(request: ProxiedRequest, bucket: str) -> bool:
    return request.bucket == bucket and request.key == DEFAULT_STATE_KEY


def listing_of(prefix: str) -> Any:
    return lambda r: r.query.get("prefix") == prefix


def once_each(pairs: Iterable[tuple[str, str]]) -> bool:
    counts = Counter(pairs)
    return all(n == 1 for n in counts.values())


# -- retry policy --------------------------------------------------------------------


async def test_botocore_makes_exactly_max_attempts_per_call(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    proxy.inject(S3Error("InternalError", 500), "GetObject")
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert summary["statusCode"] == 500
    assert "InternalError" in summary["error"]
    # MAX_ATTEMPTS counts every attempt, the first included (botocore total_max_attempts).
    assert proxy.counts["GetObject"] == ATTEMPTS
    assert proxy.counts["ListObjectsV2"] == 0
    proxy.reset_counts()
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url, max_attempts=1))
    assert summary["statusCode"] == 500
    assert proxy.counts["GetObject"] == 1


async def test_read_timeout_is_retried(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    proxy.inject(Latency(1.5), "GetObject", times=1)
    config = env.config(bucket, queue_url, endpoint_url=proxy.url, read_timeout=0.3)
    summary = await scan(config)
    assert (summary["statusCode"], summary["queued"]) == (200, 1)
    assert proxy.counts["GetObject"] == 2
    assert sent(env, queue_url) == [
        ("incoming/a/1.csv", state_files(env, bucket)["incoming/a/1.csv"])
    ]


async def test_adaptive_mode_retries_throttling(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    etags = seed(env, bucket, 2, 3)
    proxy.inject(S3Error.slow_down(), "ListObjectsV2", times=1)
    config = env.config(bucket, queue_url, endpoint_url=proxy.url, retry_mode="adaptive")
    summary = await scan(config)
    assert (summary["statusCode"], summary["queued"]) == (200, 6)
    assert state_files(env, bucket) == etags
    assert proxy.injected["ListObjectsV2"] == 1
    assert proxy.counts["ListObjectsV2"] == proxy.forwarded["ListObjectsV2"] + 1


async def test_dropped_send_is_resent_by_botocore(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """SQS took the batch but the answer was lost: at-least-once, the duplicates counted."""
    etags = seed(env, bucket, 1, 15)
    proxy.inject(Drop(after_forward=True), "SendMessageBatch", times=1)
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (summary["statusCode"], summary["queued"], summary["errors"]) == (200, 15, 0)
    messages = sent(env, queue_url)
    dropped = batches(proxy)[0]
    duplicates = len(messages) - len(set(messages))
    assert set(messages) == set(etags.items())
    assert duplicates == len(dropped)  # the dropped batch, sent twice
    assert state_files(env, bucket) == etags


# -- 1. a poison file ----------------------------------------------------------------


async def test_poison_file_fails_its_batch_and_the_next_run_queues_exactly_the_missing(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    etags = seed(env, bucket, 3, 12)
    poison = "incoming/f1/file-05.csv"
    rule = proxy.inject(
        SqsError("InternalError", 500, "injected", "InternalError"),
        "SendMessageBatch",
        when=lambda r: poison in batch_keys(r),
    )
    # Through the CLI in a subprocess: exit status 3 for a 207.
    child_env = {
        **os.environ,
        "S3_SOURCE_BUCKET": bucket,
        "S3_PREFIX": "incoming",
        "SQS_QUEUE_URL": queue_url,
        "MAX_ATTEMPTS": str(ATTEMPTS),
    }
    result = await anyio.run_process(
        [sys.executable, "-m", "async_discovery", "scan", "--endpoint-url", proxy.url],
        env=child_env,
        check=False,
    )
    first = json.loads(result.stdout)
    assert result.returncode == 3, result.stderr.decode()[-2000:]
    poisoned = {key for keys in batches(proxy) if poison in keys for key in keys}
    assert poison in poisoned
    assert 1 <= len(poisoned) <= 10
    # One batch held the poison; botocore tried it ATTEMPTS times, the scanner no more.
    assert rule.hits == ATTEMPTS
    assert (first["statusCode"], first["errors"]) == (207, len(poisoned))
    assert first["queued"] == len(etags) - len(poisoned)
    good = {k: v for k, v in etags.items() if k not in poisoned}
    assert state_files(env, bucket) == good
    messages = sent(env, queue_url)
    assert once_each(messages) and set(messages) == set(good.items())

    proxy.clear()
    second = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (second["statusCode"], second["queued"], second["errors"]) == (200, len(poisoned), 0)
    assert sorted(sent(env, queue_url)) == sorted((k, etags[k]) for k in poisoned)
    assert state_files(env, bucket) == etags

    third = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (third["statusCode"], third["queued"], third["skipped"]) == (200, 0, len(etags))
    assert sent(env, queue_url) == []


# -- 2. per-entry failures -----------------------------------------------------------


def fail_first_time(targets: set[str]) -> Any:
    """An entry selector failing each target once (the first time it is sent)."""
    failed: set[str] = set()

    def select(entry: Any) -> bool:
        key = entry_key(entry)
        if key in targets and key not in failed:
            failed.add(key)
            return True
        return False

    return select


async def test_failed_entries_are_resent_alone(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    etags = seed(env, bucket, 1, 25)
    targets = {"incoming/f0/file-03.csv", "incoming/f0/file-17.csv"}
    proxy.inject(
        FailEntries(fail_first_time(targets), "InternalError", sender_fault=False),
        "SendMessageBatch",
    )
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (summary["statusCode"], summary["queued"], summary["errors"]) == (200, 25, 0)
    sends = batches(proxy)
    # Each target went out twice; every re-send held failed entries only.
    for target in targets:
        holding = [b for b in sends if target in b]
        assert len(holding) == 2
        assert len(holding[0]) == 10  # first sent in a full batch (one page, one worker)
        assert set(holding[1]) <= targets
    assert sum(len(b) for b in sends) == 25 + len(targets)
    messages = sent(env, queue_url)
    assert once_each(messages) and set(messages) == set(etags.items())
    assert state_files(env, bucket) == etags


async def test_sender_fault_entries_are_not_resent(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    etags = seed(env, bucket, 1, 25)
    targets = {"incoming/f0/file-03.csv", "incoming/f0/file-17.csv"}
    proxy.inject(
        FailEntries(lambda e: entry_key(e) in targets, "InvalidParameterValue", sender_fault=True),
        "SendMessageBatch",
    )
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (summary["statusCode"], summary["queued"], summary["errors"]) == (207, 23, 2)
    sends = batches(proxy)
    assert len(sends) == 3  # 25 entries in batches of 10: no re-send
    assert all(sum(t in b for b in sends) == 1 for t in targets)
    good = {k: v for k, v in etags.items() if k not in targets}
    assert state_files(env, bucket) == good
    messages = sent(env, queue_url)
    assert once_each(messages) and set(messages) == set(good.items())
    proxy.clear()
    again = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (again["statusCode"], again["queued"]) == (200, 2)
    assert sorted(sent(env, queue_url)) == sorted((t, etags[t]) for t in targets)


# -- 3. listing faults ---------------------------------------------------------------


async def test_listing_throttling_is_retried_transparently(
    proxy: FaultProxy, env: MotoEnv, queue_url: str
) -> None:
    clean_bucket, faulty_bucket = env.new_bucket(), env.new_bucket()
    clean_queue = env.new_queue()
    etags = seed(env, clean_bucket, 3, 5)
    assert seed(env, faulty_bucket, 3, 5) == {k: v for k, v in etags.items()}

    clean = await scan(env.config(clean_bucket, clean_queue, endpoint_url=proxy.url))
    clean_listings = proxy.counts["ListObjectsV2"]
    proxy.reset_counts()
    proxy.inject(S3Error.slow_down(), "ListObjectsV2", when=listing_of("incoming/f1/"), times=2)
    proxy.inject(
        S3Error("InternalError", 500), "ListObjectsV2", when=listing_of("incoming/"), times=1
    )
    faulty = await scan(env.config(faulty_bucket, queue_url, endpoint_url=proxy.url))

    same = ("statusCode", "queued", "skipped", "errors", "listed", "candidates", "ignored")
    assert {k: faulty[k] for k in same} == {k: clean[k] for k in same}
    assert faulty["statusCode"] == 200 and faulty["queued"] == 15
    assert proxy.counts["ListObjectsV2"] == clean_listings + 3
    assert proxy.injected["ListObjectsV2"] == 3
    assert sorted(sent(env, queue_url)) == sorted(sent(env, clean_queue))
    assert state_files(env, faulty_bucket) == state_files(env, clean_bucket) == etags


async def test_a_subfolder_that_cannot_be_listed_is_left_untouched(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    seed(env, bucket, 3, 4)
    first = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (first["statusCode"], first["queued"]) == (200, 12)
    env.bodies(queue_url)
    before = state_files(env, bucket)
    # Changes in every folder: f1 gets an update, a new file and a deletion.
    changed = {
        "incoming/f0/file-00.csv": env.put(bucket, "incoming/f0/file-00.csv", "changed\n"),
        "incoming/f1/file-00.csv": env.put(bucket, "incoming/f1/file-00.csv", "changed\n"),
        "incoming/f1/new.csv": env.put(bucket, "incoming/f1/new.csv", "new\n"),
        "incoming/f2/new.csv": env.put(bucket, "incoming/f2/new.csv", "new\n"),
    }
    env.s3.delete_object(Bucket=bucket, Key="incoming/f1/file-03.csv")

    proxy.inject(S3Error.slow_down(), "ListObjectsV2", when=listing_of("incoming/f1/"))
    second = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (second["statusCode"], second["queued"], second["errors"]) == (207, 2, 0)
    assert second["folder_errors"] == 1
    assert proxy.injected["ListObjectsV2"] == ATTEMPTS
    outside_f1 = {k: v for k, v in changed.items() if not k.startswith("incoming/f1/")}
    assert sorted(sent(env, queue_url)) == sorted(outside_f1.items())
    after = state_files(env, bucket)
    # f1 untouched: old ETag kept, new file absent, the deleted file not pruned.
    assert {k: v for k, v in after.items() if k.startswith("incoming/f1/")} == {
        k: v for k, v in before.items() if k.startswith("incoming/f1/")
    }
    assert after == {**before, **outside_f1}

    proxy.clear()
    third = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (third["statusCode"], third["queued"], third["pruned"]) == (200, 2, 1)
    f1_changes = {k: v for k, v in changed.items() if k.startswith("incoming/f1/")}
    assert sorted(sent(env, queue_url)) == sorted(f1_changes.items())
    final = {**before, **changed}
    del final["incoming/f1/file-03.csv"]
    assert state_files(env, bucket) == final


# -- 4. overlapping runs -------------------------------------------------------------


@pytest.mark.parametrize("runs", [2, pytest.param(5, marks=pytest.mark.slow)])
async def test_overlapping_runs_lose_nothing(
    runs: int, proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    seed(env, bucket, 3, 6)
    assert (await scan(env.config(bucket, queue_url, endpoint_url=proxy.url)))["queued"] == 18
    env.bodies(queue_url)
    # N changed files: 12 new, 3 updated.
    changed = {
        **{f"incoming/f{i % 3}/late-{i}.csv": f"late {i}\n" for i in range(12)},
        **{f"incoming/f{i}/file-00.csv": f"updated {i}\n" for i in range(3)},
    }
    expected = {**state_files(env, bucket)}
    for key, body in changed.items():
        expected[key] = env.put(bucket, key, body)
    n = len(changed)

    # Every run reads the same state (held until all have asked) and lists slowly;
    # the state write is made atomic as on S3 (moto's check-then-write is not locked).
    hold = proxy.inject(
        Hold(runs, timeout=20), "GetObject", when=lambda r: is_state(r, bucket), times=runs
    )
    proxy.inject(Exclusive(), "PutObject", when=lambda r: is_state(r, bucket))
    proxy.inject(Latency(0.05), "ListObjectsV2")
    stats = [RunStats() for _ in range(runs)]
    summaries: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        config = env.config(bucket, queue_url, endpoint_url=proxy.url, state_write_attempts=8)
        summaries.append(await scan(config, stats=stats[i]))

    async with anyio.create_task_group() as tg:
        for i in range(runs):
            tg.start_soon(one, i)

    assert not hold.timed_out and hold.hits == runs
    assert [s["statusCode"] for s in summaries] == [200] * runs
    messages = sent(env, queue_url)
    duplicates = len(messages) - len(set(messages))
    assert set(messages) == {(k, expected[k]) for k in changed}
    assert n <= len(messages) <= n * runs
    # All runs loaded the same state, so each sent every changed file: N x runs.
    assert duplicates == n * (runs - 1)
    conflicts = sum(s.state_write_attempts for s in stats) - runs
    assert conflicts >= runs - 1  # every run but the first had to reload and merge
    assert all(s.state_written for s in stats)
    assert state_files(env, bucket) == expected
    print(
        f"\n{runs} overlapping runs: N={n}, messages={len(messages)}, "
        f"duplicates={duplicates}, state-write conflicts={conflicts}"
    )

    proxy.clear()
    after = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (after["statusCode"], after["queued"], after["skipped"]) == (200, 0, len(expected))
    assert sent(env, queue_url) == []


# -- 5. the state write fails after sending ------------------------------------------


async def test_state_write_failure_is_500_and_the_next_run_resends(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    etags = seed(env, bucket, 2, 6)
    rule = proxy.inject(
        S3Error("InternalError", 500), "PutObject", when=lambda r: is_state(r, bucket)
    )
    first = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert first["statusCode"] == 500
    assert first["error"].startswith("state write failed")
    assert f"s3://{bucket}/{DEFAULT_STATE_KEY}" in first["error"]
    assert "InternalError" in first["error"]
    assert rule.hits == ATTEMPTS
    assert env.state(bucket) is None
    first_messages = sent(env, queue_url)
    assert once_each(first_messages) and set(first_messages) == set(etags.items())

    proxy.clear()
    second = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (second["statusCode"], second["queued"]) == (200, 12)
    second_messages = sent(env, queue_url)
    assert once_each(second_messages) and set(second_messages) == set(etags.items())
    assert state_files(env, bucket) == etags
    third = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (third["queued"], third["skipped"]) == (0, 12)
    assert sent(env, queue_url) == []


async def test_state_write_dropped_after_landing_is_resolved_by_reload(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """The write reached S3 but its answer was lost: the retry meets its own write (412)."""
    etags = seed(env, bucket, 2, 6)
    proxy.inject(Drop(after_forward=True), "PutObject", when=lambda r: is_state(r, bucket), times=1)
    stats = RunStats()
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url), stats=stats)
    assert (summary["statusCode"], summary["queued"]) == (200, 12)
    assert stats.state_write_attempts == 2  # a conflict with itself, reloaded and merged
    messages = sent(env, queue_url)
    assert once_each(messages) and set(messages) == set(etags.items())
    assert state_files(env, bucket) == etags


# -- 6. the Lambda deadline ----------------------------------------------------------


def listing_clock(seconds: float, proxy: FaultProxy) -> RequestClock:
    """The invocation's time runs out as it lists: 0.15 s per ``ListObjectsV2``."""
    return RequestClock(seconds, proxy, 0.15, "ListObjectsV2")


def test_lambda_deadline_truncates_and_repeated_runs_finish(
    threaded_proxy: FaultProxy,
    env: MotoEnv,
    bucket: str,
    queue_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    etags = seed(env, bucket, 6, 3)
    for name, value in {
        "S3_SOURCE_BUCKET": bucket,
        "S3_PREFIX": "incoming/",
        "SQS_QUEUE_URL": queue_url,
        "AWS_ENDPOINT_URL": threaded_proxy.url,
        "LIST_CONCURRENCY": "1",
        "DEADLINE_MARGIN_SECONDS": "1",
        "MAX_ATTEMPTS": str(ATTEMPTS),
    }.items():
        monkeypatch.setenv(name, value)
    # Each listing costs 0.15 s of the invocation, which has 0.8 s before the margin: six
    # listings (the discovery's and five folders') per run. A page listed after the
    # deadline is dropped, listed again next run.
    summaries: list[dict[str, Any]] = []
    all_messages: list[tuple[str, str]] = []
    for _ in range(20):  # a run may make no progress: its only page came after the deadline
        summary = lambda_handler({}, listing_clock(1.8, threaded_proxy))
        summaries.append(summary)
        all_messages.extend(sent(env, queue_url))
        assert summary["statusCode"] == 200
        # State holds exactly what was sent so far: written for what it sent.
        assert state_files(env, bucket) == dict(all_messages)
        if not summary["truncated"]:
            break
    truncated = [s["truncated"] for s in summaries]
    assert truncated[0] and not truncated[-1]
    assert len(summaries) >= 2
    assert once_each(all_messages) and dict(all_messages) == etags
    assert sum(s["queued"] for s in summaries) == len(etags)
    assert not (env.state(bucket) or {}).get("cursors")
    threaded_proxy.clear()
    after = lambda_handler({}, listing_clock(30.0, threaded_proxy))
    assert (after["statusCode"], after["queued"], after["truncated"]) == (200, 0, False)


# -- 7. bad input --------------------------------------------------------------------

_STATE_NAME = "s3://{bucket}/" + DEFAULT_STATE_KEY


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"version": 1, "files": {', "is not valid JSON"),
        (b"\xff\xfe not utf-8", "is not valid JSON"),
        (b"[]", "is not a JSON object"),
        (b'{"version": 1, "files": []}', "has no 'files' object"),
        (b'{"version": 2, "files": {}}', "has version 2"),
        (
            b'{"version": 1, "files": {"incoming/f0/file-00.csv": {"status": "queued"}}}',
            "is not a file record",
        ),
    ],
)
async def test_unusable_state_is_500_and_left_unchanged(
    raw: bytes, message: str, proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    etags = seed(env, bucket, 1, 3)
    env.s3.put_object(Bucket=bucket, Key=DEFAULT_STATE_KEY, Body=raw)
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert summary["statusCode"] == 500
    assert _STATE_NAME.format(bucket=bucket) in summary["error"]
    assert message in summary["error"]
    assert env.state_bytes(bucket) == raw
    assert sent(env, queue_url) == []
    assert dict(proxy.counts) == {"GetObject": 1}  # nothing listed, sent or written
    # Nothing lost: once the object is fixed (here removed), every file goes out.
    env.s3.delete_object(Bucket=bucket, Key=DEFAULT_STATE_KEY)
    fixed = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (fixed["statusCode"], fixed["queued"]) == (200, 3)
    assert sorted(sent(env, queue_url)) == sorted(etags.items())


async def test_state_over_the_size_cap_is_500_and_left_unchanged(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    seed(env, bucket, 1, 3)
    first = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert first["queued"] == 3
    env.bodies(queue_url)
    env.put(bucket, "incoming/f0/more.csv")
    raw = env.state_bytes(bucket)
    assert raw is not None and len(raw) > 200
    proxy.reset_counts()
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url, state_max_bytes=200))
    assert summary["statusCode"] == 500
    assert _STATE_NAME.format(bucket=bucket) in summary["error"]
    assert "STATE_MAX_BYTES=200" in summary["error"]
    assert env.state_bytes(bucket) == raw
    assert sent(env, queue_url) == []
    assert set(proxy.counts) == {"GetObject"}


async def test_missing_source_bucket(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    config = env.config(
        "no-such-source-bucket", queue_url, endpoint_url=proxy.url, state_bucket=bucket
    )
    summary = await scan(config)
    assert summary["statusCode"] == 500
    assert "source bucket 'no-such-source-bucket' does not exist" in summary["error"]
    assert env.state_bytes(bucket) is None
    assert proxy.counts["SendMessageBatch"] == 0 and proxy.counts["PutObject"] == 0


async def test_missing_state_bucket(
    proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    seed(env, bucket, 1, 3)
    config = env.config(bucket, queue_url, endpoint_url=proxy.url, state_bucket="no-such-state")
    summary = await scan(config)
    assert summary["statusCode"] == 500
    assert "state bucket 'no-such-state' does not exist" in summary["error"]
    assert sent(env, queue_url) == []
    assert env.state_bytes(bucket) is None
    assert dict(proxy.counts) == {"GetObject": 1}


@pytest.mark.parametrize("how", ["moto", "sqs-shaped"])
async def test_queue_that_does_not_exist(
    how: str, proxy: FaultProxy, env: MotoEnv, bucket: str
) -> None:
    etags = seed(env, bucket, 2, 8)
    queue_url = f"{env.endpoint}/123456789012/no-such-queue"
    if how == "sqs-shaped":
        # What real SQS sends: JSON error plus x-amzn-query-error (botocore's code source).
        queue_url = env.new_queue()
        proxy.inject(SqsError.queue_does_not_exist(), "SendMessageBatch")
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert summary["statusCode"] == 500
    assert f"queue {queue_url} does not exist" in summary["error"]
    assert env.state_bytes(bucket) is None
    assert proxy.counts["PutObject"] == 0
    # Not retried batch after batch: the first refusal stops the sending.
    assert 1 <= proxy.counts["SendMessageBatch"] <= 2 * 8
    if how == "sqs-shaped":
        assert sent(env, queue_url) == []
        proxy.clear()
        again = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
        assert (again["statusCode"], again["queued"]) == (200, len(etags))


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"S3_PREFIX": "/incoming"}, ["S3_PREFIX"]),
        ({"S3_PREFIX": "incoming//a"}, ["S3_PREFIX"]),
        ({"SKIP_FOLDERS": "logs,a/b"}, ["SKIP_FOLDERS"]),
        (
            {"S3_PREFIX": "/x", "SKIP_FOLDERS": "a/b", "SQS_QUEUE_URL": ""},
            ["S3_PREFIX", "SKIP_FOLDERS", "SQS_QUEUE_URL"],
        ),
    ],
)
def test_invalid_prefix_or_skip_list(
    variables: dict[str, str],
    named: list[str],
    threaded_proxy: FaultProxy,
    env: MotoEnv,
    bucket: str,
    queue_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(env, bucket, 1, 2)
    base = {
        "S3_SOURCE_BUCKET": bucket,
        "SQS_QUEUE_URL": queue_url,
        "AWS_ENDPOINT_URL": threaded_proxy.url,
    }
    for name, value in {**base, **variables}.items():
        monkeypatch.setenv(name, value)
    summary = lambda_handler({}, listing_clock(30.0, threaded_proxy))
    assert summary["statusCode"] == 500
    for name in named:
        assert name in summary["error"]
    assert len(summary["problems"]) == len(named)
    assert not threaded_proxy.counts  # nothing listed, sent or written
    assert env.state_bytes(bucket) is None
    assert sent(env, queue_url) == []
