"""Runs that would do nothing and say nothing: a prefix with no object under it (a
misspelt ``S3_PREFIX``), ``--folders`` naming no folder, a missing source bucket that
also holds the state. Against moto, through the CLI and the Lambda handler."""

from __future__ import annotations

import json
from typing import Any

import pytest

from async_discovery.cli import main
from async_discovery.handler import lambda_handler

from .helpers import MotoEnv

pytestmark = pytest.mark.usefixtures("clean_config_env")


@pytest.fixture
def run_env(
    env: MotoEnv, bucket: str, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env.put_many(bucket, ["incoming/a/1.csv", "incoming/b/1.csv"])
    return env.set_variables(monkeypatch, bucket, queue_url)


def _logged(err: str, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


@pytest.mark.parametrize("layout", ["single", "folders"])
def test_a_prefix_with_nothing_under_it_is_said_on_the_terminal_and_in_the_log(
    run_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    layout: str,
) -> None:
    monkeypatch.setenv("STATE_LAYOUT", layout)
    bucket = run_env["S3_SOURCE_BUCKET"]
    assert main(["scan", "--prefix", "incomming"]) == 0  # the run did what was asked
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (summary["statusCode"], summary["listed"]) == (200, 0)
    notice = f"nothing listed under s3://{bucket}/incomming/: check S3_PREFIX"
    assert len(summary["notices"]) == 1 and summary["notices"][0].startswith(notice)
    said = [line for line in err.splitlines() if not line.startswith("{")]
    assert len(said) == 1 and said[0].startswith(f"async-discovery scan: warning: {notice}")
    [logged] = _logged(err, "empty_listing")
    assert logged["level"] == "WARNING" and logged["message"].startswith(notice)

    # The right prefix: files found, no notice.
    assert main(["scan"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["queued"] == 2 and "notices" not in json.loads(out)
    assert "warning" not in err.lower() and not _logged(err, "empty_listing")


def test_folders_that_do_not_exist_are_said(
    run_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STATE_LAYOUT", "folders")
    assert main(["scan", "--folders", "nope,zilch"]) == 0
    out, err = capsys.readouterr()
    [notice] = json.loads(out)["notices"]
    assert "nothing listed in the folders nope, zilch of s3://" in notice
    assert f"async-discovery scan: warning: {notice}" in err


def test_lambda_summary_carries_the_notice(
    run_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_PREFIX", "incomming/")
    summary = lambda_handler({}, None)
    assert summary["statusCode"] == 200
    assert summary["notices"][0].startswith("nothing listed under s3://")


@pytest.mark.parametrize("value", ["", " , ", ","])
def test_folders_naming_no_folder_is_a_usage_error(
    run_env: dict[str, str],
    env: MotoEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
) -> None:
    monkeypatch.setenv("STATE_LAYOUT", "folders")
    with pytest.raises(SystemExit) as info:
        main(["scan", "--folders", value])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "argument --folders: names no folder" in err
    assert env.bodies(run_env["SQS_QUEUE_URL"]) == []


@pytest.mark.parametrize("layout", ["single", "folders"])
def test_a_missing_source_bucket_is_named_as_the_source_bucket(
    run_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    layout: str,
) -> None:
    # S3_STATE_BUCKET unset: the state lives in the source bucket, and the first call
    # that finds the bucket missing is the state read.
    monkeypatch.setenv("STATE_LAYOUT", layout)
    monkeypatch.setenv("S3_SOURCE_BUCKET", "no-such-source-here")
    assert main(["scan"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert "source bucket 'no-such-source-here' does not exist" in error
    assert "state bucket" not in error
    if layout == "folders":
        assert main(["plan"]) == 1
        error = json.loads(capsys.readouterr().out)["error"]
        assert "source bucket 'no-such-source-here' does not exist" in error
