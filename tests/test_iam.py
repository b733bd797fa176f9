"""The least-privilege IAM policy (``async-discovery iam-policy``) and the state store's
first-run behaviour that the policy relies on (a missing state object read as 403)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from async_discovery.cli import main
from async_discovery.config import DEFAULT_STATE_KEY, Config, parse_initial_scan
from async_discovery.iam import (
    SID_LIST_SOURCE,
    SID_PROBE,
    SID_STATE,
    build_policy,
    doctor_probe_key,
    grant,
    probe_key,
    queue_arn,
)
from async_discovery.layout import shard_key, state_prefix
from async_discovery.testing.fault_proxy import FaultProxy, Rule, S3Error

from .helpers import MotoEnv, scan


def cfg(**kw: Any) -> Config:
    values: dict[str, Any] = {
        "source_bucket": "src-bucket",
        "prefix": "incoming/",
        "queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs",
        "state_bucket": "src-bucket",
    }
    values.update(kw)
    return Config(**values)


def statements(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {st["Sid"]: st for st in policy["Statement"]}


@pytest.mark.parametrize(
    ("url", "arn"),
    [
        (
            "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs",
            "arn:aws:sqs:eu-west-1:123456789012:jobs",
        ),
        (
            "https://sqs.us-east-2.amazonaws.com/123456789012/jobs.fifo",
            "arn:aws:sqs:us-east-2:123456789012:jobs.fifo",
        ),
        (
            "https://eu-central-1.queue.amazonaws.com/123456789012/legacy",
            "arn:aws:sqs:eu-central-1:123456789012:legacy",
        ),
        ("https://queue.amazonaws.com/123456789012/old", "arn:aws:sqs:us-east-1:123456789012:old"),
        (
            "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q",
            "arn:aws-cn:sqs:cn-north-1:123456789012:q",
        ),
        (
            "https://sqs.us-gov-west-1.amazonaws.com/123456789012/q",
            "arn:aws-us-gov:sqs:us-gov-west-1:123456789012:q",
        ),
        (
            "https://vpce-0abc-1de.sqs.ap-south-1.vpce.amazonaws.com/123456789012/q",
            "arn:aws:sqs:ap-south-1:123456789012:q",
        ),
    ],
)
def test_queue_arn_from_aws_urls(url: str, arn: str) -> None:
    got = queue_arn(url)
    assert (got.arn, got.exact, got.notes) == (arn, True, ())


def test_queue_arn_from_moto_url_uses_wildcard_or_given_region() -> None:
    moto = "http://127.0.0.1:5000/123456789012/demo-queue"
    got = queue_arn(moto)
    assert got.arn == "arn:aws:sqs:*:123456789012:demo-queue"
    assert not got.exact and "region written as '*'" in got.notes[0]
    assert (
        queue_arn(moto, region="eu-west-1").arn == "arn:aws:sqs:eu-west-1:123456789012:demo-queue"
    )
    # A URL's own region wins over a configured one.
    assert queue_arn(
        "https://sqs.eu-west-1.amazonaws.com/123456789012/q", region="us-east-1"
    ).region == ("eu-west-1")


def test_queue_arn_without_account_is_wildcarded() -> None:
    got = queue_arn("http://localhost:4566/queue/q")
    assert got.arn.endswith(":*:q") and not got.exact
    assert any("account" in n for n in got.notes)


def test_policy_has_exactly_the_scanners_actions() -> None:
    policy = build_policy(cfg())
    st = statements(policy.document)
    assert policy.document["Version"] == "2012-10-17"
    actions = sorted(
        a
        for s in st.values()
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    )
    assert actions == ["s3:GetObject", "s3:ListBucket", "s3:PutObject", "sqs:SendMessage"]
    assert all(s["Effect"] == "Allow" and s["Resource"] != "*" for s in st.values())
    listing = st["ListSourcePrefix"]
    assert listing["Resource"] == "arn:aws:s3:::src-bucket"
    # The prefix (with its folders) plus exactly the state key, for the first-run check.
    assert listing["Condition"] == {
        "StringLike": {"s3:prefix": ["incoming/*", "state/processed_files.json"]}
    }
    assert st["ReadWriteStateObject"]["Resource"] == (
        "arn:aws:s3:::src-bucket/state/processed_files.json"
    )
    assert st["SendToQueue"]["Resource"] == "arn:aws:sqs:eu-west-1:123456789012:jobs"
    # No read of the source objects: the listing carries everything a message needs.
    assert not [
        s for s in st.values() if "GetObject" in str(s["Action"]) and "incoming" in s["Resource"]
    ]


def test_policy_with_separate_state_bucket() -> None:
    st = statements(build_policy(cfg(state_bucket="state-bucket", state_key="s/x.json")).document)
    assert st["ListSourcePrefix"]["Condition"]["StringLike"]["s3:prefix"] == ["incoming/*"]
    assert st["ListStateKey"] == {
        "Sid": "ListStateKey",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": "arn:aws:s3:::state-bucket",
        "Condition": {"StringLike": {"s3:prefix": ["s/x.json"]}},
    }
    assert st["ReadWriteStateObject"]["Resource"] == "arn:aws:s3:::state-bucket/s/x.json"


def test_policy_for_whole_bucket_has_no_prefix_condition() -> None:
    st = statements(build_policy(cfg(prefix="")).document)
    assert "Condition" not in st["ListSourcePrefix"]
    assert "ListStateKey" not in st


def test_policy_escapes_iam_wildcards_in_keys() -> None:
    st = statements(build_policy(cfg(prefix="in*coming?/", state_key="st$ate*.json")).document)
    assert st["ListSourcePrefix"]["Condition"]["StringLike"]["s3:prefix"] == [
        "in${*}coming${?}/*",
        "st${$}ate${*}.json",
    ]


def test_policy_partition_follows_the_queue_region() -> None:
    st = statements(
        build_policy(
            cfg(queue_url="https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q")
        ).document
    )
    assert st["ListSourcePrefix"]["Resource"] == "arn:aws-cn:s3:::src-bucket"


def test_doctor_policy_adds_only_the_probe_object_and_queue_attributes() -> None:
    config = cfg(state_key="st*ate.json")
    plain = build_policy(config).document["Statement"]
    doctor = build_policy(config, doctor=True).document["Statement"]
    # The scan's grants first, unchanged; the doctor's on top.
    assert doctor[: len(plain)] == plain
    assert doctor[len(plain) :] == [
        {
            "Sid": "DoctorProbeObject",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:DeleteObject"],
            "Resource": "arn:aws:s3:::src-bucket/st${*}ate.json.doctor-probe",
        },
        {
            "Sid": "DoctorQueueAttributes",
            "Effect": "Allow",
            "Action": "sqs:GetQueueAttributes",
            "Resource": "arn:aws:sqs:eu-west-1:123456789012:jobs",
        },
    ]
    # The least-privilege policy deletes nothing and reads no queue attributes.
    assert "DeleteObject" not in json.dumps(plain) and "GetQueueAttributes" not in json.dumps(plain)
    assert probe_key("state/processed_files.json") == "state/processed_files.json.doctor-probe"


def test_grant_words_one_action_of_a_statement() -> None:
    policy = build_policy(cfg(), doctor=True)
    assert grant(policy, SID_STATE, "s3:GetObject") == (
        "s3:GetObject on arn:aws:s3:::src-bucket/state/processed_files.json"
    )
    assert grant(policy, SID_PROBE) == (
        "s3:PutObject, s3:DeleteObject on "
        "arn:aws:s3:::src-bucket/state/processed_files.json.doctor-probe"
    )
    assert grant(policy, SID_LIST_SOURCE) == (
        "s3:ListBucket on arn:aws:s3:::src-bucket with s3:prefix incoming/* or "
        "state/processed_files.json"
    )
    with pytest.raises(KeyError):
        grant(build_policy(cfg()), SID_PROBE)


def test_cli_policy_doctor_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("S3_SOURCE_BUCKET", "env-bucket")
    monkeypatch.setenv("SQS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/q")
    monkeypatch.delenv("S3_STATE_KEY", raising=False)
    monkeypatch.delenv("S3_STATE_BUCKET", raising=False)
    assert main(["iam-policy"]) == 0
    plain = statements(json.loads(capsys.readouterr().out))
    assert main(["iam-policy", "--doctor"]) == 0
    doctor = statements(json.loads(capsys.readouterr().out))
    assert set(doctor) - set(plain) == {"DoctorProbeObject", "DoctorQueueAttributes"}
    assert doctor["DoctorProbeObject"]["Resource"] == (
        "arn:aws:s3:::env-bucket/state/processed_files.json.doctor-probe"
    )
    assert doctor["DoctorQueueAttributes"]["Resource"] == "arn:aws:sqs:eu-west-1:123456789012:q"


def test_cli_prints_policy_for_flags_and_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("S3_SOURCE_BUCKET", "env-bucket")
    monkeypatch.setenv("SQS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/q.fifo")
    monkeypatch.delenv("S3_PREFIX", raising=False)
    code = main(["iam-policy", "--prefix", "incoming", "--state-bucket", "state-bucket"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    st = statements(json.loads(out))
    assert st["ListSourcePrefix"]["Resource"] == "arn:aws:s3:::env-bucket"
    assert st["ListStateKey"]["Resource"] == "arn:aws:s3:::state-bucket"
    assert st["SendToQueue"]["Resource"] == "arn:aws:sqs:eu-west-1:123456789012:q.fifo"


def test_cli_policy_for_moto_queue_notes_the_wildcard(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    code = main(
        [
            "iam-policy",
            "--bucket",
            "demo-bucket",
            "--queue-url",
            "http://127.0.0.1:5000/123456789012/demo-queue",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert statements(json.loads(out))["SendToQueue"]["Resource"] == (
        "arn:aws:sqs:*:123456789012:demo-queue"
    )
    assert "note:" in err and "--region" in err
    assert (
        main(
            [
                "iam-policy",
                "--bucket",
                "demo-bucket",
                "--queue-url",
                "http://127.0.0.1:5000/123456789012/demo-queue",
                "--region",
                "eu-west-1",
            ]
        )
        == 0
    )
    out, _ = capsys.readouterr()
    assert statements(json.loads(out))["SendToQueue"]["Resource"].startswith(
        "arn:aws:sqs:eu-west-1:"
    )


def test_cli_policy_needs_the_queue(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SQS_QUEUE_URL", raising=False)
    assert main(["iam-policy", "--bucket", "demo-bucket"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("async-discovery iam-policy: SQS_QUEUE_URL (--queue-url) is required")


# -- what the policy relies on: a 403 for a missing state object (moto via the proxy) --


def _deny_state_get(proxy: FaultProxy, key: str) -> Rule:
    """S3 without s3:ListBucket: GetObject of the state key answers 403 AccessDenied."""
    return proxy.inject(
        S3Error("AccessDenied", 403, "Access Denied"), "GetObject", when=lambda r: r.key == key
    )


async def test_first_run_with_403_for_missing_state_proceeds(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    rule = _deny_state_get(proxy, "state/processed_files.json")
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert rule.hits == 1
    assert (summary["statusCode"], summary["queued"]) == (200, 1)
    assert summary["api_calls"]["ListObjectsV2"] >= 2  # the scan's listing + the key check
    assert env.state(bucket) is not None


async def test_403_for_existing_state_is_an_error_and_sends_nothing(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    assert (await scan(env.config(bucket, queue_url)))["queued"] == 1
    env.bodies(queue_url)
    env.put(bucket, "incoming/a/2.csv")
    before = env.state_bytes(bucket)
    _deny_state_get(proxy, "state/processed_files.json")
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert summary["statusCode"] == 500 and "AccessDenied" in summary["error"]
    assert env.bodies(queue_url) == [] and env.state_bytes(bucket) == before


async def test_403_when_the_key_check_is_denied_too_names_the_fix(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy
) -> None:
    env.put(bucket, "incoming/a/1.csv")
    _deny_state_get(proxy, "state/processed_files.json")
    proxy.inject(
        S3Error("AccessDenied", 403, "Access Denied"),
        "ListObjectsV2",
        when=lambda r: r.query.get("prefix") == "state/processed_files.json",
    )
    summary = await scan(env.config(bucket, queue_url, endpoint_url=proxy.url))
    assert summary["statusCode"] == 500
    assert "iam-policy" in summary["error"] and "s3:ListBucket" in summary["error"]
    assert env.bodies(queue_url) == [] and env.state(bucket) is None


# -- STATE_LAYOUT=folders: the shards' and run objects' key prefixes ---------------------


def test_folders_policy_grants_the_shard_and_run_prefixes() -> None:
    st = statements(build_policy(cfg(state_layout="folders", state_bucket="state-bkt")).document)
    assert st["ReadWriteStateObject"]["Action"] == [
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
    ]
    assert st["ReadWriteStateObject"]["Resource"] == [
        "arn:aws:s3:::state-bkt/state/processed_files/folders/incoming/*",
        "arn:aws:s3:::state-bkt/state/processed_files/runs/incoming/*",
    ]
    assert st["ListStateKey"]["Resource"] == "arn:aws:s3:::state-bkt"
    assert st["ListStateKey"]["Condition"] == {
        "StringLike": {
            "s3:prefix": [
                "state/processed_files/folders/incoming/*",
                "state/processed_files/runs/incoming/*",
            ]
        }
    }
    # The single layout's object is not granted: the folders layout never reads it.
    assert "processed_files.json" not in json.dumps(st)
    # In the source bucket, the listing grant carries the state prefixes too.
    same = statements(build_policy(cfg(state_layout="folders", state_key="s/")).document)
    assert same["ListSourcePrefix"]["Condition"]["StringLike"]["s3:prefix"] == [
        "incoming/*",
        "s/folders/incoming/*",
        "s/runs/incoming/*",
    ]
    assert "ListStateKey" not in same


def test_folders_doctor_probe_is_a_run_object() -> None:
    config = cfg(state_layout="folders")
    assert doctor_probe_key(config) == "state/processed_files/runs/incoming/doctor-probe"
    assert doctor_probe_key(cfg()) == probe_key("state/processed_files.json")
    policy = build_policy(config, doctor=True)
    assert grant(policy, SID_PROBE) == (
        "s3:PutObject, s3:DeleteObject on "
        "arn:aws:s3:::src-bucket/state/processed_files/runs/incoming/doctor-probe"
    )
    assert grant(policy, SID_STATE, "s3:DeleteObject") == (
        "s3:DeleteObject on arn:aws:s3:::src-bucket/state/processed_files/folders/incoming/* "
        "and arn:aws:s3:::src-bucket/state/processed_files/runs/incoming/*"
    )


def _iam_match(pattern: str, value: str) -> bool:
    """IAM's StringLike / resource matching: ``*`` any run, ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _allowed(policy: dict[str, Any], action: str, resource: str, prefix: str | None) -> bool:
    for st in policy["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        if action not in actions or not any(_iam_match(r, resource) for r in resources):
            continue
        prefixes = st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if prefixes is None or any(_iam_match(p, prefix or "") for p in prefixes):
            return True
    return False


@pytest.mark.parametrize("separate_state_bucket", [False, True])
async def test_folders_policy_covers_every_s3_call_of_a_scan(
    env: MotoEnv, bucket: str, queue_url: str, proxy: FaultProxy, separate_state_bucket: bool
) -> None:
    """Every S3 request of folders-layout runs (first run with INITIAL_SCAN, shard
    writes, pruning a vanished folder's shard, a first read answered 403) is allowed by
    the printed policy."""
    state_bucket = env.new_bucket() if separate_state_bucket else bucket
    for key in ("incoming/a/1.csv", "incoming/b/1.csv", "incoming/gone/1.csv"):
        env.put(bucket, key)
    config = env.config(
        bucket,
        queue_url,
        endpoint_url=proxy.url,
        state_layout="folders",
        state_bucket=state_bucket,
        initial_scan=parse_initial_scan("since:2000-01-01T00:00:00Z", []),
    )
    # Without s3:ListBucket on the key, S3 answers a missing shard's GetObject with 403.
    proxy.inject(
        S3Error("AccessDenied", 403, "Access Denied"),
        "GetObject",
        when=lambda r: (r.key or "").endswith("/a.json"),
        times=1,
    )
    assert (await scan(config))["statusCode"] == 200
    env.s3.delete_object(Bucket=bucket, Key="incoming/gone/1.csv")
    env.put(bucket, "incoming/a/2.csv")
    second = await scan(config)
    assert second["statusCode"] == 200
    gone = shard_key(state_prefix(DEFAULT_STATE_KEY), "incoming/", "gone")
    assert env.state(state_bucket, gone) is None  # pruned: a DeleteObject
    policy = build_policy(config).document
    calls = [r for r in proxy.requests if r.service == "s3"]
    assert {r.operation for r in calls} >= {
        "ListObjectsV2",
        "GetObject",
        "PutObject",
        "DeleteObject",
    }
    for r in calls:
        need: tuple[str, str, str | None]
        if r.operation == "ListObjectsV2":
            need = ("s3:ListBucket", f"arn:aws:s3:::{r.bucket}", r.query.get("prefix", ""))
        else:
            need = (f"s3:{r.operation}", f"arn:aws:s3:::{r.bucket}/{r.key}", None)
        assert _allowed(policy, *need), need
