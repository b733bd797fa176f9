"""Under ``STATE_LAYOUT=folders`` a bad or contended state object fails alone, against
moto: an unreadable shard stops only its folder, pass after pass; a shard another run
has just written survives a prune; a run object of the wrong shape, a name too long for
S3, a shard of another folder are refused with a clear error."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import pytest

from async_discovery.aws import S3Lister, S3StateObjects, S3StateStore, SqsSender, open_clients
from async_discovery.config import Config, parse_initial_scan
from async_discovery.errors import ConfigError, StateConflict
from async_discovery.layout import runs_key, shard_key, shard_name
from async_discovery.pipeline import Scanner
from async_discovery.ports import RawPage
from async_discovery.summary import RunStats, build_summary

from .helpers import MotoEnv, scan

SP = "state/processed_files/"
P = "incoming/"


def config(env: MotoEnv, bucket: str, queue_url: str | None, **kw: Any) -> Config:
    return env.config(bucket, queue_url, state_layout="folders", **kw)


def sent(env: MotoEnv, queue_url: str) -> Counter[str]:
    return Counter(body["key"] for body in env.bodies(queue_url))


@pytest.mark.parametrize("policy", ["mark-existing", "since:2000-01-01T00:00:00Z"])
async def test_an_unreadable_shard_fails_its_folder_alone_on_every_run(
    env: MotoEnv, bucket: str, queue_url: str, policy: str
) -> None:
    """After the prefix's first run (its policy in ``initial.json``), a corrupt shard
    fails its folder on each run while new files of every other folder are sent."""
    env.put_many(bucket, [f"{P}{f}/0.csv" for f in "abc"])
    await anyio.sleep(1.1)  # whole seconds: mark-existing marks what predates the first run
    cfg = config(env, bucket, queue_url, initial_scan=parse_initial_scan(policy, []))
    first = await scan(cfg)
    assert first["statusCode"] == 200
    env.bodies(queue_url)
    bad = shard_key(SP, P, "b")
    env.put(bucket, bad, b"{corrupt")

    for run in range(1, 4):
        new = [f"{P}a/new{run}.csv", f"{P}c/new{run}.csv"]
        env.put_many(bucket, [*new, f"{P}b/new{run}.csv"])
        summary = await scan(cfg)
        assert (summary["statusCode"], summary["folder_errors"]) == (207, 1), summary
        assert sent(env, queue_url) == Counter(new), run
        assert env.state_bytes(bucket, bad) == b"{corrupt"
        assert env.state(bucket, runs_key(SP, P, "cursor.json")) is None


async def test_a_prune_keeps_a_shard_another_run_has_just_written(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """Run A lists folders a and b; folder c appears and run B sends c/00.csv and writes
    its shard; A, pruning the shards of folders it did not see, must keep c's."""
    env.put_many(bucket, [f"{P}a/00.csv", f"{P}b/00.csv"])
    cfg = config(env, bucket, queue_url)
    await scan(cfg)
    env.bodies(queue_url)

    class OverlappedLister:
        """A's lister: once A's folder discovery is done, B runs whole."""

        def __init__(self, inner: S3Lister) -> None:
            self.inner, self.done = inner, False

        async def pages(
            self, prefix: str, *, delimiter: bool, start_after: str | None = None
        ) -> AsyncGenerator[RawPage, None]:
            if prefix != P and not self.done:
                self.done = True
                env.put(bucket, f"{P}c/00.csv")
                assert (await scan(cfg))["queued"] == 1
            async for page in self.inner.pages(
                prefix, delimiter=delimiter, start_after=start_after
            ):
                yield page

    stats = RunStats()
    async with open_clients(cfg, stats.api_calls) as clients:
        lister = OverlappedLister(S3Lister(clients.s3, bucket))
        scanner = Scanner(
            cfg,
            lister,
            S3StateStore(clients.s3, bucket, cfg.state_key, cfg.state_max_bytes),
            SqsSender(clients.sqs, queue_url),
            objects=S3StateObjects(clients.s3, bucket, cfg.state_max_bytes),
            stats=stats,
        )
        error = await scanner.run()
    summary = build_summary(stats, 0.0, error=error)
    assert lister.done and summary["statusCode"] == 200
    assert env.state(bucket, shard_key(SP, P, "c")) is not None
    assert sent(env, queue_url) == Counter([f"{P}c/00.csv"])  # B's send, once
    assert (await scan(cfg))["queued"] == 0

    # A folder really gone: its shard is deleted.
    env.s3.delete_object(Bucket=bucket, Key=f"{P}b/00.csv")
    assert (await scan(cfg))["statusCode"] == 200
    assert env.state(bucket, shard_key(SP, P, "b")) is None


