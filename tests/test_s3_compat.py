"""The S3-facing scenarios against two S3 implementations: moto and SeaweedFS.

No behaviour may rest on one emulator's quirks. With SeaweedFS, S3 goes to SeaweedFS
and SQS to moto: the scanner's config leaves ``endpoint_url`` unset and botocore reads
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL_SQS``. SeaweedFS verifies signatures for one
identity and refuses a session token it did not issue, so those runs sign without one.
"""

from __future__ import annotations

import json
import math
import threading

import anyio
import pytest

from async_discovery.aws import S3Lister, S3StateStore, SqsSender, open_clients
from async_discovery.config import DEFAULT_STATE_KEY
from async_discovery.errors import StateConflict
from async_discovery.pipeline import Scanner

from .helpers import MotoEnv, scan
from .seaweedfs import SplitEnv
from .test_scan import InterferingStore, seed


@pytest.fixture
def s3bucket(s3env: MotoEnv) -> str:
    return s3env.new_bucket()


@pytest.fixture
def queue(s3env: MotoEnv) -> str:
    return s3env.new_queue()


async def test_split_endpoints_reach_both_servers(s3env: MotoEnv, s3bucket: str) -> None:
    """The bucket exists only on the S3 backend: with SeaweedFS, a run that found it
    listed SeaweedFS (moto has no such bucket) and sent to moto's queue."""
    queue = s3env.new_queue()
    s3env.put(s3bucket, "incoming/a/1.csv")
    summary = await scan(s3env.config(s3bucket, queue))
    assert (summary["statusCode"], summary["queued"]) == (200, 1)
    assert [b["key"] for b in s3env.bodies(queue)] == ["incoming/a/1.csv"]
    if isinstance(s3env, SplitEnv):
        moto_s3 = MotoEnv(s3env.endpoint).s3
        names = {b["Name"] for b in moto_s3.list_buckets().get("Buckets", [])}
        assert s3bucket not in names


@pytest.mark.parametrize("strategy", ["folders", "flat"])
async def test_discovery_rule_and_second_run(
    s3env: MotoEnv, s3bucket: str, queue: str, strategy: str
) -> None:
    expected = seed(s3env, s3bucket)
    config = s3env.config(s3bucket, queue, list_strategy=strategy)
    first = await scan(config)
    assert (first["statusCode"], first["queued"], first["errors"]) == (200, len(expected), 0)
    assert first["ignored"] >= 5
    assert {b["key"] for b in s3env.bodies(queue)} == expected
    state = s3env.state(s3bucket)
    assert state is not None and set(state["files"]) == expected
    second = await scan(config)
    assert (second["statusCode"], second["queued"], second["skipped"]) == (200, 0, len(expected))
    assert second["api_calls"].get("SendMessageBatch", 0) == 0
    assert second["api_calls"].get("PutObject", 0) == 0
    assert s3env.bodies(queue) == []


async def test_overwritten_file_is_sent_once_as_updated(
    s3env: MotoEnv, s3bucket: str, queue: str
) -> None:
    s3env.put(s3bucket, "incoming/a/1.csv", b"v1")
    s3env.put(s3bucket, "incoming/a/2.csv", b"same")
    await scan(s3env.config(s3bucket, queue))
    s3env.bodies(queue)
    new_etag = s3env.put(s3bucket, "incoming/a/1.csv", b"v2")
    summary = await scan(s3env.config(s3bucket, queue))
    again = await scan(s3env.config(s3bucket, queue))
    assert (summary["queued"], summary["skipped"], again["queued"]) == (1, 1, 0)
    assert [(b["key"], b["event"], b["etag"]) for b in s3env.bodies(queue)] == [
        ("incoming/a/1.csv", "updated", new_etag)
    ]
    state = s3env.state(s3bucket)
    assert state is not None and state["files"]["incoming/a/1.csv"]["etag"] == new_etag


async def test_awkward_keys_survive_exactly(s3env: MotoEnv, s3bucket: str, queue: str) -> None:
    keys = {
        "incoming/a b/space name.csv",
        "incoming/plus/a+b.csv",
        "incoming/pct/100%25 %.csv",
        "incoming/ünï/çødé 日本.csv",
        "incoming/tilde~/~.csv",
    }
    for key in keys:
        s3env.put(s3bucket, key)
    summary = await scan(s3env.config(s3bucket, queue))
    assert summary["queued"] == len(keys)
    bodies = s3env.bodies(queue)
    assert {b["key"] for b in bodies} == keys
    assert {b["folder"] for b in bodies} == {k.split("/")[1] for k in keys}
    state = s3env.state(s3bucket)
    assert state is not None and set(state["files"]) == keys
    assert (await scan(s3env.config(s3bucket, queue)))["queued"] == 0


