"""``async-discovery state migrate`` against moto (SPEC "State layout `folders`"): between
the layouts of the same ``S3_STATE_KEY`` without losing an entry, idempotent, the source
left in place, a differing target refused unless ``--force``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from async_discovery.cli import main
from async_discovery.config import DEFAULT_STATE_KEY, Config
from async_discovery.layout import runs_key, shard_key
from async_discovery.migrate import CURSOR_NOTE, Report, Target, run_migrate

from .helpers import MotoEnv, scan

SP = "state/processed_files/"  # the state prefix of the default S3_STATE_KEY
P = "incoming/"


def state_keys(env: MotoEnv, bucket: str) -> dict[str, str]:
    """Every state object's key and ETag."""
    resp = env.s3.list_objects_v2(Bucket=bucket, Prefix="state/")
    return {item["Key"]: item["ETag"] for item in resp.get("Contents", [])}


def entries(doc: dict[str, Any] | None, prefix: str = P) -> dict[str, str]:
    """The entries of ``prefix`` in a state document, each as its JSON text."""
    assert doc is not None
    return {
        k: json.dumps(v, sort_keys=True) for k, v in doc["files"].items() if k.startswith(prefix)
    }


async def migrate(config: Config, to: Target, **kw: Any) -> Report:
    kw.setdefault("dry_run", False)
    kw.setdefault("force", False)
    return await run_migrate(config, to=to, **kw)


async def single_state(env: MotoEnv, bucket: str, queue_url: str) -> Config:
    """A single-layout state holding folders a, b, c of P and a folder of another prefix."""
    keys = [f"{P}{f}/{i}.csv" for f, n in {"a": 3, "b": 2, "c": 1}.items() for i in range(n)]
    env.put_many(bucket, [*keys, "other/x/1.csv"])
    config = env.config(bucket, queue_url)
    assert (await scan(config))["queued"] == 6
    assert (await scan(env.config(bucket, queue_url, prefix="other/")))["queued"] == 1
    env.bodies(queue_url)
    return config


