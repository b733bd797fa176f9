"""Nothing lost, nothing unreadable: guarantees at the edges of a run, against moto.

- A first run under ``INITIAL_SCAN=mark-existing`` marks only what existed before it.
- The state never grows past ``STATE_MAX_BYTES``: a later run can always load it.
- A queue-wide error never cancels a send SQS already accepted: it is recorded.
- The folder discovery listing respects the deadline and resumes where it stopped.
- A key with characters SQS refuses in a body still reaches the queue, exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import anyio
import pytest

from async_discovery.config import parse_initial_scan
from async_discovery.deadline import Deadline
from async_discovery.errors import QueueError
from async_discovery.metrics import emf_record
from async_discovery.models import Outgoing
from async_discovery.ports import BatchResult, Lister, RawPage, Sender
from async_discovery.summary import RunStats
from async_discovery.testing.fault_proxy import FaultProxy, SqsError

from .helpers import MotoEnv, scan
from .operator_support import run_scanner


def state_files(env: MotoEnv, bucket: str) -> dict[str, dict[str, Any]]:
    doc = env.state(bucket)
    return {} if doc is None else dict(doc["files"])


# -- the first-run policy marks only what existed before the pass ------------------------


class PutBeforeListing:
    """The real lister; just before folder ``b`` is listed, a file arrives in it and
    another is overwritten (as an upload during a long first run would)."""

    def __init__(self, real: Lister, env: MotoEnv, bucket: str) -> None:
        self.real, self.env, self.bucket = real, env, bucket
        self.done = False

    async def pages(
        self, prefix: str, *, delimiter: bool, start_after: str | None = None
    ) -> AsyncGenerator[RawPage, None]:
        if prefix == "incoming/b/" and not self.done:
            self.done = True
            self.env.put(self.bucket, "incoming/b/arrived.csv")
            self.env.put(self.bucket, "incoming/b/old.csv", b"overwritten\n")
        async for page in self.real.pages(prefix, delimiter=delimiter, start_after=start_after):
            yield page


async def test_mark_existing_sends_what_arrives_during_the_first_pass(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    for key in ("incoming/a/1.csv", "incoming/a/2.csv", "incoming/b/old.csv"):
        env.put(bucket, key)
    await anyio.sleep(1.1)  # LastModified has whole seconds: the seed is before the pass
    config = env.config(
        bucket, queue_url, initial_scan=parse_initial_scan("mark-existing", []), workers=1
    )
    summary = await run_scanner(
        config, wrap_lister=lambda real: PutBeforeListing(real, env, bucket)
    )
    assert (summary["statusCode"], summary["marked"], summary["queued"]) == (200, 2, 2)
    sent = sorted(b["key"] for b in env.bodies(queue_url))
    assert sent == ["incoming/b/arrived.csv", "incoming/b/old.csv"]
    recorded = state_files(env, bucket)
    assert recorded["incoming/a/1.csv"]["status"] == "marked"
    assert recorded["incoming/b/old.csv"]["status"] == "queued"
    assert recorded["incoming/b/arrived.csv"]["status"] == "queued"


# -- the state never grows past STATE_MAX_BYTES -----------------------------------------


async def test_a_run_never_writes_a_state_a_later_run_refuses(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    keys = [f"incoming/a/file-{i:02d}.csv" for i in range(30)]
    env.put_many(bucket, keys)
    cap = 4000  # room for about 20 entries of ~170 bytes
    config = env.config(bucket, queue_url, state_max_bytes=cap)

    stats = RunStats()
    first = await scan(config, stats=stats)
    assert first["statusCode"] == 207, first
    assert "STATE_MAX_BYTES" in first["error"]
    assert first["held_back"] == 30 - first["queued"] > 0
    written = env.state_bytes(bucket)
    assert written is not None and len(written) <= cap
    # What was sent is recorded; what was held back is neither sent nor recorded.
    sent = [b["key"] for b in env.bodies(queue_url)]
    assert sorted(sent) == sorted(state_files(env, bucket)) and len(sent) == first["queued"]
    # The state's size is reported, in the summary and as a metric.
    assert first["state_bytes"] == len(written)
    record = emf_record(stats, 1.0, status=207)
    assert record["state_bytes"] == len(written)
    units = {m["Name"]: m["Unit"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["state_bytes"] == "Bytes"

    # The same configuration loads it again (no 500) and still never crosses the cap.
    second = await scan(config)
    assert second["statusCode"] == 207, second
    again = env.state_bytes(bucket)
    assert again is not None and len(again) <= cap

    # With room, the held-back files are sent: every file exactly once over all runs.
    third = await scan(env.config(bucket, queue_url, state_max_bytes=1 << 20))
    assert third["statusCode"] == 200, third
    sent += [b["key"] for b in env.bodies(queue_url)]
    assert Counter(sent) == Counter(keys)
    assert sorted(state_files(env, bucket)) == sorted(keys)


# -- a queue-wide error never cancels an accepted send ----------------------------------


class QueueFailsWhileAnotherSendIsInFlight:
    """The real sender; folder ``a``'s batch is accepted by SQS, but its answer comes back
    only after folder ``b``'s batch has failed queue-wide."""

    def __init__(self, real: Sender) -> None:
        self.real = real
        self.accepted = anyio.Event()
        self.failed = anyio.Event()

    async def send_batch(self, batch: Sequence[Outgoing]) -> BatchResult:
        if batch[0].folder == "b":
            await self.accepted.wait()
            self.failed.set()
            raise QueueError("queue access denied (injected)")
        result = await self.real.send_batch(batch)
        self.accepted.set()
        await self.failed.wait()
        await anyio.sleep(0.05)  # the failure has been handled by now
        return result


