"""``scan --dry-run --explain`` against a moto server.

The CLI runs in a subprocess (as an operator runs it, piping stdout into jq): every
stdout line is one JSON object; one per object, then the per-reason counts, then the
summary.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from typing import Any

import anyio
import pytest

from async_discovery.config import parse_initial_scan

from .helpers import MotoEnv, scan
from .operator_support import run_scanner


async def run_cli(
    *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m async_discovery scan ARGS`` in a worker thread (moto keeps serving)."""
    return await anyio.to_thread.run_sync(functools.partial(_run_cli, args, env_extra))


def _run_cli(
    args: tuple[str, ...], env_extra: dict[str, str] | None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "async_discovery", "scan", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("strategy", ["folders", "flat"])
async def test_explain_lists_every_object_with_its_reason(
    env: MotoEnv, bucket: str, queue_url: str, strategy: str
) -> None:
    old = env.put(bucket, "incoming/a/changed.csv", "v1\n")
    env.put(bucket, "incoming/a/same.csv")
    await scan(env.config(bucket, queue_url))
    env.bodies(queue_url)
    new = env.put(bucket, "incoming/a/changed.csv", "v2, longer\n")
    fresh = env.put(bucket, "incoming/a/new.csv")
    for key in (
        "incoming/a/deep/x.csv",
        "incoming/top.csv",
        "incoming/logs/l.csv",
        "incoming/a/readme.txt",
    ):
        env.put(bucket, key)
    env.put(bucket, "incoming/b/", b"")
    state_before = env.state_bytes(bucket)

    done = await run_cli(
        "--bucket",
        bucket,
        "--prefix",
        "incoming",
        "--endpoint-url",
        env.endpoint,
        "--dry-run",
        "--explain",
        env_extra={"LIST_STRATEGY": strategy, "LOG_LEVEL": "WARNING"},
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    summary, counts = lines[-1], lines[-2]
    per_object: dict[str, dict[str, Any]] = {line["key"]: line for line in lines[:-2]}
    assert len(per_object) == len(lines) - 2  # one line per object

    assert per_object["incoming/a/new.csv"] == {
        "key": "incoming/a/new.csv",
        "action": "send",
        "reason": "new",
        "etag": fresh,
        "previous_etag": None,
    }
    changed = per_object["incoming/a/changed.csv"]
    assert (changed["action"], changed["reason"]) == ("send", "updated")
    assert (changed["etag"], changed["previous_etag"]) == (new, old)
    assert (
        per_object["incoming/a/same.csv"]["action"],
        per_object["incoming/a/same.csv"]["reason"],
    ) == ("skip", "unchanged")

    reasons = {
        key: line["reason"] for key, line in per_object.items() if line["action"] == "ignore"
    }
    deep, skipped = (
        ("incoming/a/deep/", "incoming/logs/")  # rolled up by the delimiter, never listed
        if strategy == "folders"
        else ("incoming/a/deep/x.csv", "incoming/logs/l.csv")
    )
    assert reasons == {
        deep: "deep",
        "incoming/top.csv": "top-level",
        skipped: "skipped-folder",
        "incoming/a/readme.txt": "not-csv",
        "incoming/b/": "marker",
    }
    assert counts == {
        "explain_counts": {
            "ignore": {"deep": 1, "top-level": 1, "skipped-folder": 1, "not-csv": 1, "marker": 1},
            "send": {"new": 1, "updated": 1},
            "skip": {"unchanged": 1},
        }
    }
    assert (summary["statusCode"], summary["dry_run"], summary["queued"]) == (200, True, 2)
    assert (summary["skipped"], summary["ignored"]) == (1, 5)
    # A dry run: nothing sent, nothing written.
    assert env.bodies(queue_url) == []
    assert env.state_bytes(bucket) == state_before


async def test_explain_needs_dry_run(env: MotoEnv, bucket: str, queue_url: str) -> None:
    done = await run_cli(
        "--bucket", bucket, "--queue-url", queue_url, "--endpoint-url", env.endpoint, "--explain"
    )
    assert done.returncode == 2
    assert "--dry-run" in done.stderr
    assert env.bodies(queue_url) == []


async def test_explain_shows_marking_and_deferral(env: MotoEnv, bucket: str) -> None:
    env.put(bucket, "incoming/a/1.csv")
    await anyio.sleep(1.1)  # older than the second the pass starts in (LastModified)
    lines: list[dict[str, Any]] = []
    marked = env.config(
        bucket, None, dry_run=True, initial_scan=parse_initial_scan("mark-existing", [])
    )
    await run_scanner(marked, explain=lines.append)
    assert [(d.get("action"), d.get("reason"), d.get("policy")) for d in lines[:-1]] == [
        ("mark", "initial-scan", "mark-existing")
    ]
    assert lines[-1] == {"explain_counts": {"mark": {"initial-scan": 1}}}

    lines.clear()
    young = env.config(bucket, None, dry_run=True, min_object_age_seconds=3600)
    summary = await run_scanner(young, explain=lines.append)
    [line] = lines[:-1]
    assert (line["key"], line["action"], line["reason"]) == ("incoming/a/1.csv", "defer", "min-age")
    assert 0 <= line["age_seconds"] < 3600
    assert lines[-1] == {"explain_counts": {"defer": {"min-age": 1}}}
    assert summary["deferred"] == 1


async def test_force_rebind_flag(env: MotoEnv, queue_url: str) -> None:
    state_bucket, first, second = env.new_bucket(), env.new_bucket(), env.new_bucket()
    env.put(first, "incoming/a/1.csv")
    await scan(env.config(first, queue_url, state_bucket=state_bucket))
    base = ["--state-bucket", state_bucket, "--queue-url", queue_url]
    base += ["--endpoint-url", env.endpoint, "--bucket", second]

    refused = await run_cli(*base)
    assert refused.returncode == 1
    assert "force-rebind" in json.loads(refused.stdout.splitlines()[-1])["error"]
    rebound = await run_cli(*base, "--force-rebind")
    assert rebound.returncode == 0, rebound.stderr
    assert env.state(state_bucket)["source_bucket"] == second  # type: ignore[index]
