"""Configuration from the environment (SPEC "Configuration")."""

from __future__ import annotations

import dataclasses

import pytest

from async_discovery.config import DEFAULT_STATE_KEY, Config
from async_discovery.errors import ConfigError

BASE = {
    "S3_SOURCE_BUCKET": "src-bucket",
    "SQS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/q",
}


def test_defaults() -> None:
    cfg = Config.from_env(BASE)
    assert cfg.source_bucket == "src-bucket"
    assert cfg.prefix == ""
    assert cfg.state_bucket == "src-bucket"
    assert cfg.state_key == DEFAULT_STATE_KEY == "state/processed_files.json"
    assert cfg.skip_folders == frozenset({"logs", "temp", "backups"})
    assert cfg.prune_missing is True
    assert cfg.deadline_margin_seconds == 2.0
    assert cfg.list_strategy == "auto" and cfg.folder_threshold == 1000
    assert not cfg.dry_run and not cfg.is_fifo


def test_config_is_frozen() -> None:
    cfg = Config.from_env(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.prefix = "x"  # type: ignore[misc]


@pytest.mark.parametrize("raw", ["incoming", "incoming/"])
def test_prefix_with_or_without_slash(raw: str) -> None:
    assert Config.from_env({**BASE, "S3_PREFIX": raw}).prefix == "incoming/"


def test_skip_folders_trimmed_and_empty_means_none() -> None:
    cfg = Config.from_env({**BASE, "SKIP_FOLDERS": " a , b ,c,, "})
    assert cfg.skip_folders == frozenset({"a", "b", "c"})
    assert Config.from_env({**BASE, "SKIP_FOLDERS": ""}).skip_folders == frozenset()


def test_every_missing_required_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"S3_SOURCE_BUCKET": "  ", "SQS_QUEUE_URL": ""})
    text = str(info.value)
    assert "S3_SOURCE_BUCKET" in text and "SQS_QUEUE_URL" in text
    assert len(info.value.problems) == 2


def test_queue_not_required_for_dry_run() -> None:
    cfg = Config.from_env({"S3_SOURCE_BUCKET": "src-bucket"}, dry_run=True)
    assert cfg.dry_run and cfg.queue_url is None


def test_invalid_values_are_all_reported() -> None:
    env = {
        **BASE,
        "S3_SOURCE_BUCKET": "Bad_Bucket",
        "SQS_QUEUE_URL": "not a url",
        "PRUNE_MISSING": "maybe",
        "WORKERS": "0",
        "LIST_STRATEGY": "sideways",
        "DEADLINE_MARGIN_SECONDS": "-1",
        "INITIAL_SCAN": "since:yesterday",
        "SKIP_FOLDERS": "a/b",
    }
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    names = [
        "S3_SOURCE_BUCKET",
        "SQS_QUEUE_URL",
        "PRUNE_MISSING",
        "WORKERS",
        "LIST_STRATEGY",
        "DEADLINE_MARGIN_SECONDS",
        "INITIAL_SCAN",
        "SKIP_FOLDERS",
    ]
    for name in names:
        assert any(name in p for p in info.value.problems), name


def test_flags_override_environment() -> None:
    cfg = Config.from_env(
        {**BASE, "S3_PREFIX": "env"},
        prefix="flag",
        source_bucket="flag-bucket",
        skip_folders="x",
        state_key="k.json",
        endpoint_url="http://127.0.0.1:5000",
    )
    assert (cfg.prefix, cfg.source_bucket, cfg.state_bucket) == (
        "flag/",
        "flag-bucket",
        "flag-bucket",
    )
    assert cfg.skip_folders == frozenset({"x"})
    assert cfg.state_key == "k.json"
    assert cfg.endpoint_url == "http://127.0.0.1:5000"


def test_fifo_from_url() -> None:
    cfg = Config.from_env({**BASE, "SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/q.fifo"})
    assert cfg.is_fifo


def test_initial_scan_since_parses_z() -> None:
    cfg = Config.from_env({**BASE, "INITIAL_SCAN": "since:2026-01-01T00:00:00Z"})
    assert cfg.initial_scan.mode == "since"
    assert cfg.initial_scan.since is not None and cfg.initial_scan.since.year == 2026