async def test_a_queue_error_keeps_what_sqs_already_accepted(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    a_keys = [f"incoming/a/{i}.csv" for i in range(10)]
    env.put_many(bucket, a_keys + [f"incoming/b/{i}.csv" for i in range(10)])
    config = env.config(bucket, queue_url, workers=2, list_concurrency=2)
    with anyio.fail_after(30):
        summary = await run_scanner(config, wrap_sender=QueueFailsWhileAnotherSendIsInFlight)
    assert summary["statusCode"] == 500
    assert "injected" in summary["error"]
    assert summary["queued"] == 10
    # Accepted by SQS, so recorded: the next run does not send them again.
    assert sorted(state_files(env, bucket)) == sorted(a_keys)
    assert sorted(b["key"] for b in env.bodies(queue_url)) == sorted(a_keys)


# -- the folder discovery listing respects the deadline ---------------------------------


def listing_budget(stats: RunStats, calls: int) -> Deadline:
    """A deadline that expires once the run has made ``calls`` listing calls."""
    return Deadline(
        lambda: 0.0 if stats.api_calls["ListObjectsV2"] >= calls else 3600.0, margin=1.0
    )


async def test_folder_discovery_stops_at_the_deadline_and_resumes(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    candidates = [f"incoming/{f}/{i}.csv" for f in ("a", "m", "z") for i in range(3)]
    top_level = [f"incoming/{c}{i:02d}.csv" for c in "bn" for i in range(20)]
    env.put_many(bucket, candidates + top_level)
    config = env.config(bucket, queue_url, list_page_size=5, list_concurrency=1)

    stats = RunStats()
    first = await scan(config, stats=stats, deadline=listing_budget(stats, 3))
    # The discovery listing alone has 9 pages; it stopped at the deadline.
    assert first["truncated"] is True
    assert stats.api_calls["ListObjectsV2"] == 3
    summaries = [first]
    for _ in range(30):
        if not summaries[-1]["truncated"]:
            break
        stats = RunStats()
        summaries.append(await scan(config, stats=stats, deadline=listing_budget(stats, 3)))
        assert stats.api_calls["ListObjectsV2"] <= 3
    assert not summaries[-1]["truncated"], summaries[-1]
    assert all(s["statusCode"] == 200 for s in summaries)
    sent = Counter(b["key"] for b in env.bodies(queue_url))
    assert sent == Counter(candidates)  # every file once, none skipped
    assert sorted(state_files(env, bucket)) == sorted(candidates)
    doc = env.state(bucket)
    assert doc is not None and not doc.get("cursors", {}).get("incoming/")


# -- message bodies carry any key SQS can take ------------------------------------------


def _refused_by_sqs(text: str) -> bool:
    return any(
        not (
            c in "\t\n\r"
            or "\x20" <= c <= "\ud7ff"
            or "\ue000" <= c <= "\ufffd"
            or "\U00010000" <= c <= "\U0010ffff"
        )
        for c in text
    )


def _carries_refused_characters(request: Any) -> bool:
    doc = request.json()
    return isinstance(doc, dict) and any(
        _refused_by_sqs(e["MessageBody"]) for e in doc.get("Entries", [])
    )


@pytest.mark.parametrize("odd", ["\uffff", "\ufffe", "\x7f\ufffe\uffff"])
async def test_a_key_sqs_cannot_carry_raw_is_escaped_and_fails_no_other_file(
    odd: str, proxy: FaultProxy, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    # What real SQS does with such a body: the whole call is refused.
    proxy.inject(
        SqsError("InvalidMessageContents", 400, "Invalid characters found."),
        "SendMessageBatch",
        when=_carries_refused_characters,
    )
    odd_key = f"incoming/a/odd{odd}name.csv"
    keys = [odd_key] + [f"incoming/a/{i}.csv" for i in range(9)]
    env.put_many(bucket, keys)
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert (summary["statusCode"], summary["queued"], summary["errors"]) == (200, 10, 0)
    bodies = env.bodies(queue_url)
    assert sorted(b["key"] for b in bodies) == sorted(keys)  # the exact key, decoded
    assert proxy.injected["SendMessageBatch"] == 0  # no body SQS would refuse was sent
    assert odd_key in state_files(env, bucket)
