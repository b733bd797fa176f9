"""``async-discovery listen`` (SPEC "Events"): a process that long-polls an events queue
and handles its batches as the Lambda function would, deleting the handled messages;
on SIGINT/SIGTERM it finishes the batch in hand and exits 0 within a few seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from async_discovery.testing.fault_proxy import FaultProxy, Latency

from .events_support import Notified, notified_bucket
from .helpers import SCANNER_VARIABLES, MotoEnv

STOP_WITHIN = 5.0  # seconds from the signal to the exit


@pytest.fixture
def setup(env: MotoEnv) -> Notified:
    return notified_bucket(env)


@contextmanager
def listening(setup: Notified, endpoint: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    environ = {k: v for k, v in os.environ.items() if k not in SCANNER_VARIABLES}
    environ.update(
        S3_SOURCE_BUCKET=setup.bucket,
        S3_PREFIX="incoming",
        SQS_QUEUE_URL=setup.target_url,
        AWS_ENDPOINT_URL=endpoint,
    )
    command = [sys.executable, "-m", "async_discovery", "listen"]
    proc = subprocess.Popen(
        [*command, "--events-queue-url", setup.events_url, *args],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str], signum: int) -> tuple[int, str, str]:
    """Signal ``proc``; its exit status and output, checking it exits in time."""
    started = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=STOP_WITHIN + 5)
    assert time.monotonic() - started < STOP_WITHIN
    return proc.returncode, out, err


def queue_counts(env: MotoEnv, url: str) -> tuple[int, int]:
    attrs = env.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def test_listen_sends_deletes_the_handled_and_stops_on_sigterm(
    env: MotoEnv, setup: Notified
) -> None:
    """Files put while it listens reach the target queue; the handled messages are
    deleted, a bad one is left for redelivery; SIGTERM during a 20 s long poll exits 0
    at once, with the totals on stdout."""
    with listening(setup, env.endpoint) as proc:
        for key in ("incoming/a/1.csv", "incoming/a/2 x.csv", "incoming/b/3.csv"):
            setup.put(key)
        env.sqs.send_message(QueueUrl=setup.events_url, MessageBody="not json")
        received: list[dict[str, Any]] = []

        def three() -> bool:
            received.extend(env.bodies(setup.target_url))
            return len(received) >= 3

        wait_for(three)
        wait_for(lambda: queue_counts(env, setup.events_url) == (0, 1))
        time.sleep(0.5)  # back in its long poll
        code, out, err = stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert sorted(b["key"] for b in received) == [
        "incoming/a/1.csv",
        "incoming/a/2 x.csv",
        "incoming/b/3.csv",
    ]
    totals = json.loads(out)
    assert totals["stopped_by"] == "SIGTERM"
    assert (totals["queued"], totals["failed_records"]) == (3, 1)
    assert totals["records"] == 5  # with the test event
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    batches = [doc for doc in logs if doc.get("event") == "events_summary"]
    assert len(batches) == totals["batches"] == len([d for d in logs if "_aws" in d])


def test_sigint_finishes_the_batch_in_hand(
    env: MotoEnv, setup: Notified, threaded_proxy: FaultProxy
) -> None:
    """A signal while a batch is being handled (each HeadObject held 1.5 s): the batch
    is finished, sent and deleted, then the process exits 0 without another poll."""
    threaded_proxy.inject(Latency(1.5), "HeadObject")
    with listening(setup, threaded_proxy.url) as proc:
        setup.put("incoming/a/1.csv")
        wait_for(lambda: threaded_proxy.counts["HeadObject"] > 0)
        polls = threaded_proxy.counts["ReceiveMessage"]
        code, out, err = stop(proc, signal.SIGINT)
    assert code == 0, err
    assert [b["key"] for b in env.bodies(setup.target_url)] == ["incoming/a/1.csv"]
    assert queue_counts(env, setup.events_url) == (0, 0)  # handled and deleted
    assert threaded_proxy.counts["ReceiveMessage"] == polls  # no poll after the signal
    assert json.loads(out)["stopped_by"] == "SIGINT"


def test_listen_without_an_events_queue_is_a_usage_error(
    env: MotoEnv, setup: Notified, capsys: pytest.CaptureFixture[str]
) -> None:
    from async_discovery.cli import main

    for name in SCANNER_VARIABLES:
        os.environ.pop(name, None)
    code = main(["listen", "--bucket", setup.bucket, "--queue-url", setup.target_url])
    assert code == 1
    assert "--events-queue-url" in capsys.readouterr().err


def test_listen_on_a_missing_events_queue_exits_1(env: MotoEnv, setup: Notified) -> None:
    missing = setup.events_url + "-missing"
    with listening(Notified(env, setup.bucket, missing, "", setup.target_url), env.endpoint) as p:
        _, err = p.communicate(timeout=30)
    assert p.returncode == 1
    assert "events queue unusable" in err
