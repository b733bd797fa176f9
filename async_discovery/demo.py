"""``async-discovery demo``: a moto server on 127.0.0.1, a sample bucket, two scans, and
a file that arrives by an S3 Event Notification.

Needs no AWS account: fake credentials, an explicit loopback endpoint. The second scan
must queue nothing, which is the point of the state object. Then the bucket notifies an
events queue (moto delivers S3 notifications to its SQS as S3 does), the ``listen``
loop runs in-process, and a file put into the bucket must reach the target queue
within seconds, not a schedule period.

On a terminal (stdout is a tty) the demo tells its story: each seeded key with the
scanner's verdict and reason, a message that went out, the state object written, then
the second run skipping every file as unchanged; JSON log lines appear only when a log
level is asked for. Otherwise it prints the two summaries on stdout, one JSON line each,
and its notes and the logs on stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
import time
from typing import Any, TextIO

import anyio
from aiobotocore.session import get_session

from .cells import ljust
from .config import DEFAULT_STATE_KEY, Config
from .listen import Listener, ListenOptions
from .logs import configure_logging
from .runner import run_scan
from .testing.moto_server import threaded_moto_server, use_fake_credentials

BUCKET = "demo-bucket"
QUEUE = "demo-queue"
PREFIX = "incoming"

# key -> what the discovery rule makes of it
SAMPLE: dict[str, str] = {
    "incoming/sales/2026-11-01.csv": "candidate",
    "incoming/sales/2026-11-02.CSV": "candidate (upper-case extension)",
    "incoming/inventory/stock.csv": "candidate",
    "incoming/inventory/q3 report+final 100%.csv": "candidate (space, +, %)",
    "incoming/café/données été.csv": "candidate (unicode)",
    "incoming/logs/app.csv": "ignored: skipped folder",
    "incoming/temp/scratch.csv": "ignored: skipped folder",
    "incoming/sales/archive/2025.csv": "ignored: deeper level",
    "incoming/sales/readme.txt": "ignored: not a CSV",
    "incoming/top-level.csv": "ignored: top-level file",
    "incoming/empty/": "ignored: folder marker",
    "elsewhere/other.csv": "ignored: other prefix",
}

# The message body the story shows: an awkward name, to see it arrive unchanged.
SHOWN_KEY = "incoming/inventory/q3 report+final 100%.csv"
# The file put while the event path listens, and how long it may take to arrive.
EVENT_KEY = "incoming/sales/2026-11-03.csv"
EVENTS_QUEUE = "demo-events"
EVENT_TIMEOUT_SECONDS = 10.0

# Explain reasons, in words.
REASONS: dict[str, str] = {
    "new": "new: not in state yet",
    "updated": "updated: another ETag than in state",
    "unchanged": "unchanged: same ETag as in state",
    "skipped-folder": "in a skipped folder: never listed",
    "deep": "one level too deep",
    "not-csv": "not a .csv file",
    "top-level": "no folder: directly under the prefix",
    "marker": "a folder marker",
}


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")


async def seed_sample(endpoint: str, bucket: str = BUCKET, queue: str = QUEUE) -> str:
    """Create ``bucket`` with the :data:`SAMPLE` objects and the queue ``queue`` at
    ``endpoint`` (a moto server); return the queue URL. Safe to run again: an existing
    bucket or queue is reused and the objects are overwritten (same bytes, same ETags).
    """
    session = get_session()
    kwargs: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    async with (
        session.create_client("s3", **kwargs) as s3,
        session.create_client("sqs", **kwargs) as sqs,
    ):
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            await s3.create_bucket(Bucket=bucket)
        for key in SAMPLE:
            body = b"" if key.endswith("/") else b"id,value\n1,42\n"
            await s3.put_object(Bucket=bucket, Key=key, Body=body)
        created = await sqs.create_queue(QueueName=queue)
        return str(created["QueueUrl"])


async def _receive(endpoint: str, queue_url: str) -> list[dict[str, Any]]:
    """Every message body waiting in the queue (received, not deleted)."""
    session = get_session()
    bodies: list[dict[str, Any]] = []
    async with session.create_client("sqs", endpoint_url=endpoint, region_name="us-east-1") as sqs:
        while True:
            resp = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
            messages = resp.get("Messages", [])
            if not messages:
                return bodies
            bodies.extend(json.loads(m["Body"]) for m in messages)


async def _read_state(endpoint: str) -> bytes:
    session = get_session()
    async with session.create_client("s3", endpoint_url=endpoint, region_name="us-east-1") as s3:
        resp = await s3.get_object(Bucket=BUCKET, Key=DEFAULT_STATE_KEY)
        async with resp["Body"] as body:
            data: bytes = await body.read()
            return data


async def event_path(endpoint: str, config: Config) -> float | None:
    """Notify an events queue of the bucket's new objects, listen, put one file: the
    seconds from the put to its message on the target queue (None: not within
    ``EVENT_TIMEOUT_SECONDS``)."""
    session = get_session()
    kwargs: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    async with (
        session.create_client("s3", **kwargs) as s3,
        session.create_client("sqs", **kwargs) as sqs,
    ):
        events_url = (await sqs.create_queue(QueueName=EVENTS_QUEUE))["QueueUrl"]
        attrs = await sqs.get_queue_attributes(QueueUrl=events_url, AttributeNames=["QueueArn"])
        rule: Any = {
            "QueueArn": attrs["Attributes"]["QueueArn"],
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": PREFIX + "/"}]}},
        }
        await s3.put_bucket_notification_configuration(
            Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [rule]}
        )
        listener = Listener(
            dataclasses.replace(config, events_queue_url=events_url),
            ListenOptions(wait_seconds=1),
            emit_metrics=False,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.run)
            started = time.monotonic()
            await s3.put_object(Bucket=BUCKET, Key=EVENT_KEY, Body=b"id,value\n2,43\n")
            arrived = await _wait_for(sqs, str(config.queue_url), EVENT_KEY)
            listener.stop()
        return time.monotonic() - started if arrived else None


async def _wait_for(sqs: Any, queue_url: str, key: str) -> bool:
    """True once a message for ``key`` is on the queue (received, not deleted)."""
    with anyio.move_on_after(EVENT_TIMEOUT_SECONDS):
        while True:
            resp = await sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            if any(json.loads(m["Body"]).get("key") == key for m in resp.get("Messages", [])):
                return True
    return False


def _verdict(key: str, explained: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The scanner's (action, reason in words) for a seeded key. A skipped folder or a
    deeper level is explained once, by its common prefix, which the key starts with."""
    doc = explained.get(key)
    if doc is None:
        covering = [k for k in explained if k.endswith("/") and key.startswith(k)]
        doc = explained[max(covering, key=len)] if covering else None
    if doc is None:
        return "-", "outside the prefix: never listed"
    reason = str(doc["reason"])
    return str(doc["action"]), REASONS.get(reason, reason)


