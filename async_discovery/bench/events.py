"""``async-discovery bench --events``: the event path's latency, throughput and no loss.

Every part runs ``async-discovery listen`` as a process of its own against the bench's
moto (which delivers each bucket's S3 notifications to an events queue, as S3 does),
through a latency proxy, and reads what it did from its per-batch log lines:

- **latency**: files put at a steady rate while ``listen`` runs; for each, the time from
  the start of its ``PutObject`` to its message's ``SentTimestamp`` on the target queue
  (p50, p95, max);
- **throughput**: a backlog of notifications over many folders, drained first with
  ``--batch-size 1`` (one record per state write: the reference) for a while, then with
  large batches to the end; records per second of each, their ratio, and the state
  writes of every batch against the state units it touched;
- **no loss**: 10% of notifications dropped on their way to ``listen`` (the proxy takes
  them out of ``ReceiveMessage`` answers; the events queue's visibility timeout keeps
  them away for the rest of the run), then one scan: every file sent, once; and every
  notification delivered twice (two identical queue configurations), with some files
  overwritten meanwhile: each version sent at most once and every file's current
  version sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import anyio
import boto3
from aiobotocore.session import get_session

from ..config import Config
from ..logs import configure_logging
from ..runner import run_scan
from ..testing.fault_proxy import ProxiedRequest, Rewrite, ThreadedFaultProxy
from .seed import put_objects, s3_kwargs
from .servers import cpu_seconds

Say = Callable[[str], None]
PREFIX = "incoming/"
EVENTS_VISIBILITY = 3600  # seconds: a record taken out by the proxy stays away
TIMEOUT = 900.0  # seconds any part may take before it is reported as failed
# The no-loss scan starts this long after the last put, with a window 0.5 s shorter.
RECONCILE_AFTER_S = 1.5


@dataclasses.dataclass(frozen=True, slots=True)
class EventsOptions:
    """What the event bench puts and how ``listen`` gathers its batches."""

    files: int = 1000
    rate: float = 50.0
    backlog: int = 20000
    backlog_folders: int = 100
    batch_size: int = 1000
    batch_window: float = 1.0
    reference_records: int = 300
    loss_files: int = 1000
    state_layout: str = "folders"
    latency_ms: float = 20.0


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


class Listen:
    """``async-discovery listen`` in a process of its own; its batches as they come."""

    def __init__(self, env: Mapping[str, str], *args: str, log: str | None = None) -> None:
        command = [sys.executable, "-m", "async_discovery", "listen", *args]
        self.log = log  # every line of its stderr is kept here (None: summaries only)
        self.proc = subprocess.Popen(
            command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.started = time.monotonic()
        self.batches: list[tuple[float, dict[str, Any]]] = []  # (arrival, summary)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with open(self.log or os.devnull, "a", encoding="utf-8") as kept:
            for line in self.proc.stderr:
                kept.write(line)
                if line.startswith("{") and '"events_summary"' in line:
                    self.batches.append((time.monotonic(), json.loads(line)))

    def handled(self) -> int:
        """Records handled so far."""
        return sum(int(doc["records"]) for _, doc in list(self.batches))

    def stop(self, signum: int = signal.SIGTERM) -> dict[str, Any]:
        """Signal it; its exit status, the seconds it took to exit and its totals."""
        cpu = cpu_seconds(self.proc.pid)
        sent = time.monotonic()
        self.proc.send_signal(signum)
        out, _ = self.proc.communicate(timeout=60)
        self._reader.join(timeout=10)
        totals = json.loads(out.splitlines()[-1]) if out.strip() else {}
        return {
            "exit_status": self.proc.returncode,
            "exit_seconds": round(time.monotonic() - sent, 3),
            "cpu_s": round(cpu, 2),
            "totals": totals,
        }

    def kill(self) -> None:
        """End ``listen`` at once (SIGKILL) if it is still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@contextmanager
def listening(env: Mapping[str, str], *args: str) -> Iterator[Listen]:
    """``listen`` in its own process for the block, killed if the block left it running."""
    listen = Listen(env, *args, log=os.environ.get("ASYNC_DISCOVERY_BENCH_LISTEN_LOG"))
    try:
        yield listen
    finally:
        listen.kill()


