"""End-to-end scans against the moto server: every behaviour a user sees."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from async_discovery.aws import S3Lister, S3StateStore, SqsSender, open_clients
from async_discovery.config import Config
from async_discovery.models import Outgoing
from async_discovery.pipeline import Scanner
from async_discovery.ports import BatchResult

from .helpers import MotoEnv, scan

LAYOUT = {
    "incoming/a/1.csv": True,
    "incoming/a/2.CSV": True,
    "incoming/b/x.csv": True,
    "incoming/top.csv": False,  # top level
    "incoming/a/deep/3.csv": False,  # deeper level
    "incoming/logs/l.csv": False,  # skipped folder
    "incoming/temp/t.csv": False,  # skipped folder
    "incoming/a/notes.txt": False,  # other extension
    "incoming/a/data.csv.gz": False,
    "incoming/c/": False,  # folder marker
    "other/a/1.csv": False,  # other prefix
    "incomingx/a/1.csv": False,  # other prefix sharing the letters
}


def seed(env: MotoEnv, bucket: str) -> set[str]:
    for key in LAYOUT:
        env.put(bucket, key, b"" if key.endswith("/") else b"a\n")
    return {k for k, ok in LAYOUT.items() if ok}


@pytest.mark.parametrize("strategy", ["folders", "flat", "auto"])
async def test_discovery_rule_on_a_real_bucket(
    env: MotoEnv, bucket: str, queue_url: str, strategy: str
) -> None:
    expected = seed(env, bucket)
    summary = await scan(env.config(bucket, queue_url, list_strategy=strategy))
    assert summary["statusCode"] == 200
    assert summary["queued"] == len(expected) and summary["errors"] == 0
    assert {b["key"] for b in env.bodies(queue_url)} == expected
    state = env.state(bucket)
    assert state is not None and set(state["files"]) == expected
    assert summary["ignored"] >= 5


@pytest.mark.parametrize("prefix", ["incoming", "incoming/"])
async def test_prefix_with_and_without_slash(
    env: MotoEnv, bucket: str, queue_url: str, prefix: str
) -> None:
    expected = seed(env, bucket)
    summary = await scan(env.config(bucket, queue_url, prefix=normalised(prefix)))
    assert summary["queued"] == len(expected)
    assert {b["key"] for b in env.bodies(queue_url)} == expected


def normalised(raw: str) -> str:
    """The prefix as the configuration normalises it from S3_PREFIX."""
    return Config.from_env({"S3_SOURCE_BUCKET": "bkt", "S3_PREFIX": raw}, dry_run=True).prefix


async def test_empty_prefix_scans_the_whole_bucket(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    for key in ["a/1.csv", "b/2.csv", "top.csv", "a/deep/3.csv", "logs/x.csv"]:
        env.put(bucket, key)
    summary = await scan(env.config(bucket, queue_url, prefix=""))
    assert summary["statusCode"] == 200
    # The state object (state/processed_files.json) is not a CSV: ignored too.
    assert {b["key"] for b in env.bodies(queue_url)} == {"a/1.csv", "b/2.csv"}


async def test_second_run_queues_nothing(env: MotoEnv, bucket: str, queue_url: str) -> None:
    expected = seed(env, bucket)
    first = await scan(env.config(bucket, queue_url))
    second = await scan(env.config(bucket, queue_url))
    assert first["queued"] == len(expected)
    assert (second["statusCode"], second["queued"], second["skipped"]) == (200, 0, len(expected))
    assert second["api_calls"].get("SendMessageBatch", 0) == 0
    assert second["api_calls"].get("PutObject", 0) == 0  # nothing queued: no write
    assert len(env.bodies(queue_url)) == len(expected)


async def test_overwritten_file_is_queued_once_as_updated(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv", b"v1")
    env.put(bucket, "incoming/a/2.csv", b"same")
    await scan(env.config(bucket, queue_url))
    env.bodies(queue_url)
    new_etag = env.put(bucket, "incoming/a/1.csv", b"v2")
    summary = await scan(env.config(bucket, queue_url))
    again = await scan(env.config(bucket, queue_url))
    bodies = env.bodies(queue_url)
    assert (summary["queued"], summary["skipped"], again["queued"]) == (1, 1, 0)
    assert [(b["key"], b["event"], b["etag"]) for b in bodies] == [
        ("incoming/a/1.csv", "updated", new_etag)
    ]
    state = env.state(bucket)
    assert state is not None and state["files"]["incoming/a/1.csv"]["etag"] == new_etag


async def test_awkward_keys_survive_exactly(env: MotoEnv, bucket: str, queue_url: str) -> None:
    keys = {
        "incoming/a b/space name.csv",
        "incoming/plus/a+b.csv",
        "incoming/pct/100%25 %.csv",
        "incoming/ünï/çødé 日本.csv",
        'incoming/q/it\'s "quoted" & <x>.csv',
        "incoming/tilde~/~.csv",
    }
    for key in keys:
        env.put(bucket, key)
    summary = await scan(env.config(bucket, queue_url))
    assert summary["queued"] == len(keys)
    bodies = env.bodies(queue_url)
    assert {b["key"] for b in bodies} == keys
    assert {b["folder"] for b in bodies} == {k.split("/")[1] for k in keys}
    state = env.state(bucket)
    assert state is not None and set(state["files"]) == keys
    assert (await scan(env.config(bucket, queue_url)))["queued"] == 0


async def test_message_body_fields(env: MotoEnv, bucket: str, queue_url: str) -> None:
    etag = env.put(bucket, "incoming/sales/day 1.csv", b"12345")
    await scan(env.config(bucket, queue_url))
    (msg,) = env.receive_all(queue_url)
    body = json.loads(msg["Body"])
    assert set(body) == {
        "id", "bucket", "key", "folder", "etag", "size", "last_modified", "event"
    }  # fmt: skip
    assert (
        body["id"]
        == hashlib.sha256(f"{bucket}/incoming/sales/day 1.csv@{etag}".encode()).hexdigest()
    )
    assert (body["bucket"], body["folder"], body["etag"], body["size"], body["event"]) == (
        bucket,
        "sales",
        etag,
        5,
        "new",
    )
    assert body["last_modified"].endswith("Z") and '"' not in body["etag"]
    assert msg["MessageAttributes"]["id"]["StringValue"] == body["id"]


class RecordingSender:
    """Wraps the real SqsSender to record each batch's size."""

    def __init__(self, inner: SqsSender) -> None:
        self.inner = inner
        self.sizes: list[int] = []

    async def send_batch(self, batch: Sequence[Outgoing]) -> BatchResult:
        self.sizes.append(len(batch))
        return await self.inner.send_batch(batch)