async def test_a_shard_is_deleted_only_if_it_is_the_one_seen(env: MotoEnv, bucket: str) -> None:
    key = shard_key(SP, P, "x")
    seen = env.put(bucket, key, b'{"version": 2}')
    env.put(bucket, key, b'{"version": 2, "files": {}}')  # written again meanwhile
    async with open_clients(config(env, bucket, None, dry_run=True), Counter()) as clients:
        objects = S3StateObjects(clients.s3, bucket, 1 << 20)
        with pytest.raises(StateConflict):
            await objects.delete(key, if_match=seen)
        assert env.state_bytes(bucket, key) is not None
        await objects.delete(key, if_match=(await objects.etags(key))[key])
    assert env.state_bytes(bucket, key) is None


@pytest.mark.parametrize(
    "cursor",
    [
        {"strategy": "flat", "start_after": None},
        {"strategy": "folders", "pending": {"a/b": None}},
        {"strategy": "folders", "todo": {"a": [{"after": 1}]}},
        {"strategy": "folders", "todo": {"": [{"after": None, "until": None}]}},
    ],
    ids=["flat", "slash", "bound-not-a-key", "empty-name"],
)
async def test_a_cursor_of_another_shape_is_a_500_naming_it(
    env: MotoEnv, bucket: str, queue_url: str, cursor: dict[str, Any]
) -> None:
    env.put(bucket, f"{P}a/0.csv")
    key = runs_key(SP, P, "cursor.json")
    body = json.dumps({"version": 2, "prefix": P, "cursor": cursor}).encode()
    env.put(bucket, key, body)
    summary = await scan(config(env, bucket, queue_url))
    assert summary["statusCode"] == 500, summary
    assert key in summary["error"]
    assert env.bodies(queue_url) == []
    assert env.state_bytes(bucket, key) == body


def test_a_prefix_too_long_for_its_state_keys_is_refused() -> None:
    prefix = "p" * 980
    base = {"S3_SOURCE_BUCKET": "bkt-a", "SQS_QUEUE_URL": "http://127.0.0.1:1/1/q"}
    with pytest.raises(ConfigError, match="S3_PREFIX") as caught:
        Config.from_env({**base, "STATE_LAYOUT": "folders", "S3_PREFIX": prefix})
    assert "1024" in str(caught.value)
    # The single layout writes one object only: its key is the state key.
    assert Config.from_env({**base, "S3_PREFIX": prefix}).prefix == prefix + "/"


async def test_a_shard_that_records_another_folder_fails_that_folder(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """A folder literally named ``h-<sha256 of F>`` shares F's hashed shard key: the
    shard records F, so it is unreadable for the other folder (207), and F proceeds."""
    long = "é" * 600  # the plain shard key would pass 1,024 bytes: hashed
    twin = shard_name(long)
    assert shard_key(SP, P, long) == shard_key(SP, P, twin)
    env.put(bucket, f"{P}{long}/0.csv")
    cfg = config(env, bucket, queue_url)
    assert (await scan(cfg))["queued"] == 1
    env.put(bucket, f"{P}{twin}/0.csv")
    env.put(bucket, f"{P}{long}/1.csv")

    summary = await scan(cfg)
    assert (summary["statusCode"], summary["folder_errors"]) == (207, 1), summary
    assert f"records folder {long!r}" in summary["error"]
    assert sent(env, queue_url) == Counter([f"{P}{long}/0.csv", f"{P}{long}/1.csv"])