class Drainer:
    """Receives and deletes the target queue's messages in a thread, keeping per
    message its id, key, ETag and ``SentTimestamp`` (the queue stays shallow)."""

    def __init__(self, endpoint: str, queue_url: str) -> None:
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
        self.queue_url = queue_url
        self.messages: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Drainer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.sqs.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["SentTimestamp"],
            ).get("Messages", [])
            for m in got:
                body = json.loads(m["Body"])
                sent = int(m["Attributes"]["SentTimestamp"]) / 1000.0
                self.messages.append({**body, "sent_at": sent})
            if got:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ]
                self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)  # type: ignore[arg-type]

    def keys(self) -> set[str]:
        """The keys of the messages drained so far."""
        return {str(m["key"]) for m in list(self.messages)}


class EventBench:
    """One bucket, events queue and target queue per part, on the bench's moto."""

    def __init__(self, direct: str, endpoint: str, options: EventsOptions, say: Say) -> None:
        self.direct, self.endpoint, self.options, self.say = direct, endpoint, options, say
        kw: dict[str, Any] = {"endpoint_url": direct, "region_name": "us-east-1"}
        self.s3 = boto3.client("s3", **kw)
        self.sqs = boto3.client("sqs", **kw)
        # listen's own defaults: a batch is what the queue has at once, up to 100.
        self.batching: tuple[str, ...] = ()

    def close(self) -> None:
        """Close the bench's clients."""
        self.s3.close()
        self.sqs.close()

    def notified(self, *, twice: bool = False) -> tuple[str, str, str]:
        """A fresh bucket notifying a fresh events queue of its objects under the prefix
        (``twice``: two identical configurations, so every notification comes twice),
        and a fresh target queue: (bucket, events queue URL, target queue URL)."""
        bucket = f"ev-{uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(Bucket=bucket)
        events = self.sqs.create_queue(
            QueueName=f"{bucket}-events",
            Attributes={"VisibilityTimeout": str(EVENTS_VISIBILITY)},
        )["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=events, AttributeNames=["QueueArn"])
        rule = {
            "QueueArn": arn["Attributes"]["QueueArn"],
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": PREFIX}]}},
        }
        rules = [{**rule, "Id": "a"}, {**rule, "Id": "b"}] if twice else [rule]
        self.s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={"QueueConfigurations": rules},  # type: ignore[typeddict-item]
        )
        target = self.sqs.create_queue(QueueName=f"{bucket}-target")["QueueUrl"]
        return bucket, events, target

    def env(self, bucket: str, target: str, endpoint: str | None = None) -> dict[str, str]:
        """The environment of a ``listen`` process for ``bucket``."""
        env = dict(os.environ)
        env.update(
            S3_SOURCE_BUCKET=bucket,
            S3_PREFIX=PREFIX,
            SQS_QUEUE_URL=target,
            STATE_LAYOUT=self.options.state_layout,
            AWS_ENDPOINT_URL=endpoint or self.endpoint,
            LOG_LEVEL="INFO",
        )
        return env

    def pending(self, queue_url: str) -> int:
        """Messages on a queue, visible or in flight."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def visible(self, queue_url: str) -> int:
        """The queue's ``ApproximateNumberOfMessages``."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"])


def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``check`` until it holds; raise naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise TimeoutError(f"event bench: timed out waiting for {what}")
        time.sleep(0.1)


def _ready(listen: Listen) -> None:
    """Until ``listen`` has handled its first batch (the queue's ``s3:TestEvent``)."""
    wait_until(lambda: bool(listen.batches), "listen to start", 60)


# -- latency ------------------------------------------------------------------------------


async def paced_puts(endpoint: str, bucket: str, keys: list[str], rate: float) -> dict[str, float]:
    """Put ``keys`` at ``rate`` per second; the wall-clock start of each ``PutObject``."""
    starts: dict[str, float] = {}
    limiter = anyio.CapacityLimiter(16)
    async with get_session().create_client("s3", **s3_kwargs(endpoint)) as s3:

        async def put(key: str) -> None:
            async with limiter:
                starts[key] = time.time()
                await s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

        began = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for index, key in enumerate(keys):
                await anyio.sleep_until(began + index / rate)
                tg.start_soon(put, key)
    return starts


