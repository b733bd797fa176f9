"""``async-discovery doctor`` and the Lambda event ``{"action": "doctor"}``: against moto
all ok; through the fault proxy (a store that ignores conditional headers, a listing that
loses a key on continuation, denied calls, a missing queue, a failing listing) the right
fail or warn line and exit status, and the state object untouched."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import anyio
import pytest

from async_discovery.cli import main
from async_discovery.config import DEFAULT_STATE_KEY
from async_discovery.handler import lambda_handler
from async_discovery.iam import probe_key
from async_discovery.layout import runs_key, shard_key
from async_discovery.testing.fault_proxy import (
    FaultProxy,
    ProxiedRequest,
    Rewrite,
    S3Error,
    SqsError,
    StripHeaders,
    continues_listing,
    drop_listed_key,
)

from .helpers import MotoEnv, scan
from .seaweedfs import SplitEnv

CHECKS = [
    "configuration",
    "source listing",
    "state",
    "conditional writes",
    "listing continuation",
    "queue",
    "clock",
    "permissions",
]
KEYS = [
    "incoming/sales/1.csv",
    "incoming/sales/2 + a%20b.csv",  # encoded differently with EncodingType=url
    "incoming/sales/ünï.csv",
    "incoming/hr/3.csv",
    "incoming/logs/x.csv",
    "incoming/notes.txt",
]


@pytest.fixture(autouse=True)
def fast_failures(clean_config_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean environment, where a failing call fails fast."""
    monkeypatch.setenv("MAX_ATTEMPTS", "2")


@pytest.fixture
def scanned(env: MotoEnv, bucket: str, queue_url: str) -> Iterator[dict[str, Any]]:
    """A bucket with files, its queue, and a state object written by one scan; yields
    what the doctor must leave as it was."""
    env.put_many(bucket, KEYS)
    anyio.run(functools.partial(scan, env.config(bucket, queue_url)))
    state = env.state_bytes(bucket)
    assert state is not None
    yield {
        "bucket": bucket,
        "queue_url": queue_url,
        "state": state,
        "waiting": waiting(env, queue_url),
    }
    # Whatever a test did: the state object is byte for byte what the scan wrote, and
    # the probe is gone.
    assert env.state_bytes(bucket) == state
    assert env.state_bytes(bucket, probe_key(DEFAULT_STATE_KEY)) is None


def waiting(env: MotoEnv, queue_url: str) -> int:
    attributes = env.sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def doctor(
    capsys: pytest.CaptureFixture[str], endpoint: str | None, scanned: dict[str, Any], *args: str
) -> tuple[int, dict[str, dict[str, str]]]:
    """Run ``doctor --output json``; the exit status and the checks by name. Without
    ``endpoint``, botocore resolves it (``AWS_ENDPOINT_URL_S3`` / ``_SQS``)."""
    argv = ["doctor", "--bucket", scanned["bucket"], "--prefix", "incoming"]
    argv += ["--queue-url", scanned["queue_url"], "--output", "json"]
    if endpoint is not None:
        argv += ["--endpoint-url", endpoint]
    code = main([*argv, *args])
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is (code == 0)
    assert doc["statusCode"] == (200 if code == 0 else 500)
    return code, {c["check"]: c for c in doc["checks"]}


# -- against moto ----------------------------------------------------------------------