KEY_CELLS = 44  # the key column of the verdict lines, in terminal cells


def _verdict_lines(out: TextIO, explained: dict[str, dict[str, Any]], keys: list[str]) -> None:
    """One line per key: the action, the key (padded in display cells, so a key with
    wide or combining characters keeps the reasons aligned) and the reason."""
    for key in keys:
        action, reason = _verdict(key, explained)
        out.write(f"  {action:6}  {ljust(key, KEY_CELLS)}  {reason}\n")


def _counts(summary: dict[str, Any]) -> str:
    """The run's counts, each saying what it counts (they add up: the candidates are
    queued or skipped; the ignored are the listed objects that are no candidate plus
    the prefixes never listed)."""
    calls = summary.get("api_calls", {})
    wrote = "state written" if calls.get("PutObject") else "state not rewritten"
    listed, candidates, ignored = summary["listed"], summary["candidates"], summary["ignored"]
    unlisted = max(0, ignored - (listed - candidates))
    batches = calls.get("SendMessageBatch", 0)
    return (
        f"statusCode {summary['statusCode']}; listed {listed} objects (skipped folders and "
        "deeper levels are never listed)\n"
        f"     candidates {candidates}: queued {summary['queued']} (new or changed), "
        f"skipped {summary['skipped']} (unchanged)\n"
        f"     ignored {ignored}: {listed - candidates} listed objects that are not candidates, "
        f"{unlisted} prefixes not listed (skipped folders, deeper levels)\n"
        f"     errors {summary['errors']}; {batches} SendMessageBatch "
        f"call{'' if batches == 1 else 's'}; {wrote}"
    )


