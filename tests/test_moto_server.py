"""``async-discovery moto-server``: the Quick start's local server starts on loopback,
serves S3 and SQS, and carries the bench's queue-counter patch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import boto3
import pytest

from async_discovery.bench import moto_main
from async_discovery.testing.moto_server import free_port, stop_process, wait_for_port


def _listening(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) listening on ``port``."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.fixture
def server(moto_endpoint: str) -> Iterator[tuple[str, int]]:
    """``async-discovery moto-server -p PORT`` (default host) in its own process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "async_discovery", "moto-server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        try:
            wait_for_port(proc, port)
        except RuntimeError:
            assert proc.stderr is not None
            pytest.fail(f"moto-server did not start: {proc.stderr.read()[-2000:]}")
        yield f"http://127.0.0.1:{port}", port
    finally:
        stop_process(proc)
        if proc.stderr is not None:
            proc.stderr.close()


def test_moto_server_serves_s3_and_sqs_on_loopback_only(server: tuple[str, int]) -> None:
    url, port = server
    listening = _listening(port)
    if listening:  # /proc/net is Linux's; elsewhere the connection above must do
        assert listening == {"0100007F"}, listening  # 127.0.0.1, never 0.0.0.0 or ::
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=url, region_name="us-east-1")
    s3.create_bucket(Bucket="quick-start")
    s3.put_object(Bucket="quick-start", Key="incoming/a/1.csv", Body=b"x\n")
    listed = s3.list_objects_v2(Bucket="quick-start", Prefix="incoming/")
    assert [o["Key"] for o in listed["Contents"]] == ["incoming/a/1.csv"]
    queue = sqs.create_queue(QueueName="quick-start")["QueueUrl"]
    bodies = [f"m{i}" for i in range(10)]
    sent = sqs.send_message_batch(
        QueueUrl=queue, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
    )
    assert len(sent["Successful"]) == 10
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "10"  # still counted exactly
    received: list[str] = []
    while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages"):
        received.extend(m["Body"] for m in batch)
    assert sorted(received) == sorted(bodies)


def test_the_patch_leaves_counters_exact_outside_sends_and_receives() -> None:
    """In this process: the counters read 0 only while a send or a receive is handled,
    and moto's own queue answers them exactly otherwise."""
    from moto.sqs import models

    counters = ("", "_delayed", "_not_visible")
    saved = {
        f"approximate_number_of_messages{c}": getattr(
            models.Queue, f"approximate_number_of_messages{c}"
        )
        for c in counters
    }
    saved_calls = {n: getattr(models.SQSBackend, n) for n in ("send_message", "receive_message")}
    try:
        moto_main.apply_patch()
        backend = models.sqs_backends["123456789012"]["us-east-1"]
        queue = backend.create_queue("patched-counters")
        seen: list[int] = []
        original = models.Queue.add_message

        def add_message(self: models.Queue, message: models.Message) -> None:
            seen.append(self.approximate_number_of_messages)  # read inside a send
            original(self, message)

        models.Queue.add_message = add_message  # type: ignore[method-assign]
        try:
            for n in range(3):
                backend.send_message("patched-counters", f"m{n}")
        finally:
            models.Queue.add_message = original  # type: ignore[method-assign]
        assert seen == [0, 0, 0]
        assert queue.approximate_number_of_messages == 3
        assert len(backend.receive_message("patched-counters", 10, 0, 30)) == 3
        assert queue.approximate_number_of_messages_not_visible == 3
        backend.delete_queue("patched-counters")
    finally:
        for name, value in {**saved, **saved_calls}.items():
            setattr(models.Queue if name in saved else models.SQSBackend, name, value)
