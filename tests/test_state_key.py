"""One mapping from ``S3_STATE_KEY`` to state keys, the same for every command.

``S3_STATE_KEY`` names the state of both layouts: ``state/run/`` (a prefix, as the
deployment template gives it) and ``state/run.json`` both mean the single object
``state/run.json`` and the state prefix ``state/run/``. The scan, ``state migrate``,
``doctor`` and ``iam-policy`` all read the setting through that one mapping, so a
migration writes exactly what the scanner of the other layout then reads.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from async_discovery.cli import main
from async_discovery.config import Config
from async_discovery.iam import build_policy, doctor_probe_key
from async_discovery.layout import shard_key

from .helpers import MotoEnv

P = "incoming/"


@pytest.mark.parametrize(
    ("setting", "single", "prefix"),
    [
        ("state/run/", "state/run.json", "state/run/"),
        ("state/run.json", "state/run.json", "state/run/"),
        ("state/run", "state/run", "state/run/"),
    ],
)
def test_the_setting_names_one_object_and_one_prefix(
    setting: str, single: str, prefix: str
) -> None:
    config = Config(source_bucket="b", state_bucket="b", state_key=setting, dry_run=True)
    assert (config.state_object_key, config.state_prefix) == (single, prefix)


def _scan(capsys: pytest.CaptureFixture[str], layout: str) -> dict[str, Any]:
    """One CLI scan under ``layout``; its summary."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STATE_LAYOUT", layout)
        assert main(["scan"]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    return summary


def _migrate(capsys: pytest.CaptureFixture[str], to: str) -> dict[str, Any]:
    assert main(["state", "migrate", "--to", to, "--output", "json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def test_a_prefix_setting_means_the_same_keys_to_scan_and_migrate(
    env: MotoEnv,
    bucket: str,
    queue_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    clean_config_env: None,
) -> None:
    env.set_variables(monkeypatch, bucket, queue_url, P, S3_STATE_KEY="state/run/")
    env.put_many(bucket, [f"{P}a/1.csv", f"{P}a/2.csv", f"{P}b/1.csv"])

    assert _scan(capsys, "folders")["queued"] == 3
    assert env.state(bucket, shard_key("state/run/", P, "a")) is not None

    # folders -> single: the object the single-layout scanner then reads.
    report = _migrate(capsys, "single")
    assert [o["name"] for o in report["objects"]] == [f"s3://{bucket}/state/run.json"]
    assert env.state(bucket, "state/run.json") is not None
    assert _scan(capsys, "single")["queued"] == 0  # nothing sent again
    env.put(bucket, f"{P}b/2.csv")
    assert _scan(capsys, "single")["queued"] == 1
    assert env.state_bytes(bucket, "state/run/") is None  # never a key ending in "/"

    # single -> folders: finds the object the single-layout scanner wrote.
    for key in [f"{P}a", f"{P}b"]:
        env.s3.delete_object(Bucket=bucket, Key=f"state/run/folders/{key}.json")
    report = _migrate(capsys, "folders")
    assert report["source"] == f"s3://{bucket}/state/run.json"
    assert report["counts"] == {"wrote": 2}
    assert _scan(capsys, "folders")["queued"] == 0
    assert len(env.bodies(queue_url)) == 4  # each file sent exactly once

    # The doctor reads the same object, and the policy grants it.
    monkeypatch.setenv("STATE_LAYOUT", "single")
    assert main(["doctor", "--output", "json"]) == 0
    checks = json.loads(capsys.readouterr().out)["checks"]
    state = next(c for c in checks if c["check"] == "state")
    assert f"s3://{bucket}/state/run.json: 4 entries" in state["found"]
    config = Config(source_bucket=bucket, state_bucket=bucket, state_key="state/run/", dry_run=True)
    resources = json.dumps(build_policy(config, doctor=True).document)
    assert f"arn:aws:s3:::{bucket}/state/run.json" in resources
    assert f"{bucket}/state/run/" not in resources
    assert doctor_probe_key(config).startswith("state/run.json")