FOLDERS = [f"f{i}" for i in range(9)]


def seed_pages(env: MotoEnv, bucket: str) -> set[str]:
    """9 folders of 3 CSVs plus, in each, a .txt and a deeper CSV; a top-level CSV and a
    skipped folder. Listing entries: top level 11 (10 prefixes, 1 object); each folder 5
    (4 objects, 1 prefix); flat 47 objects."""
    expected = {f"incoming/{f}/{n}.csv" for f in FOLDERS for n in ("a", "b", "c")}
    others = [f"incoming/{f}/notes.txt" for f in FOLDERS]
    others += [f"incoming/{f}/deep/x.csv" for f in FOLDERS]
    others += ["incoming/top.csv", "incoming/logs/l.csv"]
    env.put_many(bucket, sorted(expected) + others)
    return expected


def pages(entries: int, size: int) -> int:
    return max(1, math.ceil(entries / size))


@pytest.mark.parametrize("page_size", [1, 7, 1000])
@pytest.mark.parametrize("strategy", ["folders", "flat"])
async def test_pagination_at_every_page_size(
    s3env: MotoEnv, s3bucket: str, queue: str, strategy: str, page_size: int
) -> None:
    expected = seed_pages(s3env, s3bucket)
    config = s3env.config(s3bucket, queue, list_strategy=strategy, list_page_size=page_size)
    summary = await scan(config)
    assert (summary["statusCode"], summary["queued"]) == (200, len(expected))
    bodies = s3env.bodies(queue)
    assert sorted(b["key"] for b in bodies) == sorted(expected)  # each exactly once
    state = s3env.state(s3bucket)
    assert state is not None and set(state["files"]) == expected
    if strategy == "flat":
        calls = pages(47, page_size)
    else:
        calls = pages(11, page_size) + len(FOLDERS) * pages(5, page_size)
    assert summary["api_calls"]["ListObjectsV2"] == calls
    assert (await scan(config))["queued"] == 0


async def test_conditional_write_conflict_reloads_merges_and_retries(
    s3env: MotoEnv, s3bucket: str, queue: str
) -> None:
    s3env.put(s3bucket, "incoming/a/1.csv")
    other = {"status": "queued", "etag": "zz", "size": 1, "folder": "b", "queued_at": "t"}
    competing = {"version": 1, "files": {"other/b/x.csv": other}}
    config = s3env.config(s3bucket, queue)
    async with open_clients(config) as clients:
        store = InterferingStore(
            S3StateStore(clients.s3, s3bucket, config.state_key, config.state_max_bytes),
            s3env,
            competing,
        )
        scanner = Scanner(
            config, S3Lister(clients.s3, s3bucket), store, SqsSender(clients.sqs, queue)
        )
        assert await scanner.run() is None
    # No state at load: If-None-Match, refused (the competing write), reload, If-Match.
    assert len(store.conditions) == 2 and store.conditions[0] is None
    assert store.conditions[1] is not None
    state = s3env.state(s3bucket)
    assert state is not None
    assert set(state["files"]) == {"incoming/a/1.csv", "other/b/x.csv"}
    assert [b["key"] for b in s3env.bodies(queue)] == ["incoming/a/1.csv"]


class DeletingStore(InterferingStore):
    """The real S3 state store, with the state object deleted after our first load."""

    async def load(self) -> tuple[bytes | None, str | None]:
        self.loads += 1
        result = await self.inner.load()
        if self.loads == 1:
            self.env.s3.delete_object(Bucket=self.inner.bucket, Key=self.inner.key)
        return result