def _wrapped(items: list[str], first: str, indent: str, width: int = 92) -> list[str]:
    """``items`` joined by ", " into lines of at most ``width`` characters (an item
    longer than that gets a line of its own)."""
    lines, line = [], first
    for n, item in enumerate(items):
        piece = item + ("," if n < len(items) - 1 else "")
        if len(line) + len(piece) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += piece + " "
    lines.append(line.rstrip())
    return lines


def _state_lines(raw: bytes, shown: int = 1) -> list[str]:
    """The first lines of the state object: its header fields and a few entries."""
    state = json.loads(raw)
    files: dict[str, Any] = state.get("files", {})
    header = [
        f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
        for k, v in state.items()
        if k != "files"
    ]
    lines = _wrapped([*header, '"files": {'], "  {", "   ")
    for key, entry in list(files.items())[:shown]:
        fields = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in entry.items()]
        lines += _wrapped(fields, f"     {json.dumps(key, ensure_ascii=False)}: {{", "       ")
        lines[-1] += "},"
    if len(files) > shown:
        lines.append(f"     ... {len(files) - shown} more entries like this one")
    lines.append("  }}")
    return lines


def _tell(endpoint: str, queue_url: str, config: Config) -> list[dict[str, Any]]:
    """Both scans, told on stdout for a person; returns the two summaries."""
    out = sys.stdout
    listed = [k for k in SAMPLE if k.startswith(PREFIX + "/")]
    out.write(
        f"async-discovery demo: moto server on {endpoint} (in-process, no AWS account)\n"
        f"Seeded s3://{BUCKET}/ with {len(SAMPLE)} objects; "
        f"scanning the prefix {PREFIX}/ into the queue {QUEUE}.\n\n"
    )
    summaries: list[dict[str, Any]] = []
    for run in (1, 2):
        explained: dict[str, dict[str, Any]] = {}

        def collect(doc: dict[str, Any], into: dict[str, dict[str, Any]] = explained) -> None:
            if "key" in doc:
                into[str(doc["key"])] = doc

        summary = anyio.run(
            functools.partial(run_scan, config, explain=collect, emit_metrics=False)
        )
        summaries.append(summary)
        if run == 1:
            out.write("Scan 1: the state object does not exist yet. Each key's verdict:\n")
            _verdict_lines(out, explained, list(SAMPLE))
            out.write(f"  -> {_counts(summary)}\n\n")
            bodies = anyio.run(_receive, endpoint, queue_url)
            shown = next((b for b in bodies if b.get("key") == SHOWN_KEY), None)
            shown = shown or (bodies[0] if bodies else None)
            out.write(f"The queue now holds {len(bodies)} messages. One body:\n")
            if shown is not None:
                pretty = json.dumps(shown, ensure_ascii=False, indent=2)
                out.write("".join(f"  {line}\n" for line in pretty.splitlines()))
            raw = anyio.run(_read_state, endpoint)
            out.write(
                f"\nThe state object s3://{BUCKET}/{DEFAULT_STATE_KEY} ({len(raw):,} bytes), "
                "written once\nat the end of the run; it records only what SQS accepted:\n"
            )
            out.write("".join(line + "\n" for line in _state_lines(raw)))
        else:
            out.write("\nScan 2: same bucket, with the state of scan 1. Each candidate:\n")
            candidates = [k for k in listed if _verdict(k, explained)[0] in ("skip", "send")]
            _verdict_lines(out, explained, candidates)
            out.write(f"  (the other {len(SAMPLE) - len(candidates)} keys: as in scan 1)\n")
            out.write(f"  -> {_counts(summary)}\n")
        out.flush()
    return summaries


