"""Interrupting a CLI scan: a real ``async-discovery scan`` process against moto through
the fault proxy (a delay on every listing page), stopped by SIGINT or SIGTERM while it
sends. The first signal stops it as the deadline does: no new page, the sends in flight
finish, the state records exactly what SQS accepted, one line on stderr, the summary
with ``truncated: true``, exit status 130 (SIGINT) or 143 (SIGTERM); the rerun sends
each remaining file once and none twice. A second signal aborts at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from async_discovery.layout import state_prefix
from async_discovery.settings import DEFAULT_STATE_KEY
from async_discovery.testing.fault_proxy import FaultProxy, Latency

from .helpers import SCANNER_VARIABLES, MotoEnv

FOLDERS, PER_FOLDER = 2, 100
PAGE = 10  # keys per listing page: a signal lands between pages


def _files(env: MotoEnv, bucket: str) -> set[str]:
    keys = {f"incoming/f{f}/{n:04d}.csv" for f in range(FOLDERS) for n in range(PER_FOLDER)}
    env.put_many(bucket, sorted(keys))
    return keys


def _start(
    env: MotoEnv, bucket: str, queue_url: str, endpoint: str, layout: str
) -> subprocess.Popen[str]:
    variables = {k: v for k, v in os.environ.items() if k not in SCANNER_VARIABLES}
    variables.update(
        S3_SOURCE_BUCKET=bucket,
        S3_PREFIX="incoming/",
        SQS_QUEUE_URL=queue_url,
        STATE_LAYOUT=layout,
        LIST_PAGE_SIZE=str(PAGE),
        LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "async_discovery", "scan", "--endpoint-url", endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=variables,
    )


def _waiting(env: MotoEnv, queue_url: str) -> int:
    attributes = env.sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _when_sending(env: MotoEnv, queue_url: str, proc: subprocess.Popen[str], at_least: int) -> None:
    """Return once ``at_least`` messages are on the queue (the run is mid-way)."""
    until = time.monotonic() + 60
    while _waiting(env, queue_url) < at_least:
        assert proc.poll() is None, "the scan ended before it was interrupted"
        assert time.monotonic() < until, "no message reached the queue"
        time.sleep(0.05)


def _sent(env: MotoEnv, queue_url: str) -> list[str]:
    """Drain the queue: the key of every message, in arrival order."""
    return [json.loads(m["Body"])["key"] for m in env.receive_all(queue_url)]


def _recorded(env: MotoEnv, bucket: str, layout: str) -> set[str]:
    """The keys the state records, whatever the layout."""
    if layout == "single":
        state = env.state(bucket)
        return set(state["files"]) if state else set()
    keys: set[str] = set()
    head = state_prefix(DEFAULT_STATE_KEY) + "folders/"
    listing = env.s3.list_objects_v2(Bucket=bucket, Prefix=head)
    for item in listing.get("Contents", []):
        shard = env.state(bucket, item["Key"])
        assert shard is not None
        keys.update(shard["files"])
    return keys


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sent", "status", "layout"),
    [(signal.SIGINT, 130, "single"), (signal.SIGTERM, 143, "folders")],
    ids=["SIGINT-single", "SIGTERM-folders"],
)
def test_a_signal_stops_the_scan_and_records_what_sqs_accepted(
    env: MotoEnv,
    bucket: str,
    queue_url: str,
    threaded_proxy: FaultProxy,
    sent: signal.Signals,
    status: int,
    layout: str,
) -> None:
    files = _files(env, bucket)
    threaded_proxy.inject(Latency(0.15), "ListObjectsV2")
    proc = _start(env, bucket, queue_url, threaded_proxy.url, layout)
    _when_sending(env, queue_url, proc, at_least=20)
    proc.send_signal(sent)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == status, err
    summary: dict[str, Any] = json.loads(out)
    assert summary["truncated"] is True and summary["statusCode"] == 200
    said = [line for line in err.splitlines() if line.startswith("async-discovery scan:")]
    assert len(said) == 1 and said[0].startswith(f"async-discovery scan: {sent.name} received")
    first = _sent(env, queue_url)
    assert 20 <= len(first) < len(files)  # stopped mid-way
    assert summary["queued"] == len(first)
    # The state records exactly what SQS accepted: no more (a file never sent would be
    # lost), no less (the next run would send it twice).
    assert _recorded(env, bucket, layout) == set(first)

    threaded_proxy.clear()
    rerun = _start(env, bucket, queue_url, threaded_proxy.url, layout)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    second = _sent(env, queue_url)
    assert json.loads(out)["queued"] == len(second)
    every = first + second
    assert len(every) == len(set(every)) == len(files)  # each file once, none twice
    assert set(every) == files


@pytest.mark.slow
def test_a_second_signal_aborts_at_once(
    env: MotoEnv, bucket: str, queue_url: str, threaded_proxy: FaultProxy
) -> None:
    _files(env, bucket)
    listing = threaded_proxy.inject(Latency(0.15), "ListObjectsV2")
    proc = _start(env, bucket, queue_url, threaded_proxy.url, "single")
    _when_sending(env, queue_url, proc, at_least=10)
    # From now on a listing page takes 6 s: a graceful stop waits for the page in
    # flight; the second signal must not.
    threaded_proxy.inject(Latency(6), "ListObjectsV2")
    hits = listing.hits
    while listing.hits == hits:  # a page request is on its way through the slow rule
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None  # still waiting for the page in flight
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 3
    assert proc.returncode == 130, err
    summary = json.loads(out)
    assert summary["statusCode"] == 500 and summary["truncated"] is True
    assert summary["error"].startswith("aborted by a second SIGINT")
    said = [line for line in err.splitlines() if line.startswith("async-discovery scan:")]
    assert [line.split(":")[1].strip() for line in said] == [
        "SIGINT received",
        "SIGINT received again",
    ]
    assert env.state(bucket) is None  # nothing recorded: the rerun sends it all again
