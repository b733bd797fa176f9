"""The Lambda entry point, the JSON logs and the EMF metrics record (SPEC "Observability")."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from botocore.loaders import JSONFileLoader

import async_discovery
from async_discovery.handler import lambda_handler
from async_discovery.logs import configure_logging

from .helpers import MotoEnv, scan


class FakeContext:
    """What the Lambda runtime passes: only the remaining time matters here."""

    def __init__(self, remaining_ms: float) -> None:
        self.remaining_ms = remaining_ms
        self.calls = 0

    def get_remaining_time_in_millis(self) -> int:
        self.calls += 1
        return int(self.remaining_ms)


def lambda_env(monkeypatch: pytest.MonkeyPatch, env: MotoEnv, bucket: str, queue_url: str) -> None:
    monkeypatch.setenv("S3_SOURCE_BUCKET", bucket)
    monkeypatch.setenv("S3_PREFIX", "incoming")
    monkeypatch.setenv("SQS_QUEUE_URL", queue_url)
    # botocore's own endpoint variable: the handler has no flag, like a real deployment.
    monkeypatch.setenv("AWS_ENDPOINT_URL", env.endpoint)


def test_lambda_handler_runs_a_scan(
    monkeypatch: pytest.MonkeyPatch, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    lambda_env(monkeypatch, env, bucket, queue_url)
    context = FakeContext(300_000)
    summary = lambda_handler({}, context)
    assert (summary["statusCode"], summary["queued"], summary["truncated"]) == (200, 1, False)
    assert context.calls > 0  # the deadline was consulted
    assert [b["key"] for b in env.bodies(queue_url)] == ["incoming/a/1.csv"]
    # A second invocation (a new event loop) works too: no client outlives its loop.
    assert lambda_handler({}, FakeContext(300_000))["queued"] == 0


def test_warm_invocations_read_no_service_model_again(
    monkeypatch: pytest.MonkeyPatch, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """One botocore data loader per process: a warm invocation opens new clients in its
    own event loop, and they work, without reading a model file (S3, SQS, endpoints)."""
    env.put(bucket, "incoming/a/1.csv")
    lambda_env(monkeypatch, env, bucket, queue_url)
    assert lambda_handler({}, FakeContext(300_000))["queued"] == 1
    read: list[str] = []
    load_file = JSONFileLoader.load_file

    def counted(self: JSONFileLoader, file_path: str) -> Any:
        read.append(file_path)
        return load_file(self, file_path)

    monkeypatch.setattr(JSONFileLoader, "load_file", counted)
    env.put(bucket, "incoming/a/2.csv")
    summary = lambda_handler({}, FakeContext(300_000))
    assert (summary["statusCode"], summary["queued"]) == (200, 1)
    assert read == []


def test_lambda_handler_close_to_its_deadline_returns_truncated(
    monkeypatch: pytest.MonkeyPatch, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    lambda_env(monkeypatch, env, bucket, queue_url)
    # 1.5 s left is below the default 2 s margin: no listing page is taken.
    summary = lambda_handler({}, FakeContext(1_500))
    assert summary["statusCode"] == 200
    assert summary["truncated"] is True and summary["queued"] == 0
    assert env.bodies(queue_url) == []
    # With time, the next invocation finishes the job.
    done = lambda_handler({}, FakeContext(300_000))
    assert (done["queued"], done["truncated"]) == (1, False)


def test_lambda_handler_bad_config_is_500_naming_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("S3_SOURCE_BUCKET", "SQS_QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)
    summary = lambda_handler({}, FakeContext(300_000))
    assert summary["statusCode"] == 500
    assert "S3_SOURCE_BUCKET" in summary["error"] and "SQS_QUEUE_URL" in summary["error"]
    assert {"queued", "skipped", "errors", "execution_time_seconds"} <= set(summary)


async def test_emf_record_and_json_logs(env: MotoEnv, bucket: str, queue_url: str) -> None:
    env.put(bucket, "incoming/a/1.csv")
    env.put(bucket, "incoming/a/notes.txt")
    logs, metrics = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=logs)
    try:
        summary = await scan(
            env.config(bucket, queue_url), emit_metrics=True, metrics_stream=metrics
        )
    finally:
        configure_logging("INFO")
    (line,) = metrics.getvalue().splitlines()
    record: dict[str, Any] = json.loads(line)
    directive = record["_aws"]["CloudWatchMetrics"][0]
    names = {m["Name"] for m in directive["Metrics"]}
    assert directive["Namespace"] == "AsyncDiscovery"
    assert {"listed", "candidates", "queued", "skipped", "ignored", "errors", "duration"} <= names
    assert {"api_calls.ListObjectsV2", "api_calls.SendMessageBatch"} <= names
    assert (record["listed"], record["queued"], record["ignored"]) == (2, 1, 1)
    assert record["api_calls.GetObject"] == 1 and record["statusCode"] == summary["statusCode"]
    events = [json.loads(x) for x in logs.getvalue().splitlines()]
    assert all({"time", "level", "message"} <= set(e) for e in events)
    final = [e for e in events if e.get("event") == "scan_summary"]
    assert len(final) == 1 and final[0]["queued"] == 1
    # No secret ever reaches the logs.
    assert "testing" not in logs.getvalue().replace(bucket, "")


def test_public_api_is_what_all_says() -> None:
    exported = set(async_discovery.__all__)
    assert exported == {
        name for name in dir(async_discovery) if not name.startswith("_") and name[0].isupper()
    } | {"__version__"}
    for name in exported:
        assert getattr(async_discovery, name) is not None


def test_logs_are_silent_below_their_level() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", stream=stream)
    try:
        logging.getLogger("async_discovery").info("hidden")
        logging.getLogger("async_discovery").warning("shown", extra={"event": "x"})
    finally:
        configure_logging("INFO")
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["event"] == "x"


def _emf(err: str) -> list[dict[str, Any]]:
    """The EMF records among the lines written to stderr."""
    return [json.loads(x) for x in err.splitlines() if x.startswith('{"_aws"')]


def _metric_names(record: dict[str, Any]) -> set[str]:
    return {m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


def test_failed_partial_and_truncated_runs_are_metrics_an_alarm_can_use(
    monkeypatch: pytest.MonkeyPatch,
    env: MotoEnv,
    bucket: str,
    queue_url: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A 500 is a normal return to Lambda (its Errors metric stays 0), so the run's EMF
    record says it: failed_runs 1; a truncated run: truncated 1; a clean one: zeros. The
    Service dimension is the function's name."""
    env.put(bucket, "incoming/a/1.csv")
    lambda_env(monkeypatch, env, bucket, queue_url)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "scanner-stack-ScannerFunction-1")
    capfd.readouterr()
    assert lambda_handler({}, FakeContext(1_500))["truncated"] is True
    assert lambda_handler({}, FakeContext(300_000))["statusCode"] == 200
    monkeypatch.setenv("S3_SOURCE_BUCKET", "no-such-bucket-here")
    assert lambda_handler({}, FakeContext(300_000))["statusCode"] == 500
    truncated, clean, failed = _emf(capfd.readouterr().err)
    for record in (truncated, clean, failed):
        assert {"failed_runs", "partial_runs", "truncated", "folder_errors"} <= _metric_names(
            record
        )
        assert record["Service"] == "scanner-stack-ScannerFunction-1"
    assert (truncated["truncated"], truncated["failed_runs"]) == (1.0, 0.0)
    assert (clean["truncated"], clean["failed_runs"], clean["partial_runs"]) == (0.0, 0.0, 0.0)
    assert (failed["failed_runs"], failed["statusCode"]) == (1.0, 500)