def run_demo(*, log_level: str | None = None) -> int:
    """Run the demo; exit status 0 when the first scan queued every candidate and the
    second queued nothing. ``log_level``: the level asked for (flag or ``LOG_LEVEL``);
    on a terminal the JSON logs are shown only when one was."""
    use_fake_credentials()
    story = sys.stdout.isatty()
    if story and log_level is None:
        configure_logging("WARNING")  # a healthy run logs nothing at this level
    expected = sum(1 for verdict in SAMPLE.values() if verdict.startswith("candidate"))
    with threaded_moto_server() as endpoint:
        if not story:
            _say(f"moto server on {endpoint}; seeding s3://{BUCKET}/ with {len(SAMPLE)} objects:")
        queue_url = anyio.run(seed_sample, endpoint)
        config = Config(
            source_bucket=BUCKET,
            prefix=PREFIX + "/",
            queue_url=queue_url,
            state_bucket=BUCKET,
            endpoint_url=endpoint,
        )
        if story:
            summaries = _tell(endpoint, queue_url, config)
        else:
            summaries = _summaries(endpoint, queue_url, config)
        seconds = anyio.run(event_path, endpoint, config)
    first, second = summaries
    ok = first["statusCode"] == 200 and first["queued"] == expected and second["queued"] == 0
    arrived = (
        f"put {EVENT_KEY}: on the queue {seconds:.1f} s later"
        if seconds is not None
        else f"put {EVENT_KEY}: NOT on the queue within {EVENT_TIMEOUT_SECONDS:.0f} s"
    )
    if story:
        sys.stdout.write(
            f"\nEvents (the bucket notifies a queue, `listen` handles it): {arrived}\n"
        )
        sys.stdout.write(
            "Demo ok: the second scan sent nothing; the state object remembers every file;\n"
            "a new file arrived by its event in seconds.\n"
            "Next: scan your own bucket without sending anything:\n"
            "  async-discovery scan --bucket BUCKET --prefix PREFIX --dry-run --explain\n"
            if ok and seconds is not None
            else f"\nDemo FAILED: expected {expected} queued, then 0, then the event's file.\n"
        )
    else:
        _say(f"event path: {arrived}")
        _say(
            "demo ok: the second scan queued nothing; the event's file arrived"
            if ok and seconds is not None
            else f"demo FAILED: expected {expected} queued then 0, then the event's file"
        )
    return 0 if ok and seconds is not None else 1


def _summaries(endpoint: str, queue_url: str, config: Config) -> list[dict[str, Any]]:
    """Both scans for a pipe or a file: one JSON summary per line on stdout, notes on
    stderr."""
    for key, verdict in SAMPLE.items():
        _say(f"  {key!r:48} {verdict}")
    summaries = []
    for run in (1, 2):
        summary = anyio.run(functools.partial(run_scan, config, emit_metrics=False))
        summaries.append(summary)
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        _say(
            f"scan {run}: statusCode {summary['statusCode']}, queued {summary['queued']}, "
            f"skipped {summary['skipped']}, ignored {summary['ignored']}"
        )
        if run == 1:
            bodies = anyio.run(_receive, endpoint, queue_url)
            if bodies:
                _say("a message body: " + json.dumps(bodies[0], ensure_ascii=False))
    return summaries