async def test_round_trip_loses_no_entry_and_leaves_the_source(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    config = await single_state(env, bucket, queue_url)
    original = env.state_bytes(bucket)
    before = entries(env.state(bucket))
    assert len(before) == 6

    report = await migrate(config, "folders")
    assert report.ok, report.text()
    assert sorted((o.name.rsplit("/", 1)[1], o.action, o.entries) for o in report.outcomes) == [
        ("a.json", "wrote", 3),
        ("b.json", "wrote", 2),
        ("c.json", "wrote", 1),
    ]
    assert any("1 entries outside the folders" in note for note in report.notes)
    assert env.state_bytes(bucket) == original  # the source stays in place, unchanged
    shards: dict[str, str] = {}
    for folder in "abc":
        doc = env.state(bucket, shard_key(SP, P, folder))
        assert doc is not None
        assert (doc["version"], doc["source_bucket"], doc["prefix"], doc["folder"]) == (
            2,
            bucket,
            P,
            folder,
        )
        assert all(k.startswith(f"{P}{folder}/") for k in doc["files"])
        shards.update(entries(doc))
    assert shards == before  # every entry, each byte for byte
    assert "other/x/1.csv" not in shards

    # Back to single with the single object gone: the same entries, byte for byte.
    env.s3.delete_object(Bucket=bucket, Key=DEFAULT_STATE_KEY)
    shard_objects = state_keys(env, bucket)
    back = await migrate(config, "single")
    assert back.ok, back.text()
    assert [(o.action, o.entries) for o in back.outcomes] == [("wrote", 6)]
    assert entries(env.state(bucket)) == before
    assert env.state(bucket, DEFAULT_STATE_KEY)["source_bucket"] == bucket  # type: ignore[index]
    assert {k: v for k, v in state_keys(env, bucket).items() if k in shard_objects} == (
        shard_objects  # the shards stay in place, unchanged
    )


async def test_a_second_run_changes_nothing(env: MotoEnv, bucket: str, queue_url: str) -> None:
    config = await single_state(env, bucket, queue_url)
    assert (await migrate(config, "folders")).ok
    objects = state_keys(env, bucket)

    again = await migrate(config, "folders")
    assert again.ok
    assert {o.action for o in again.outcomes} == {"same"} and len(again.outcomes) == 3
    # To single while the single object already holds them all: same as well.
    single = await migrate(config, "single")
    assert [o.action for o in single.outcomes] == ["same"]
    assert state_keys(env, bucket) == objects  # no object written (ETags unchanged)


async def test_dry_run_writes_nothing(env: MotoEnv, bucket: str, queue_url: str) -> None:
    config = await single_state(env, bucket, queue_url)
    objects = state_keys(env, bucket)
    report = await migrate(config, "folders", dry_run=True)
    assert report.ok
    assert [o.action for o in report.outcomes] == ["would write"] * 3
    assert state_keys(env, bucket) == objects

    assert (await migrate(config, "folders")).ok
    env.s3.delete_object(Bucket=bucket, Key=DEFAULT_STATE_KEY)
    objects = state_keys(env, bucket)
    to_single = await migrate(config, "single", dry_run=True)
    assert [(o.action, o.entries) for o in to_single.outcomes] == [("would write", 6)]
    assert state_keys(env, bucket) == objects


async def test_a_differing_shard_is_refused_unless_forced(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    config = await single_state(env, bucket, queue_url)
    assert (await migrate(config, "folders")).ok
    key_b = shard_key(SP, P, "b")
    doc = env.state(bucket, key_b)
    assert doc is not None
    doc["files"][f"{P}b/0.csv"]["etag"] = "0" * 32
    changed = json.dumps(doc).encode()
    env.s3.put_object(Bucket=bucket, Key=key_b, Body=changed)
    env.s3.delete_object(Bucket=bucket, Key=shard_key(SP, P, "c"))

    refused = await migrate(config, "folders")
    assert not refused.ok
    actions = {o.name.rsplit("/", 1)[1]: o.action for o in refused.outcomes}
    assert actions == {"a.json": "same", "b.json": "differs"}
    assert env.state_bytes(bucket, key_b) == changed
    assert env.state(bucket, shard_key(SP, P, "c")) is None  # nothing written when refused

    forced = await migrate(config, "folders", force=True)
    assert forced.ok, forced.text()
    actions = {o.name.rsplit("/", 1)[1]: o.action for o in forced.outcomes}
    assert actions == {"a.json": "same", "b.json": "wrote", "c.json": "wrote"}
    assert entries(env.state(bucket, key_b)) == entries(env.state(bucket), f"{P}b/")


async def test_a_differing_single_object_is_refused_unless_forced(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    config = await single_state(env, bucket, queue_url)
    assert (await migrate(config, "folders")).ok
    doc = env.state(bucket)
    assert doc is not None
    doc["files"][f"{P}a/0.csv"]["etag"] = "0" * 32
    changed = json.dumps(doc).encode()
    env.s3.put_object(Bucket=bucket, Key=DEFAULT_STATE_KEY, Body=changed)

    refused = await migrate(config, "single")
    assert not refused.ok
    assert [o.action for o in refused.outcomes] == ["differs"]
    assert f"{P}a/0.csv" in refused.outcomes[0].detail
    assert env.state_bytes(bucket) == changed

    forced = await migrate(config, "single", force=True)
    assert forced.ok
    assert [o.action for o in forced.outcomes] == ["wrote"]
    after = env.state(bucket)
    assert after is not None
    assert after["files"][f"{P}a/0.csv"]["etag"] != "0" * 32  # the shard's entry won
    assert "other/x/1.csv" in after["files"]  # other prefixes' entries kept


async def test_a_scan_after_migrating_to_folders_sends_nothing(
    env: MotoEnv, bucket: str, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrated shards carry their fingerprint: a scan opening them by their head finds
    every folder unchanged."""
    monkeypatch.setattr(
        "async_discovery.stages.folders.HEAD_BYTES", 200
    )  # every shard here is larger
    config = await single_state(env, bucket, queue_url)
    assert (await migrate(config, "folders")).ok
    folders = env.config(bucket, queue_url, state_layout="folders")
    summary = await scan(folders)
    assert (summary["statusCode"], summary["queued"], summary["skipped"]) == (200, 0, 6)
    assert summary["state_objects_written"] == 0
    assert summary["state_objects_verified"] == 3
    assert env.bodies(queue_url) == []


async def test_the_cursor_is_not_migrated_and_says_so(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    config = await single_state(env, bucket, queue_url)
    assert CURSOR_NOTE not in (await migrate(config, "folders")).notes
    env.put(bucket, runs_key(SP, P, "cursor.json"), b'{"version": 2}')
    env.s3.delete_object(Bucket=bucket, Key=DEFAULT_STATE_KEY)
    report = await migrate(config, "single")
    assert report.ok
    assert CURSOR_NOTE in report.notes


async def test_nothing_to_migrate_fails(env: MotoEnv, bucket: str, queue_url: str) -> None:
    config = env.config(bucket, queue_url)
    for to in ("folders", "single"):
        report = await migrate(config, to)
        assert not report.ok
        assert report.error is not None and "nothing to migrate" in report.error


def test_cli_prints_a_line_per_object_or_json_and_exits_1_when_refused(
    env: MotoEnv, bucket: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SQS_QUEUE_URL", raising=False)  # a migration needs no queue
    env.put(bucket, f"{P}a/1.csv")
    env.s3.put_object(
        Bucket=bucket,
        Key=DEFAULT_STATE_KEY,
        Body=json.dumps(
            {
                "version": 1,
                "files": {f"{P}a/1.csv": {"status": "queued", "etag": "e1", "size": 1}},
            }
        ).encode(),
    )
    flags = ["--bucket", bucket, "--prefix", P, "--endpoint-url", env.endpoint]
    assert main(["state", "migrate", "--to", "folders", "--dry-run", *flags]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would write") and shard_key(SP, P, "a") in out
    assert env.state(bucket, shard_key(SP, P, "a")) is None

    assert main(["state", "migrate", "--to", "folders", "--output", "json", *flags]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["ok"], doc["counts"], doc["to"]) == (True, {"wrote": 1}, "folders")

    env.s3.put_object(
        Bucket=bucket,
        Key=DEFAULT_STATE_KEY,
        Body=json.dumps(
            {
                "version": 1,
                "files": {f"{P}a/1.csv": {"status": "queued", "etag": "e2", "size": 1}},
            }
        ).encode(),
    )
    assert main(["state", "migrate", "--to", "folders", *flags]) == 1
    assert capsys.readouterr().out.startswith("differs")
    assert main(["state", "migrate", "--to", "folders", "--force", *flags]) == 0
    assert env.state(bucket, shard_key(SP, P, "a"))["files"][f"{P}a/1.csv"]["etag"] == "e2"  # type: ignore[index]


async def test_a_large_folder_migrates_into_key_ranges_and_back(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """``--to folders`` splits a folder of more than ``SHARD_MAX_FILES`` entries into
    range shards and its index, as a scan would; a scan then verifies every range and
    sends nothing; ``--to single`` gathers every range again."""
    keys = [f"{P}big/{i:02d}.csv" for i in range(10)] + [f"{P}small/0.csv"]
    env.put_many(bucket, keys)
    single = env.config(bucket, queue_url)
    assert (await scan(single))["queued"] == 11
    env.bodies(queue_url)
    folders = env.config(bucket, queue_url, state_layout="folders", shard_max_files=4)

    report = await migrate(folders, "folders")
    assert report.ok, report.text()
    outcomes = {o.name.rsplit("/", 1)[1]: (o.action, o.entries) for o in report.outcomes}
    assert outcomes == {"big.json": ("wrote", 10), "small.json": ("wrote", 1)}
    index = env.state(bucket, shard_key(SP, P, "big"))
    assert index is not None and index["version"] == 3 and len(index["ranges"]) == 5
    assert (await migrate(folders, "folders")).outcomes[0].action == "same"  # idempotent

    warm = await scan(folders)
    assert (warm["queued"], warm["skipped"], warm["state_objects_written"]) == (0, 11, 0)

    env.s3.delete_object(Bucket=bucket, Key=DEFAULT_STATE_KEY)
    back = await migrate(folders, "single")
    assert back.ok, back.text()
    assert set(entries(env.state(bucket))) == set(keys)