async def test_a_partial_run_counts_its_folder_errors(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """A folder whose shard cannot be read: statusCode 207, partial_runs 1 and
    folder_errors 1 in the record."""
    env.put(bucket, "incoming/a/1.csv")
    env.put(bucket, "incoming/b/1.csv")
    config = env.config(bucket, queue_url, state_layout="folders", state_key="state/p/")
    env.s3.put_object(Bucket=bucket, Key="state/p/folders/incoming/a.json", Body=b"{broken")
    metrics = io.StringIO()
    summary = await scan(config, emit_metrics=True, metrics_stream=metrics)
    assert summary["statusCode"] == 207, summary
    (record,) = [json.loads(x) for x in metrics.getvalue().splitlines()]
    assert (record["partial_runs"], record["folder_errors"], record["failed_runs"]) == (
        1.0,
        1.0,
        0.0,
    )


def test_a_configuration_error_writes_failed_runs(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """No run happens, but the alarm still sees the invocation that failed."""
    for name in ("S3_SOURCE_BUCKET", "SQS_QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)
    capfd.readouterr()
    assert lambda_handler({}, FakeContext(300_000))["statusCode"] == 500
    (record,) = _emf(capfd.readouterr().err)
    assert (record["failed_runs"], record["step"]) == (1.0, "config")
    assert _metric_names(record) == {"failed_runs"}