@pytest.mark.slow
async def test_thousands_of_files_queued_exactly_once_in_batches_of_ten(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    keys = [f"incoming/f{f}/file-{i:05d}.csv" for f in range(6) for i in range(500)]
    env.put_many(bucket, keys)
    # moto recomputes queue counters over every stored message on each send: a consumer
    # deleting as it goes keeps the queue shallow, and two workers let it keep up.
    config = env.config(bucket, queue_url, workers=2)
    with env.drainer(queue_url) as drained:
        async with open_clients(config) as clients:
            sender = RecordingSender(SqsSender(clients.sqs, queue_url))
            scanner = Scanner(
                config,
                S3Lister(clients.s3, bucket),
                S3StateStore(clients.s3, bucket, config.state_key, config.state_max_bytes),
                sender,
            )
            assert await scanner.run() is None
    assert scanner.stats.queued == len(keys) == 3000
    assert max(sender.sizes) <= 10
    assert sum(sender.sizes) == len(keys)
    assert len(sender.sizes) <= math.ceil(len(keys) / 10) + config.workers
    # Concurrent receivers may be handed one stored message twice by moto; what counts
    # is how many distinct messages SQS stored per key.
    stored = {m["MessageId"]: json.loads(m["Body"])["key"] for m in drained.messages}
    counts = Counter(stored.values())
    assert set(counts) == set(keys) and set(counts.values()) == {1}
    state = env.state(bucket)
    assert state is not None and len(state["files"]) == len(keys)


async def test_fifo_queue_attributes(env: MotoEnv, bucket: str) -> None:
    queue = env.new_queue(fifo=True)
    env.put(bucket, "incoming/sales/1.csv")
    env.put(bucket, "incoming/two words/2.csv")
    summary = await scan(env.config(bucket, queue))
    assert summary["queued"] == 2
    msgs = {json.loads(m["Body"])["key"]: m for m in env.receive_all(queue)}
    sales = msgs["incoming/sales/1.csv"]
    spaced = msgs["incoming/two words/2.csv"]
    assert sales["Attributes"]["MessageGroupId"] == "sales"
    assert spaced["Attributes"]["MessageGroupId"] == (
        "h-" + hashlib.sha256(b"two words").hexdigest()[:64]
    )
    for m in (sales, spaced):
        assert m["Attributes"]["MessageDeduplicationId"] == json.loads(m["Body"])["id"]


async def test_state_schema(env: MotoEnv, bucket: str, queue_url: str) -> None:
    etag = env.put(bucket, "incoming/a/1.csv", b"abc")
    await scan(env.config(bucket, queue_url))
    state = env.state(bucket)
    assert state is not None
    assert state["version"] == 1
    assert state["updated_at"].endswith("Z")
    assert state["files"] == {
        "incoming/a/1.csv": {
            "status": "queued",
            "etag": etag,
            "size": 3,
            "folder": "a",
            "queued_at": state["files"]["incoming/a/1.csv"]["queued_at"],
        }
    }
    assert state["source_bucket"] == bucket


async def test_state_in_another_bucket_and_key(env: MotoEnv, bucket: str, queue_url: str) -> None:
    state_bucket = env.new_bucket()
    env.put(bucket, "incoming/a/1.csv")
    summary = await scan(
        env.config(bucket, queue_url, state_bucket=state_bucket, state_key="x/y.json")
    )
    assert summary["queued"] == 1
    assert env.state(bucket) is None
    assert env.state(state_bucket, "x/y.json") is not None


class InterferingStore:
    """The real S3 state store, with another run's write slipped in after our load."""

    def __init__(self, inner: S3StateStore, env: MotoEnv, competing: dict[str, Any]) -> None:
        self.inner = inner
        self.env = env
        self.competing = competing
        self.conditions: list[str | None] = []
        self.loads = 0

    @property
    def name(self) -> str:
        return self.inner.name

    async def load(self) -> tuple[bytes | None, str | None]:
        self.loads += 1
        result = await self.inner.load()
        if self.loads == 1:
            self.env.s3.put_object(
                Bucket=self.inner.bucket,
                Key=self.inner.key,
                Body=json.dumps(self.competing).encode(),
            )
        return result

    async def save(
        self, body: bytes, *, if_match: str | None, metadata: Mapping[str, str] | None = None
    ) -> str:
        self.conditions.append(if_match)
        return await self.inner.save(body, if_match=if_match, metadata=metadata)


@pytest.mark.parametrize("existing", [False, True])
async def test_conditional_write_conflict_reloads_and_merges(
    env: MotoEnv, bucket: str, queue_url: str, existing: bool
) -> None:
    other = {
        "status": "queued", "etag": "zz", "size": 1, "folder": "b", "queued_at": "t"
    }  # fmt: skip
    if existing:
        env.s3.put_object(
            Bucket=bucket,
            Key="state/processed_files.json",
            Body=json.dumps({"version": 1, "files": {}}).encode(),
        )
    env.put(bucket, "incoming/a/1.csv")
    competing = {"version": 1, "files": {"other/b/x.csv": other}}
    config = env.config(bucket, queue_url)
    async with open_clients(config) as clients:
        store = InterferingStore(
            S3StateStore(clients.s3, bucket, config.state_key, config.state_max_bytes),
            env,
            competing,
        )
        scanner = Scanner(
            config, S3Lister(clients.s3, bucket), store, SqsSender(clients.sqs, queue_url)
        )
        assert await scanner.run() is None
    # First attempt: If-None-Match (no state) or If-Match the loaded ETag; refused; then
    # a retry conditioned on the competing write's ETag.
    assert len(store.conditions) == 2
    assert (store.conditions[0] is None) is (not existing)
    assert store.conditions[1] is not None and store.conditions[1] != store.conditions[0]
    state = env.state(bucket)
    assert state is not None
    assert set(state["files"]) == {"incoming/a/1.csv", "other/b/x.csv"}


async def test_corrupt_state_is_500_unchanged_and_nothing_sent(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    raw = b'{"version": 1, "files": {"incoming/a/1.csv": '
    env.s3.put_object(Bucket=bucket, Key="state/processed_files.json", Body=raw)
    summary = await scan(env.config(bucket, queue_url))
    assert summary["statusCode"] == 500
    assert f"s3://{bucket}/state/processed_files.json" in summary["error"]
    assert env.state_bytes(bucket) == raw
    assert env.bodies(queue_url) == []
    assert summary["api_calls"].get("ListObjectsV2", 0) == 0


async def test_missing_queue_is_500_and_nothing_marked_queued(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    missing = queue_url + "-missing"
    summary = await scan(env.config(bucket, missing))
    assert summary["statusCode"] == 500
    assert "does not exist" in summary["error"] and missing in summary["error"]
    assert summary["queued"] == 0
    assert env.state(bucket) is None


async def test_missing_source_bucket_is_500(env: MotoEnv, queue_url: str) -> None:
    state_bucket = env.new_bucket()
    summary = await scan(env.config("no-such-bucket-here", queue_url, state_bucket=state_bucket))
    assert summary["statusCode"] == 500
    assert "no-such-bucket-here" in summary["error"]
    assert env.state(state_bucket) is None


async def test_dry_run_sends_and_writes_nothing(env: MotoEnv, bucket: str, queue_url: str) -> None:
    expected = seed(env, bucket)
    summary = await scan(env.config(bucket, queue_url, dry_run=True))
    assert summary["dry_run"] is True
    assert (summary["statusCode"], summary["queued"]) == (200, len(expected))
    assert env.bodies(queue_url) == []
    assert env.state(bucket) is None
    assert "SendMessageBatch" not in summary["api_calls"]
    assert "PutObject" not in summary["api_calls"]


async def test_summary_keys_and_api_calls(env: MotoEnv, bucket: str, queue_url: str) -> None:
    seed(env, bucket)
    summary = await scan(env.config(bucket, queue_url))
    assert list(summary)[:5] == [
        "statusCode",
        "queued",
        "skipped",
        "errors",
        "execution_time_seconds",
    ]
    # a: 1.csv 2.CSV notes.txt data.csv.gz; b: x.csv; c: its marker; top.csv.
    assert summary["listed"] == 7 and summary["truncated"] is False
    calls = summary["api_calls"]
    assert calls["GetObject"] == 1 and calls["PutObject"] == 1
    # One discovery listing plus one per non-skipped folder (a, b, c).
    assert calls["ListObjectsV2"] == 4
    assert calls["SendMessageBatch"] >= 1
