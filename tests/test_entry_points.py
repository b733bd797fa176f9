"""The entry points always answer with a summary: unexpected exceptions, LOG_LEVEL
validated with the rest of the configuration, the Lambda event's ``dry_run``, and the
``demo``/``bench`` commands without the demo extra."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from async_discovery.cli import main
from async_discovery.handler import lambda_handler
from async_discovery.logs import configure_logging
from async_discovery.stages.batching import Decider

from .helpers import MotoEnv, scan

pytestmark = pytest.mark.usefixtures("clean_config_env")


class FakeContext:
    """The Lambda context: plenty of time left."""

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@pytest.fixture
def run_env(env: MotoEnv, bucket: str, queue_url: str, monkeypatch: pytest.MonkeyPatch) -> MotoEnv:
    """The variables of a scan of ``bucket``'s ``incoming/`` (one candidate) against moto."""
    env.put(bucket, "incoming/a/1.csv")
    monkeypatch.setenv("S3_SOURCE_BUCKET", bucket)
    monkeypatch.setenv("S3_PREFIX", "incoming")
    monkeypatch.setenv("SQS_QUEUE_URL", queue_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", env.endpoint)
    return env


def explode(self: Decider, unit: Any, folder: str, obj: Any) -> None:
    """Stands in for a bug met while deciding a candidate (inside the stage task group)."""
    raise RuntimeError(f"boom at {obj.key}")


# -- an unexpected exception is a 500 summary -------------------------------------------


async def test_unexpected_exception_in_a_run_is_a_500_summary(
    env: MotoEnv, bucket: str, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    monkeypatch.setattr(Decider, "_decide", explode)
    logs = io.StringIO()
    configure_logging("INFO", stream=logs)
    try:
        summary = await scan(env.config(bucket, queue_url))
    finally:
        configure_logging("INFO")
    assert summary["statusCode"] == 500
    assert summary["error"] == "unexpected error: RuntimeError: boom at incoming/a/1.csv"
    assert {"queued", "skipped", "errors", "execution_time_seconds"} <= set(summary)
    crash = [json.loads(line) for line in logs.getvalue().splitlines()]
    (record,) = [r for r in crash if r.get("event") == "scan_crash"]
    assert record["level"] == "ERROR"
    assert "Traceback" in record["exception"] and "RuntimeError: boom" in record["exception"]
    assert env.bodies(queue_url) == [] and env.state(bucket) is None


def test_unexpected_exception_in_the_lambda_handler_is_a_500_summary(
    run_env: MotoEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Decider, "_decide", explode)
    summary = lambda_handler({}, FakeContext())
    assert summary["statusCode"] == 500
    assert "RuntimeError: boom at incoming/a/1.csv" in summary["error"]


def test_unexpected_exception_in_cli_scan_prints_the_summary_and_exits_1(
    run_env: MotoEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(Decider, "_decide", explode)
    assert main(["scan"]) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["statusCode"] == 500
    assert "RuntimeError: boom at incoming/a/1.csv" in summary["error"]
    assert "Traceback" in err  # the log line carries it, stdout stays one JSON line


# -- LOG_LEVEL is configuration ------------------------------------------------------------


def test_lambda_bad_log_level_is_named_with_every_other_bad_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    monkeypatch.setenv("WORKERS", "many")
    summary = lambda_handler({}, FakeContext())
    assert summary["statusCode"] == 500
    for name in ("LOG_LEVEL", "S3_SOURCE_BUCKET", "SQS_QUEUE_URL", "WORKERS"):
        assert name in summary["error"], name
    assert len(summary["problems"]) == 4
    assert any(p.startswith("LOG_LEVEL (--log-level) = 'chatty'") for p in summary["problems"])
    # Logging was configured (at INFO) so the error itself is logged.
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    (record,) = [r for r in logged if r.get("event") == "config_error"]
    assert any("LOG_LEVEL" in p for p in record["problems"])


def test_lambda_empty_log_level_means_info(
    run_env: MotoEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "")
    summary = lambda_handler({}, FakeContext())
    assert (summary["statusCode"], summary["queued"]) == (200, 1)


def test_cli_bad_log_level_is_a_config_error_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    assert main(["scan"]) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["statusCode"] == 500
    assert [p.split(" ")[0] for p in summary["problems"]] == [
        "S3_SOURCE_BUCKET",
        "SQS_QUEUE_URL",
        "LOG_LEVEL",
    ]
    assert "async-discovery scan: LOG_LEVEL (--log-level) = 'chatty': unknown log level" in err
    # A command that reads no other configuration reports it alone, with the same status.
    assert main(["seed", "--endpoint-url", "http://127.0.0.1:9"]) == 1
    assert "async-discovery seed: LOG_LEVEL (--log-level) = 'chatty'" in capsys.readouterr().err


def test_cli_log_level_flag_wins_over_a_bad_variable(
    run_env: MotoEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    assert main(["scan", "--log-level", "warning"]) == 0
    assert json.loads(capsys.readouterr().out)["queued"] == 1


# -- the Lambda event's dry_run ------------------------------------------------------------


@pytest.mark.parametrize("value", ["false", "true", 0, 1, "", [], {}])
def test_lambda_dry_run_must_be_a_json_boolean(run_env: MotoEnv, value: Any) -> None:
    bucket = os.environ["S3_SOURCE_BUCKET"]
    queue_url = os.environ["SQS_QUEUE_URL"]
    summary = lambda_handler({"dry_run": value}, FakeContext())
    assert summary["statusCode"] == 500
    assert "dry_run" in summary["error"] and "JSON boolean" in summary["error"]
    assert summary["queued"] == 0
    assert run_env.bodies(queue_url) == [] and run_env.state(bucket) is None


@pytest.mark.parametrize(
    ("event", "dry_run"),
    [({"dry_run": True}, True), ({"dry_run": False}, False), ({}, False), (None, False)],
)
def test_lambda_dry_run_booleans_and_absence(
    run_env: MotoEnv, event: Any, dry_run: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_url = os.environ["SQS_QUEUE_URL"]
    summary = lambda_handler(event, FakeContext())
    assert (summary["statusCode"], summary["queued"], summary["dry_run"]) == (200, 1, dry_run)
    assert len(run_env.bodies(queue_url)) == (0 if dry_run else 1)


# -- demo and bench without the demo extra --------------------------------------------------


def test_demo_without_the_demo_extra_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['moto'] = None; "
        "from async_discovery.cli import main; sys.exit(main(['demo']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line == (
        "async-discovery demo: needs the demo extra (moto is not installed); "
        "install it with: pip install -c constraints.txt -e '.[demo]' (from a checkout)"
    )


def test_bench_without_the_demo_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # moto.server too: an earlier test may have imported it into this process.
    monkeypatch.setitem(sys.modules, "moto", None)
    monkeypatch.setitem(sys.modules, "moto.server", None)
    assert main(["bench", "--files", "10"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == (
        "async-discovery bench: needs the demo extra (moto is not installed); "
        "install it with: pip install -c constraints.txt -e '.[demo]' (from a checkout)"
    )


def test_bench_profile_without_pyinstrument_is_one_line_up_front(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``bench --profile`` checks for pyinstrument before starting anything: one line on
    stderr, exit 1, no profile directory made."""
    monkeypatch.setitem(sys.modules, "pyinstrument", None)
    profiles = tmp_path / "profiles"
    assert main(["bench", "--files", "10", "--profile", str(profiles)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("async-discovery bench: --profile needs pyinstrument")
    assert not profiles.exists()