async def test_state_deleted_since_read_is_a_conflict_then_recreated(
    s3env: MotoEnv, s3bucket: str, queue: str
) -> None:
    """If-Match on a key deleted meanwhile: AWS and moto answer 404, SeaweedFS 412; both
    are a conflict, resolved by reloading (no state) and writing with If-None-Match."""
    s3env.s3.put_object(
        Bucket=s3bucket,
        Key=DEFAULT_STATE_KEY,
        Body=json.dumps({"version": 1, "files": {}}).encode(),
    )
    s3env.put(s3bucket, "incoming/a/1.csv")
    config = s3env.config(s3bucket, queue)
    async with open_clients(config) as clients:
        store = DeletingStore(
            S3StateStore(clients.s3, s3bucket, config.state_key, config.state_max_bytes),
            s3env,
            {},
        )
        scanner = Scanner(
            config, S3Lister(clients.s3, s3bucket), store, SqsSender(clients.sqs, queue)
        )
        assert await scanner.run() is None
    assert len(store.conditions) == 2
    assert store.conditions[0] is not None and store.conditions[1] is None
    state = s3env.state(s3bucket)
    assert state is not None and set(state["files"]) == {"incoming/a/1.csv"}


@pytest.mark.parametrize("existing", [False, True])
def test_one_winner_among_concurrent_conditional_writes(
    s3env: MotoEnv, s3bucket: str, existing: bool
) -> None:
    """Eight writers with the same condition at once: exactly one succeeds, the other
    seven get StateConflict, and the object holds the winner's bytes."""
    if_match: str | None = None
    if existing:
        etag = s3env.s3.put_object(Bucket=s3bucket, Key=DEFAULT_STATE_KEY, Body=b"{}")["ETag"]
        if_match = str(etag)
    config = s3env.config(s3bucket, None)
    start = threading.Barrier(8)
    outcomes: list[tuple[bytes, str | BaseException]] = []

    async def write(body: bytes) -> None:
        async with open_clients(config) as clients:
            store = S3StateStore(clients.s3, s3bucket, DEFAULT_STATE_KEY, 1 << 20)
            start.wait(timeout=30)
            try:
                outcomes.append((body, await store.save(body, if_match=if_match)))
            except Exception as exc:
                outcomes.append((body, exc))

    def run(body: bytes) -> None:
        anyio.run(write, body)

    threads = [
        threading.Thread(target=run, args=(json.dumps({"writer": i}).encode(),)) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [body for body, outcome in outcomes if isinstance(outcome, str)]
    conflicts = [o for _, o in outcomes if isinstance(o, StateConflict)]
    assert (len(winners), len(conflicts)) == (1, 7), outcomes
    assert s3env.state_bytes(s3bucket) == winners[0]


async def test_corrupt_state_is_500_unchanged_and_nothing_sent(
    s3env: MotoEnv, s3bucket: str, queue: str
) -> None:
    s3env.put(s3bucket, "incoming/a/1.csv")
    raw = b'{"version": 1, "files": {"incoming/a/1.csv": '
    s3env.s3.put_object(Bucket=s3bucket, Key=DEFAULT_STATE_KEY, Body=raw)
    summary = await scan(s3env.config(s3bucket, queue))
    assert summary["statusCode"] == 500
    assert f"s3://{s3bucket}/{DEFAULT_STATE_KEY}" in summary["error"]
    assert s3env.state_bytes(s3bucket) == raw
    assert s3env.bodies(queue) == []
    assert summary["api_calls"].get("ListObjectsV2", 0) == 0


async def test_unchanged_shards_are_verified_by_their_head(
    s3env: MotoEnv, s3bucket: str, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranged ``GetObject`` and user metadata as each backend serves them: the listing
    order of awkward keys gives the fingerprint the shard was written with."""
    monkeypatch.setattr("async_discovery.stages.folders.HEAD_BYTES", 300)
    names = ["a b.csv", "ü.csv", "+%2F.csv", "z.csv", "A.csv", "a~.csv", "日本.csv", "0.csv"]
    keys = [f"incoming/{folder}/{name}" for folder in ("x", "y") for name in names]
    s3env.put_many(s3bucket, keys)
    config = s3env.config(s3bucket, queue, state_layout="folders")
    first = await scan(config)
    assert (first["queued"], first["state_objects_written"]) == (16, 2)
    s3env.bodies(queue)
    warm = await scan(config)
    assert (warm["skipped"], warm["state_objects_verified"]) == (16, 2)
    s3env.put(s3bucket, "incoming/y/ü.csv", b"changed\n")
    run = await scan(config)
    assert (run["updated"], run["state_objects_verified"], run["state_objects_written"]) == (
        1,
        1,
        1,
    )
    assert [b["key"] for b in s3env.bodies(queue)] == ["incoming/y/ü.csv"]
