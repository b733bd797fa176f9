"""``async-discovery doctor`` with credentials the store refuses, or none at all: said
once, with the fix, by the first check that meets it; the other checks point to it and
the permissions check fails (no call reached a permission check).

moto accepts any credentials until its request authentication is switched on
(``/moto-api/reset-auth``); then it answers with its real errors: ``InvalidAccessKeyId``
for an unknown key, ``SignatureDoesNotMatch`` for a known key with a wrong secret (and,
for SQS, ``InvalidClientTokenId`` as a query-protocol XML body). An expired session
token comes from the fault proxy, in S3's and SQS's shapes.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import pytest

from async_discovery.cli import main
from async_discovery.testing.fault_proxy import FaultProxy, S3Error, SqsError

from .helpers import MotoEnv

NOT_CHECKED = "not checked: no usable credentials (above)"
BLAMED_ON_THE_STORE = "check the endpoint and the store's health"


@pytest.fixture
def target(
    env: MotoEnv, bucket: str, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    for name in ("SQS_QUEUE_URL", "S3_STATE_KEY", "STATE_LAYOUT", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAX_ATTEMPTS", "2")
    env.put(bucket, "incoming/a/1.csv")
    return {"bucket": bucket, "queue_url": queue_url}


@contextmanager
def moto_authentication(endpoint: str) -> Iterator[None]:
    """moto checks every request's credentials meanwhile (it accepts any otherwise)."""

    def reset(count: str) -> None:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["status"] == "ok"

    reset("0")
    try:
        yield
    finally:
        reset("inf")


def run_doctor(
    capsys: pytest.CaptureFixture[str], endpoint: str, target: dict[str, str]
) -> tuple[int, dict[str, dict[str, str]], str]:
    argv = ["doctor", "--endpoint-url", endpoint, "--bucket", target["bucket"]]
    argv += ["--prefix", "incoming", "--queue-url", target["queue_url"]]
    code = main([*argv, "--output", "json"])
    doc = json.loads(capsys.readouterr().out)
    return code, {c["check"]: c for c in doc["checks"]}, json.dumps(doc)


def assert_said_once(
    code: int, checks: dict[str, dict[str, str]], text: str, error: str, *, queue: bool = True
) -> None:
    assert code == 1
    said = [c for c in checks.values() if c["found"].startswith("no usable credentials: ")]
    assert len(said) == 1, checks
    assert said[0]["check"] == "source listing" and error in said[0]["found"]
    assert "AWS_ACCESS_KEY_ID" in said[0]["fix"] and "AWS_PROFILE" in said[0]["fix"]
    others = ["state", "conditional writes", *(["queue"] if queue else [])]
    assert [checks[name]["found"] for name in others] == [NOT_CHECKED] * len(others)
    assert checks["permissions"]["status"] == "fail"
    assert "without usable credentials" in checks["permissions"]["found"]
    assert BLAMED_ON_THE_STORE not in text and "every call was allowed" not in text


def test_an_unknown_access_key(
    env: MotoEnv, target: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with moto_authentication(env.endpoint):
        code, checks, text = run_doctor(capsys, env.endpoint, target)
    assert_said_once(code, checks, text, "InvalidAccessKeyId")


def test_a_wrong_secret(
    env: MotoEnv,
    target: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    iam = boto3.client("iam", endpoint_url=env.endpoint, region_name="us-east-1")
    user = f"doctor-{target['bucket']}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    with moto_authentication(env.endpoint):
        code, checks, text = run_doctor(capsys, env.endpoint, target)
    assert_said_once(code, checks, text, "SignatureDoesNotMatch")


def test_an_expired_session_token(
    threaded_proxy: FaultProxy, target: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    expired = "The provided token has expired."
    threaded_proxy.inject(S3Error("ExpiredToken", 400, expired), when=lambda r: r.service == "s3")
    threaded_proxy.inject(
        SqsError("ExpiredToken", 403, expired, query_code="ExpiredToken"),
        when=lambda r: r.service == "sqs",
    )
    code, checks, text = run_doctor(capsys, threaded_proxy.url, target)
    assert_said_once(code, checks, text, "ExpiredToken")


def test_no_credentials_at_all(
    env: MotoEnv,
    target: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find
    code, checks, text = run_doctor(capsys, env.endpoint, target)
    assert_said_once(code, checks, text, "NoCredentialsError")


def test_credentials_refused_by_one_service_only(
    threaded_proxy: FaultProxy, target: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """S3 on a store with its own keys, SQS elsewhere: the queue is still checked."""
    threaded_proxy.inject(
        S3Error("InvalidAccessKeyId", 403, "The AWS Access Key Id you provided does not exist."),
        when=lambda r: r.service == "s3",
    )
    code, checks, text = run_doctor(capsys, threaded_proxy.url, target)
    assert_said_once(code, checks, text, "InvalidAccessKeyId", queue=False)
    assert checks["queue"]["status"] == "ok"