def test_all_ok_against_moto_one_line_per_check(
    env: MotoEnv, scanned: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["doctor", "--endpoint-url", env.endpoint, "--bucket", scanned["bucket"]]
    argv += ["--prefix", "incoming", "--queue-url", scanned["queue_url"]]
    code = main([*argv, "--deep", "--send-test-message"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split(":")[0].split(None, 1) for line in lines] == [["ok", c] for c in CHECKS]
    by_check = {line.split(":")[0].split(None, 1)[1]: line for line in lines}
    assert "3 folders, skipped folders present: logs" in by_check["source listing"]
    assert "4 entries" in by_check["state"] and f"bound to {scanned['bucket']}" in by_check["state"]
    assert "second create refused, stale If-Match refused, probe deleted" in lines[3]
    assert "the first 6 keys agree at page size 1000 and 1" in by_check["listing continuation"]
    assert "test message sent" in by_check["queue"]
    # The one message added is the marked test message.
    assert waiting(env, scanned["queue_url"]) == scanned["waiting"] + 1
    marked = [
        m
        for m in env.receive_all(scanned["queue_url"])
        if "async-discovery-doctor" in m.get("MessageAttributes", {})
    ]
    assert len(marked) == 1 and json.loads(marked[0]["Body"])["async-discovery-doctor"]


def test_without_flags_the_queue_is_untouched_and_no_deep_listing(
    env: MotoEnv, scanned: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, checks = doctor(capsys, env.endpoint, scanned)
    assert code == 0
    assert list(checks) == [c for c in CHECKS if c != "listing continuation"]
    assert all(c["status"] == "ok" for c in checks.values())
    assert waiting(env, scanned["queue_url"]) == scanned["waiting"]


def test_first_run_absent_state_is_ok(
    env: MotoEnv, bucket: str, queue_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    setup = {"bucket": bucket, "queue_url": queue_url}
    code, checks = doctor(capsys, env.endpoint, setup)
    assert code == 0
    assert "absent: the first scan creates it (INITIAL_SCAN=all)" in checks["state"]["found"]
    assert env.state_bytes(bucket) is None


def test_probe_left_by_an_interrupted_run_is_replaced_and_deleted(
    env: MotoEnv, scanned: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    env.put(scanned["bucket"], probe_key(DEFAULT_STATE_KEY), b"left behind")
    code, checks = doctor(capsys, env.endpoint, scanned)
    assert (code, checks["conditional writes"]["status"]) == (0, "ok")


def test_configuration_problems_are_all_named(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--prefix", "/abs", "--output", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    [check] = doc["checks"]
    assert check["check"] == "configuration" and check["status"] == "fail"
    for name in ("S3_SOURCE_BUCKET", "S3_PREFIX", "SQS_QUEUE_URL"):
        assert name in check["found"]


@pytest.mark.parametrize(
    ("cap_factor", "status"), [(1.1, "warn"), (0.5, "fail")], ids=["near-cap", "over-cap"]
)
def test_state_size_against_the_cap(
    env: MotoEnv,
    scanned: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    cap_factor: float,
    status: str,
) -> None:
    monkeypatch.setenv("STATE_MAX_BYTES", str(int(len(scanned["state"]) * cap_factor)))
    code, checks = doctor(capsys, env.endpoint, scanned)
    assert checks["state"]["status"] == status
    assert "STATE_MAX_BYTES" in checks["state"]["fix"]
    assert code == (1 if status == "fail" else 0)


def test_state_of_another_bucket_fails(
    env: MotoEnv, scanned: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    other = env.new_bucket()
    env.s3.copy_object(
        Bucket=other, Key=DEFAULT_STATE_KEY, CopySource=f"{scanned['bucket']}/{DEFAULT_STATE_KEY}"
    )
    setup = {**scanned, "bucket": other}
    code, checks = doctor(capsys, env.endpoint, setup)
    assert code == 1
    assert checks["state"]["status"] == "fail"
    assert f"describes bucket {scanned['bucket']!r}" in checks["state"]["found"]
    code, checks = doctor(capsys, env.endpoint, setup, "--force-rebind")
    assert (code, checks["state"]["status"]) == (0, "warn")


def test_lambda_event_runs_the_doctor(
    env: MotoEnv, scanned: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env.set_variables(monkeypatch, scanned["bucket"], scanned["queue_url"])
    result = lambda_handler({"action": "doctor", "deep": True}, None)
    assert result["statusCode"] == 200 and result["ok"] is True
    assert [c["check"] for c in result["checks"]] == CHECKS
    monkeypatch.delenv("SQS_QUEUE_URL")
    result = lambda_handler({"action": "doctor"}, None)
    assert result["statusCode"] == 500
    assert "SQS_QUEUE_URL" in result["checks"][0]["found"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("send_test_message", "false"), ("deep", "false"), ("deep", 0), ("send_test_message", 1)],
)
def test_lambda_event_switches_must_be_json_booleans(
    env: MotoEnv,
    scanned: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    value: Any,
) -> None:
    env.set_variables(monkeypatch, scanned["bucket"], scanned["queue_url"])
    result = lambda_handler({"action": "doctor", field: value}, None)
    assert (result["statusCode"], result["ok"]) == (500, False)
    [finding] = result["checks"]  # nothing else ran: no deep listing, no test message
    assert finding["check"] == "configuration" and finding["status"] == "fail"
    shown = json.dumps(value)
    assert f"event field {field} = {shown}: not a JSON boolean" in finding["found"]
    assert waiting(env, scanned["queue_url"]) == scanned["waiting"]


# -- through the fault proxy -------------------------------------------------------------


def test_store_ignoring_conditional_headers_fails(
    threaded_proxy: FaultProxy, scanned: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    threaded_proxy.inject(StripHeaders.conditional(), "PutObject")
    code, checks = doctor(capsys, threaded_proxy.url, scanned)
    assert code == 1
    line = checks["conditional writes"]
    assert line["status"] == "fail"
    assert "accepted If-None-Match: * on an existing object" in line["found"]
    assert "accepted a stale If-Match" in line["found"]
    assert "reserved concurrency 1" in line["fix"] and "lose or tear" in line["fix"]
    # The doctor wrote only its probe, never the state object.
    puts = [r.key for r in threaded_proxy.requests if r.operation == "PutObject"]
    assert puts and set(puts) == {probe_key(DEFAULT_STATE_KEY)}


def test_store_without_conditional_writes_fails(
    threaded_proxy: FaultProxy, scanned: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    threaded_proxy.inject(
        S3Error(
            "NotImplemented",
            501,
            "A header you provided implies functionality that is not implemented",
        ),
        "PutObject",
        when=lambda r: "If-None-Match" in r.headers or "If-Match" in r.headers,
    )
    code, checks = doctor(capsys, threaded_proxy.url, scanned)
    assert code == 1
    line = checks["conditional writes"]
    assert line["status"] == "fail"
    assert "does not implement conditional writes" in line["found"]
    assert "reserved concurrency 1" in line["fix"]


def test_listing_that_loses_a_key_on_continuation_fails(
    threaded_proxy: FaultProxy, scanned: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rule = threaded_proxy.inject(
        Rewrite(drop_listed_key()), "ListObjectsV2", when=continues_listing, times=1
    )
    code, checks = doctor(capsys, threaded_proxy.url, scanned, "--deep")
    assert rule.hits == 1
    assert code == 1
    line = checks["listing continuation"]
    assert line["status"] == "fail"
    assert "1 of the first 6 keys went missing (first 'incoming/logs/x.csv')" in line["found"]
    assert "prune live entries" in line["fix"] and "PRUNE_MISSING=false" in line["fix"]
    # The scan's own listings (first pages) were not touched: those checks passed.
    assert checks["source listing"]["status"] == "ok"


def test_key_deleted_during_the_deep_listing_is_not_a_lost_key(
    threaded_proxy: FaultProxy,
    env: MotoEnv,
    scanned: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A key deleted between the two listings (a live bucket) is no store fault."""
    last = sorted(KEYS)[-1]

    def delete_last(request: ProxiedRequest) -> bool:
        """On each continued listing: delete ``last`` (the rule itself never applies)."""
        if continues_listing(request):
            env.s3.delete_object(Bucket=scanned["bucket"], Key=last)
        return False

    threaded_proxy.inject(S3Error(), "ListObjectsV2", when=delete_last)
    code, checks = doctor(capsys, threaded_proxy.url, scanned, "--deep")
    assert env.s3.list_objects_v2(Bucket=scanned["bucket"], Prefix=last)["KeyCount"] == 0
    assert checks["listing continuation"]["status"] == "ok"
    assert code == 0


def test_denied_state_read_names_the_missing_grant(
    threaded_proxy: FaultProxy, scanned: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    threaded_proxy.inject(
        S3Error("AccessDenied", 403, "Access Denied"),
        "GetObject",
        when=lambda r: r.key == DEFAULT_STATE_KEY,
    )
    code, checks = doctor(capsys, threaded_proxy.url, scanned)
    assert code == 1
    grant = f"s3:GetObject on arn:aws:s3:::{scanned['bucket']}/{DEFAULT_STATE_KEY}"
    assert checks["state"]["status"] == "fail"
    assert grant in checks["state"]["fix"]
    assert checks["permissions"] == {
        "check": "permissions",
        "status": "fail",
        "found": f"a scan needs {grant}",
        "fix": "grant them (`async-discovery iam-policy` prints the policy)",
    }


def test_missing_queue_fails(
    threaded_proxy: FaultProxy,
    env: MotoEnv,
    scanned: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    gone = scanned["queue_url"].rsplit("/", 1)[0] + "/no-such-queue"
    code, checks = doctor(capsys, threaded_proxy.url, {**scanned, "queue_url": gone})
    assert code == 1
    assert checks["queue"]["status"] == "fail"
    assert checks["queue"]["found"] == f"{gone} does not exist"
    assert "SQS_QUEUE_URL" in checks["queue"]["fix"]


def test_listing_5xx_fails(
    threaded_proxy: FaultProxy, scanned: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    threaded_proxy.inject(S3Error(), "ListObjectsV2")
    code, checks = doctor(capsys, threaded_proxy.url, scanned, "--deep")
    assert code == 1
    for name in ("source listing", "listing continuation"):
        assert checks[name]["status"] == "fail"
        assert "InternalError" in checks[name]["found"]
    assert checks["permissions"]["status"] == "ok"


def test_missing_doctor_grants_warn_never_fail(
    threaded_proxy: FaultProxy, scanned: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    probe = probe_key(DEFAULT_STATE_KEY)
    denied = S3Error("AccessDenied", 403, "Access Denied")
    threaded_proxy.inject(denied, ("PutObject", "DeleteObject"), when=lambda r: r.key == probe)
    threaded_proxy.inject(SqsError("AccessDenied", 403, "denied"), "GetQueueAttributes")
    code, checks = doctor(capsys, threaded_proxy.url, scanned)
    assert code == 0
    arn = f"arn:aws:s3:::{scanned['bucket']}/{probe}"
    assert checks["conditional writes"] == {
        "check": "conditional writes",
        "status": "warn",
        "found": f"could not check: needs s3:PutObject on {arn}",
        "fix": "add the grants `async-discovery iam-policy --doctor` prints",
    }
    assert checks["queue"]["status"] == "warn"
    assert (
        "could not check: needs sqs:GetQueueAttributes on arn:aws:sqs:" in checks["queue"]["found"]
    )
    assert checks["permissions"]["status"] == "warn"
    assert f"s3:DeleteObject on {arn}" in checks["permissions"]["found"]


def test_clock_skew_warns(
    threaded_proxy: FaultProxy, scanned: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    def late(
        request: ProxiedRequest, status: int, headers: Any, body: bytes
    ) -> tuple[int, Any, bytes]:
        return status, {**headers, "Date": formatdate(time.time() + 60, usegmt=True)}, body

    threaded_proxy.inject(Rewrite(late), when=lambda r: r.service == "s3")
    code, checks = doctor(capsys, threaded_proxy.url, scanned)
    assert code == 0
    assert checks["clock"]["status"] == "warn"
    assert "s ahead of this machine's" in checks["clock"]["found"]
    assert "MIN_OBJECT_AGE_SECONDS" in checks["clock"]["fix"]


# -- against SeaweedFS -------------------------------------------------------------------


def test_all_ok_against_seaweedfs(
    moto_endpoint: str,
    seaweedfs_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """S3 on SeaweedFS (its conditional writes and listings are the real thing to check),
    SQS on moto."""
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)
    split = SplitEnv(moto_endpoint, seaweedfs_endpoint)
    bucket, queue_url = split.new_bucket(), split.new_queue()
    for key in KEYS:
        split.put(bucket, key)
    anyio.run(functools.partial(scan, split.config(bucket, queue_url)))
    state = split.state_bytes(bucket)
    assert state is not None
    setup = {"bucket": bucket, "queue_url": queue_url}
    code, checks = doctor(capsys, None, setup, "--deep", "--send-test-message")
    assert {name: c["status"] for name, c in checks.items()} == dict.fromkeys(CHECKS, "ok")
    assert code == 0
    assert "the first 6 keys agree" in checks["listing continuation"]["found"]
    assert split.state_bytes(bucket) == state
    assert split.state_bytes(bucket, probe_key(DEFAULT_STATE_KEY)) is None


# -- STATE_LAYOUT=folders: the prefix's shards and run objects --------------------------

SP = "state/processed_files/"  # the state prefix of the default S3_STATE_KEY


def shard_objects(env: MotoEnv, bucket: str) -> dict[str, bytes]:
    resp = env.s3.list_objects_v2(Bucket=bucket, Prefix=SP)
    return {
        item["Key"]: env.state_bytes(bucket, item["Key"]) or b""
        for item in resp.get("Contents", [])
    }


@pytest.fixture
def sharded(
    env: MotoEnv, bucket: str, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A bucket scanned with STATE_LAYOUT=folders (shards of sales and hr)."""
    monkeypatch.setenv("STATE_LAYOUT", "folders")
    env.put_many(bucket, KEYS)
    config = env.config(bucket, queue_url, state_layout="folders")
    assert anyio.run(functools.partial(scan, config))["queued"] == 4
    return {"bucket": bucket, "queue_url": queue_url}


def test_folders_layout_reads_the_shards_and_probes_beside_them(
    env: MotoEnv, sharded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = sharded["bucket"]
    before = shard_objects(env, bucket)
    assert sorted(before) == [shard_key(SP, "incoming/", f) for f in ("hr", "sales")]
    code, checks = doctor(capsys, env.endpoint, sharded)
    assert code == 0, checks
    assert all(c["status"] == "ok" for c in checks.values())
    found = checks["state"]["found"]
    assert found.startswith(f"s3://{bucket}/{SP}folders/incoming/: 2 shards, the largest ")
    assert "the 2 largest read: 4 entries" in found
    probe = runs_key(SP, "incoming/", "doctor-probe")
    assert f"probe s3://{bucket}/{probe}:" in checks["conditional writes"]["found"]
    assert f"{SP} (STATE_LAYOUT=folders)" in checks["configuration"]["found"]
    assert shard_objects(env, bucket) == before  # shards untouched, probe deleted


def test_folders_layout_without_shards_is_a_first_run(
    env: MotoEnv,
    bucket: str,
    queue_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATE_LAYOUT", "folders")
    env.put(bucket, "incoming/a/1.csv")
    code, checks = doctor(capsys, env.endpoint, {"bucket": bucket, "queue_url": queue_url})
    assert code == 0
    assert (
        "no shard yet: the first scan creates them (INITIAL_SCAN=all)" in (checks["state"]["found"])
    )
    assert shard_objects(env, bucket) == {}


def test_folders_layout_largest_shard_against_the_cap(
    env: MotoEnv,
    sharded: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    largest = max(len(body) for body in shard_objects(env, sharded["bucket"]).values())
    monkeypatch.setenv("STATE_MAX_BYTES", str(int(largest * 1.1)))
    code, checks = doctor(capsys, env.endpoint, sharded)
    assert (code, checks["state"]["status"]) == (0, "warn")
    assert "STATE_MAX_BYTES" in checks["state"]["fix"]
    monkeypatch.setenv("STATE_MAX_BYTES", str(largest - 1))
    code, checks = doctor(capsys, env.endpoint, sharded)
    assert (code, checks["state"]["status"]) == (1, "fail")


@pytest.mark.parametrize(
    ("name", "body", "said"),
    [
        (
            shard_key(SP, "incoming/", "hr"),
            b'{"version": 1, "files": {}, "pad": "xxxxxxxxxx"}',
            "version",
        ),
        (
            runs_key(SP, "incoming/", "initial.json"),
            b'{"version": 2, "initial_scan": "all"}',
            "initial_scan",
        ),
        (runs_key(SP, "incoming/", "cursor.json"), b'{"version": 2, "cursor": 7}', "cursor"),
    ],
    ids=["shard-not-version-2", "bad-initial", "bad-cursor"],
)
def test_folders_layout_unusable_state_object_fails(
    env: MotoEnv,
    sharded: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    name: str,
    body: bytes,
    said: str,
) -> None:
    if name.endswith("hr.json"):  # the largest shard, so among those read
        body = body.replace(b"xxxxxxxxxx", b"x" * 2000)
    env.s3.put_object(Bucket=sharded["bucket"], Key=name, Body=body)
    code, checks = doctor(capsys, env.endpoint, sharded)
    assert (code, checks["state"]["status"]) == (1, "fail")
    assert name in checks["state"]["found"] and said in checks["state"]["found"]
    assert env.state_bytes(sharded["bucket"], name) == body


def test_folders_layout_names_the_run_objects(
    env: MotoEnv, sharded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    cursor = {"strategy": "folders", "pending": {"sales": None}, "after_folder": "sales"}
    env.s3.put_object(
        Bucket=sharded["bucket"],
        Key=runs_key(SP, "incoming/", "cursor.json"),
        Body=json.dumps({"version": 2, "prefix": "incoming/", "cursor": cursor}).encode(),
    )
    env.s3.put_object(
        Bucket=sharded["bucket"],
        Key=runs_key(SP, "incoming/", "initial.json"),
        Body=b'{"version": 2, "initial_scan": "since:2026-01-01T00:00:00Z"}',
    )
    code, checks = doctor(capsys, env.endpoint, sharded)
    assert code == 0, checks
    found = checks["state"]["found"]
    assert "initial.json: INITIAL_SCAN=since:2026-01-01T00:00:00Z" in found
    assert "cursor.json: a truncated pass continues from it" in found