def run_latency(bench: EventBench) -> dict[str, Any]:
    """Files put at ``rate`` a second while ``listen`` runs: PUT to message, p50/p95/max."""
    opts = bench.options
    bucket, events, target = bench.notified()
    keys = [f"{PREFIX}f{i % 10:02d}/{i:06d}.csv" for i in range(opts.files)]
    bench.say(f"events latency: {opts.files} files at {opts.rate:g}/s")
    with (
        Drainer(bench.direct, target) as drained,
        listening(
            bench.env(bucket, target), "--events-queue-url", events, *bench.batching
        ) as listen,
    ):
        _ready(listen)
        starts = anyio.run(paced_puts, bench.direct, bucket, keys, opts.rate)
        wait_until(lambda: drained.keys() >= set(keys), "every file on the target queue", 120)
        stopped = listen.stop()
        batches = [doc for _, doc in listen.batches]
    sent = Counter(str(m["key"]) for m in drained.messages)
    lat = [m["sent_at"] - starts[m["key"]] for m in drained.messages if m["key"] in starts]
    return {
        "files": opts.files,
        "rate_per_s": opts.rate,
        "put_to_message_s": {
            "p50": round(statistics.median(lat), 3),
            "p95": round(percentile(lat, 0.95), 3),
            "max": round(max(lat), 3),
        },
        "sent_more_than_once": sum(1 for n in sent.values() if n > 1),
        "batches": len(batches),
        "records_per_batch_mean": round(statistics.mean(int(b["records"]) for b in batches), 2),
        "listen_exit": stopped,
    }


# -- throughput ---------------------------------------------------------------------------


def _rate(batches: list[tuple[float, dict[str, Any]]]) -> tuple[float, int, float]:
    """Records per second between the end of the first batch and the end of the last
    (start-up excluded), the records counted and the seconds."""
    if len(batches) < 2:
        return 0.0, 0, 0.0
    records = sum(int(doc["records"]) for _, doc in batches[1:])
    seconds = batches[-1][0] - batches[0][0]
    return (records / seconds if seconds > 0 else 0.0), records, seconds


def _writes(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """State writes per batch against the state units each touched."""
    over = [b for b in batches if int(b["state_objects_written"]) > int(b["state_units"])]
    return {
        "batches": len(batches),
        "state_writes": sum(int(b["state_objects_written"]) for b in batches),
        "units_touched": sum(int(b["state_units"]) for b in batches),
        "batches_writing_a_unit_twice": len(over),
        "max_writes_in_a_batch": max((int(b["state_objects_written"]) for b in batches), default=0),
    }


def _drain(bench: EventBench, files: int, *batching: str) -> dict[str, Any]:
    """A backlog of ``files`` notifications over the bucket's folders, drained by one
    ``listen`` with ``batching``: its rate, its batches' writes, what reached the target."""
    opts = bench.options
    bucket, events, target = bench.notified()
    folders = opts.backlog_folders
    keys = [f"{PREFIX}d{i % folders:03d}/{i:06d}.csv" for i in range(files)]
    anyio.run(put_objects, bench.direct, bucket, keys)
    wait_until(lambda: bench.visible(events) >= len(keys), "the backlog", 120)
    with Drainer(bench.direct, target) as drained:
        started = time.monotonic()
        with listening(bench.env(bucket, target), "--events-queue-url", events, *batching) as run:
            # listen's own count first: GetQueueAttributes walks every stored message
            # (~0.2 s of moto CPU at a depth of 20,000), so polling the depth would
            # take moto's CPU from the drain being measured.
            wait_until(lambda: run.handled() >= len(keys), "the backlog to drain")
            wait_until(lambda: bench.pending(events) == 0, "the last records to be deleted")
            drain_seconds = time.monotonic() - started
            stopped = run.stop()
        wait_until(lambda: len(drained.keys()) >= len(keys), "every message", 120)
    rate, records, seconds = _rate(run.batches)
    ids = Counter(str(m["id"]) for m in drained.messages)
    return {
        "backlog": len(keys),
        "records": records,
        "seconds": round(seconds, 2),
        "records_per_s": round(rate, 1),
        "drain_seconds_from_start": round(drain_seconds, 2),
        "listen_cpu_s": stopped["cpu_s"],
        **_writes([doc for _, doc in run.batches]),
        "files_sent": len(drained.keys()),
        "sent_more_than_once": sum(1 for n in ids.values() if n > 1),
    }


def run_throughput(bench: EventBench) -> dict[str, Any]:
    """The backlog drained in large batches, against a smaller one drained one record
    per batch (one state write per record), both over the same folders."""
    opts = bench.options
    bench.say(f"events throughput: reference, --batch-size 1, {opts.reference_records} records")
    reference = _drain(bench, opts.reference_records, "--batch-size", "1")
    bench.say(f"events throughput: {opts.backlog} records, --batch-size {opts.batch_size}")
    batched = _drain(
        bench,
        opts.backlog,
        "--batch-size",
        str(opts.batch_size),
        "--batch-window",
        str(opts.batch_window),
    )
    return {
        "folders": opts.backlog_folders,
        "state_layout": opts.state_layout,
        "reference": {"batch_size": 1, **reference},
        "batched": {"batch_size": opts.batch_size, "batch_window_s": opts.batch_window, **batched},
        "ratio": (
            round(batched["records_per_s"] / reference["records_per_s"], 1)
            if reference["records_per_s"]
            else None
        ),
    }


# -- no loss ------------------------------------------------------------------------------


Change = Callable[
    [ProxiedRequest, int, Mapping[str, str], bytes], tuple[int, Mapping[str, str], bytes]
]


def drop_tenth(lost: set[str]) -> Change:
    """A :class:`Rewrite` change taking every message whose id hashes to 0 mod 10 out of
    a ``ReceiveMessage`` answer (a lost notification); their ids go to ``lost``."""

    def change(
        request: ProxiedRequest, status: int, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        if status != 200:
            return status, headers, body
        doc = json.loads(body)
        kept = []
        for message in doc.get("Messages", []):
            if (
                '"s3:TestEvent"' not in message["Body"]
                and zlib.crc32(message["MessageId"].encode()) % 10 == 0
            ):
                lost.add(message["MessageId"])
            else:
                kept.append(message)
        doc["Messages"] = kept
        return status, headers, json.dumps(doc).encode()

    return change


def run_dropped(bench: EventBench) -> dict[str, Any]:
    """10% of notifications lost; the events and one scan send every file once."""
    opts = bench.options
    bucket, events, target = bench.notified()
    keys = [f"{PREFIX}f{i % 10:02d}/{i:06d}.csv" for i in range(opts.loss_files)]
    lost: set[str] = set()
    bench.say(f"events no loss: {len(keys)} files, 10% of notifications dropped, then a scan")
    with ThreadedFaultProxy(bench.direct, latency_ms=opts.latency_ms) as proxy:
        proxy.inject(Rewrite(drop_tenth(lost)), "ReceiveMessage")
        with Drainer(bench.direct, target) as drained:
            with listening(
                bench.env(bucket, target, proxy.url), "--events-queue-url", events, *bench.batching
            ) as listen:
                _ready(listen)
                anyio.run(put_objects, bench.direct, bucket, keys)
                put_done = time.monotonic()
                wait_until(lambda: bench.visible(events) == 0, "the events to be taken")
                wait_until(
                    lambda: listen.handled() >= len(keys) - len(lost) + 1, "the events handled"
                )
                listen.stop()
            # Every file older than the scan's window when it starts (else a file put
            # in its last second would be sent by the scan and not counted as found).
            time.sleep(max(0.0, put_done + RECONCILE_AFTER_S - time.monotonic()))
            by_events = len(drained.keys())
            config = Config(
                source_bucket=bucket,
                prefix=PREFIX,
                queue_url=target,
                state_bucket=bucket,
                state_layout=opts.state_layout,  # type: ignore[arg-type]
                endpoint_url=proxy.url,
                # Files put more than a second before the scan: those the events missed.
                reconciliation_window_seconds=RECONCILE_AFTER_S - 0.5,
            )
            configure_logging("WARNING")  # the scan's own log lines are not the figures
            summary = anyio.run(lambda: run_scan(config, emit_metrics=False))
            wait_until(lambda: drained.keys() >= set(keys), "every file", 120)
    ids = Counter(str(m["id"]) for m in drained.messages)
    return {
        "files": len(keys),
        "notifications_dropped": len(lost),
        "sent_by_events": by_events,
        "sent_by_the_scan": summary["queued"],
        "found_by_reconciliation": summary.get("found_by_reconciliation"),
        "files_sent": len(drained.keys()),
        "every_file_sent": drained.keys() >= set(keys),
        "sent_more_than_once": sum(1 for n in ids.values() if n > 1),
    }


def run_twice(bench: EventBench) -> dict[str, Any]:
    """Every notification delivered twice, a tenth of the files overwritten meanwhile."""
    opts = bench.options
    bucket, events, target = bench.notified(twice=True)
    keys = [f"{PREFIX}f{i % 10:02d}/{i:06d}.csv" for i in range(opts.loss_files)]
    rewritten = keys[::10]
    bench.say(f"events no loss: {len(keys)} files, every notification twice, 10% overwritten")
    with Drainer(bench.direct, target) as drained:
        with listening(
            bench.env(bucket, target), "--events-queue-url", events, *bench.batching
        ) as listen:
            _ready(listen)
            anyio.run(put_objects, bench.direct, bucket, keys)
            anyio.run(put_objects, bench.direct, bucket, rewritten, b"second version\n")
            wait_until(lambda: bench.pending(events) == 0, "the events to be handled")
            stopped = listen.stop()
        current = {k: bench.s3.head_object(Bucket=bucket, Key=k)["ETag"].strip('"') for k in keys}

        def versions() -> set[tuple[str, str]]:
            return {(str(m["key"]), str(m["etag"])) for m in list(drained.messages)}

        with contextlib.suppress(TimeoutError):
            wait_until(lambda: versions() >= set(current.items()), "every current version", 60)
    ids = Counter(str(m["id"]) for m in drained.messages)
    return {
        "files": len(keys),
        "overwritten": len(rewritten),
        "notifications": int(stopped["totals"].get("records", 0)) - 1,  # less the test event
        "messages": sum(ids.values()),
        "versions_sent": len(ids),
        "every_current_version_sent": versions() >= set(current.items()),
        "sent_more_than_once": sum(1 for n in ids.values() if n > 1),
    }


def run_events_bench(
    direct: str, endpoint: str, options: EventsOptions, say: Say
) -> dict[str, Any]:
    """Every part, in order; a dict of figures."""
    bench = EventBench(direct, endpoint, options, say)
    try:
        return {
            "options": dataclasses.asdict(options),
            "latency": run_latency(bench),
            "throughput": run_throughput(bench),
            "no_loss_dropped": run_dropped(bench),
            "no_loss_twice": run_twice(bench),
        }
    finally:
        bench.close()


def events_table(doc: dict[str, Any]) -> str:
    """The figures, for people."""
    lat, thr = doc["latency"], doc["throughput"]
    drop, twice = doc["no_loss_dropped"], doc["no_loss_twice"]
    p = lat["put_to_message_s"]
    ref, main = thr["reference"], thr["batched"]
    lines = [
        f"events: latency ({lat['files']} files at {lat['rate_per_s']:g}/s, listen against moto)",
        f"  PUT -> message on the target queue: p50 {p['p50']:.3f} s, p95 {p['p95']:.3f} s, "
        f"max {p['max']:.3f} s; {lat['batches']} batches, {lat['records_per_batch_mean']} "
        f"records each; sent more than once: {lat['sent_more_than_once']}",
        f"  SIGTERM: exit {lat['listen_exit']['exit_status']} after "
        f"{lat['listen_exit']['exit_seconds']:.2f} s",
        f"events: throughput (backlog {main['backlog']} over {thr['folders']} folders, "
        f"STATE_LAYOUT={thr['state_layout']})",
        f"  --batch-size 1 (one record per state write): {ref['records_per_s']:.1f} records/s "
        f"({ref['records']} records, {ref['state_writes']} state writes)",
        f"  --batch-size {main['batch_size']} --batch-window {main['batch_window_s']:g}: "
        f"{main['records_per_s']:.1f} records/s ({main['records']} records in "
        f"{main['batches']} batches, {main['state_writes']} state writes for "
        f"{main['units_touched']} units touched; batches writing a unit twice: "
        f"{main['batches_writing_a_unit_twice']})",
        f"  ratio: {thr['ratio']}x; files sent {main['files_sent']} of {main['backlog']}, "
        f"more than once {main['sent_more_than_once']}",
        f"events: no loss, 10% dropped: {drop['notifications_dropped']} notifications dropped;"
        f" events sent {drop['sent_by_events']}, the scan {drop['sent_by_the_scan']} "
        f"(found_by_reconciliation {drop['found_by_reconciliation']}); every file sent: "
        f"{drop['every_file_sent']}; more than once: {drop['sent_more_than_once']}",
        f"events: no loss, every notification twice: {twice['notifications']} notifications "
        f"for {twice['files']} files ({twice['overwritten']} overwritten); "
        f"{twice['messages']} messages, {twice['versions_sent']} versions; more than once: "
        f"{twice['sent_more_than_once']}",
    ]
    return "\n".join(lines) + "\n"
