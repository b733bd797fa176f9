"""The shipped Step Functions definition (deploy/statemachine/fanout.asl.json), executed.

moto's Step Functions backend runs a definition with its ASL interpreter when its
``execute_state_machine`` option is on. A moto server started in this process serves
Step Functions, so the option is switched on for the test, and the interpreter's Lambda
invocations are answered by the real :func:`async_discovery.handler.lambda_handler`,
called in-process (moto's Lambda would need Docker). S3 and SQS (the function's, and
the Map's ``ItemReader`` and ``ResultWriter``) are a moto server in its own process,
so that its CPU is not taken from the children.

moto 5.2.5's ASL grammar has no ``ItemBatcher``, so the definition runs with the batcher
left out: each child gets one ``{"folder": F}`` item, a shape the handler takes too (the
batch shape, and a dry run passed as ``BatchInput``, are tested through the handler in
tests/test_fanout.py).

moto's ``ResultWriter`` writes the manifest (``manifest.json``, where Step Functions
writes it) but no result file: its ``ResultFiles`` lists are empty. The shipped
definition runs as it is here (:func:`test_shipped_definition_sums_the_manifest_moto_writes`:
the sum reads moto's manifest and says that no child result is in it); the end-to-end
runs that check the summed counts use :func:`definition` with ``results="inline"``, the
Map's output passed to the sum as ``summaries`` (the form the CLI's ``sum`` takes). The
sum of a manifest with its result files, as Step Functions writes them, is tested
against moto's S3 in tests/test_fanout.py.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from async_discovery.fanout import RESULTS_NAME
from async_discovery.handler import lambda_handler
from async_discovery.layout import runs_key, shard_key, shards_prefix

from .helpers import MotoEnv

ROOT = Path(__file__).resolve().parent.parent
DEFINITION = ROOT / "deploy" / "statemachine" / "fanout.asl.json"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:async-discovery"
ROLE_ARN = "arn:aws:iam::123456789012:role/async-discovery-fanout"
STATE_PREFIX = "state/processed_files/"


RESULTS_PREFIX = runs_key(STATE_PREFIX, "incoming/", RESULTS_NAME)


def definition(
    state_bucket: str,
    *,
    max_concurrency: int = 4,
    batch_size: int = 10,
    tolerated: int = 0,
    results: str = "s3",
) -> dict[str, Any]:
    """The shipped definition with its template substitutions filled in, and without
    the ``ItemBatcher`` moto's grammar lacks. ``results="inline"``: the Map's output
    (the children's summaries) goes to the sum instead of the ResultWriter manifest,
    of which moto writes no result file."""
    text = DEFINITION.read_text(encoding="utf-8")
    for name, value in {
        "FunctionArn": FUNCTION_ARN,
        "MaxConcurrency": str(max_concurrency),
        "BatchSize": str(batch_size),
        "ToleratedFailurePercentage": str(tolerated),
        "StateBucket": state_bucket,
        "ResultsPrefix": RESULTS_PREFIX,
    }.items():
        text = text.replace("${" + name + "}", value)
    doc: dict[str, Any] = json.loads(text)
    mapped = doc["States"]["Scan folders"]
    del mapped["ItemBatcher"]
    if results == "inline":
        del mapped["ResultWriter"]
        payload = doc["States"]["Sum"]["Parameters"]["Payload"]
        assert payload.pop("results.$") == "$.mapped.ResultWriterDetails"
        payload["summaries.$"] = "$.mapped"
    return doc


class _Context:
    """A Lambda context with the full 15 minutes left."""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


class InProcessLambda:
    """Answers the interpreter's ``lambda.invoke`` with the real handler, in the calling
    thread (the Map's iterations run in threads of their own), and records each event
    and how many invocations ran at once."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()
        # Set: the plan step's answer names this plan object instead of the one written.
        self.plan_key: str | None = None

    def invoke(self, **params: Any) -> dict[str, Any]:
        payload = params.get("Payload") or b"{}"
        event = json.loads(payload) if isinstance(payload, bytes | str) else payload
        with self._lock:
            self.events.append(event)
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            result = lambda_handler(event, _Context())
            if event.get("action") == "plan" and self.plan_key is not None:
                result["key"] = self.plan_key
        finally:
            with self._lock:
                self.running -= 1
        body = json.dumps(result).encode("utf-8")
        return {"StatusCode": 200, "Payload": io.BytesIO(body), "ExecutedVersion": "$LATEST"}

    def kinds(self) -> Counter[str]:
        """Invocations by step: plan, sum, or item (a child)."""
        return Counter(str(e.get("action", "item")) for e in self.events)


@pytest.fixture(scope="module")
def sfn_endpoint(moto_endpoint: str) -> Iterator[str]:
    """Step Functions: a moto server in this process, the one whose interpreter the
    test can switch on and reach. S3 and SQS for the function are ``store_endpoint``."""
    from async_discovery.testing.moto_server import threaded_moto_server

    with threaded_moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def store_endpoint(moto_endpoint: str) -> Iterator[str]:
    """S3 and SQS for the function: a moto server of this module's own (the session's
    kind, in its own process), empty of the other tests' buckets and queues."""
    from async_discovery.testing.moto_server import moto_server_process

    with moto_server_process(module="async_discovery.bench.moto_main") as (url, _pid):
        yield url


@pytest.fixture
def store(store_endpoint: str) -> MotoEnv:
    return MotoEnv(store_endpoint)


@contextmanager
def executing_step_functions(endpoint: str) -> Iterator[InProcessLambda]:
    """moto's ASL interpreter on, its S3 calls sent to ``endpoint``, Lambda in-process."""
    from moto.core.config import default_user_config
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import (
        lambda_eval_utils,
    )
    from moto.stepfunctions.parser.asl.utils import boto_client

    port = str(urlsplit(endpoint).port)
    function = InProcessLambda()
    real_client_for = getattr(lambda_eval_utils, "boto_client_for")  # noqa: B009

    def client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        if service == "lambda":
            return function
        return real_client_for(region, service, state_credentials)

    sfn_config: dict[str, Any] = default_user_config.setdefault("stepfunctions", {})  # type: ignore[assignment]
    saved_flag = sfn_config.get("execute_state_machine", False)
    saved_port = getattr(boto_client, "moto_server_port")  # noqa: B009
    sfn_config["execute_state_machine"] = True
    # The interpreter addresses "localhost:<MOTO_PORT>"; this server's port instead.
    setattr(boto_client, "moto_server_port", lambda: port)  # noqa: B010
    setattr(lambda_eval_utils, "boto_client_for", client_for)  # noqa: B010
    try:
        yield function
    finally:
        sfn_config["execute_state_machine"] = saved_flag
        setattr(boto_client, "moto_server_port", saved_port)  # noqa: B010
        setattr(lambda_eval_utils, "boto_client_for", real_client_for)  # noqa: B010


@pytest.fixture
def sfn(sfn_endpoint: str) -> Any:
    return boto3.client("stepfunctions", endpoint_url=sfn_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(store: MotoEnv) -> str:
    return store.new_bucket()


@pytest.fixture
def queue_url(store: MotoEnv) -> str:
    return store.new_queue()


@pytest.fixture
def fanout_env(
    store: MotoEnv, bucket: str, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The function's environment: layout ``folders``, prefix ``incoming/``."""
    values = {
        "S3_SOURCE_BUCKET": bucket,
        "S3_PREFIX": "incoming/",
        "SQS_QUEUE_URL": queue_url,
        "STATE_LAYOUT": "folders",
        "S3_STATE_KEY": STATE_PREFIX,
        "AWS_ENDPOINT_URL": store.endpoint,
        "LOG_LEVEL": "WARNING",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def execute(
    sfn: Any, machine_arn: str, timeout: float = 120.0, given: str = "{}"
) -> dict[str, Any]:
    """Start an execution and wait for its end; the description with the output parsed."""
    name = f"run-{time.monotonic_ns()}"  # moto names an unnamed execution "None"
    arn = sfn.start_execution(stateMachineArn=machine_arn, name=name, input=given)["executionArn"]
    until = time.monotonic() + timeout
    while True:
        desc: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            break
        if time.monotonic() > until:
            pytest.fail(f"execution still running after {timeout} s")
        time.sleep(0.1)
    if desc.get("output"):
        desc["result"] = json.loads(desc["output"])
    return desc


def create_machine(sfn: Any, doc: dict[str, Any]) -> str:
    name = f"fanout-{time.monotonic_ns()}"
    return str(
        sfn.create_state_machine(name=name, definition=json.dumps(doc), roleArn=ROLE_ARN)[
            "stateMachineArn"
        ]
    )


def shard_keys(env: MotoEnv, bucket: str) -> set[str]:
    listed = env.s3.list_objects_v2(Bucket=bucket, Prefix=shards_prefix(STATE_PREFIX, "incoming/"))
    return {item["Key"] for item in listed.get("Contents", [])}


def test_plan_map_sum_runs_end_to_end(
    store: MotoEnv, bucket: str, queue_url: str, fanout_env: dict[str, str], sfn: Any
) -> None:
    """plan → Map over the plan object (ItemReader) → sum, on three folders: each file
    sent once, each folder's shard written, the plan in listing order without the
    skipped folder, one summary out."""
    keys = [f"incoming/{f}/{n}.csv" for f in ("a", "b", "c") for n in (1, 2)]
    store.put_many(bucket, [*keys, "incoming/logs/x.csv", "incoming/top.csv"])
    with executing_step_functions(store.endpoint) as function:
        machine = create_machine(sfn, definition(bucket, results="inline"))
        desc = execute(sfn, machine)
    assert desc["status"] == "SUCCEEDED", desc
    result = desc["result"]
    assert result["statusCode"] == 200, result
    assert (result["queued"], result["children"], result["failed_children"]) == (6, 3, 0)
    assert function.kinds() == Counter({"plan": 1, "item": 3, "sum": 1})
    assert sorted(e["folder"] for e in function.events if "folder" in e) == ["a", "b", "c"]
    # The execution's input, with its defaults: not a dry run.
    assert [e for e in function.events if e.get("action") == "plan"] == [
        {"action": "plan", "dry_run": False}
    ]
    plan = store.s3.get_object(Bucket=bucket, Key=runs_key(STATE_PREFIX, "incoming/", "plan.json"))
    assert json.loads(plan["Body"].read()) == [{"folder": "a"}, {"folder": "b"}, {"folder": "c"}]
    assert sorted(b["key"] for b in store.bodies(queue_url)) == sorted(keys)
    assert shard_keys(store, bucket) == {
        shard_key(STATE_PREFIX, "incoming/", f) for f in ("a", "b", "c")
    }


def shard_etags(env: MotoEnv, bucket: str) -> dict[str, str]:
    """Every shard of ``incoming/`` and its ETag."""
    found: dict[str, str] = {}
    paginator = env.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=shards_prefix(STATE_PREFIX, "incoming/")):
        found.update({item["Key"]: item["ETag"] for item in page.get("Contents", [])})
    return found


def recorded(env: MotoEnv, bucket: str) -> dict[str, str]:
    """Every file the shards record as queued, and its ETag."""
    files: dict[str, str] = {}
    for key in shard_etags(env, bucket):
        shard = json.loads(env.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        files.update(
            {
                name: entry["etag"]
                for name, entry in shard["files"].items()
                if entry["status"] == "queued"
            }
        )
    return files


def stored_messages(env: MotoEnv, queue_url: str) -> int:
    """Messages in the queue (moto counts them exactly)."""
    attrs = env.sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fanout_over_200_folders_sends_each_file_once_and_writes_each_shard_once(
    store: MotoEnv, bucket: str, queue_url: str, fanout_env: dict[str, str], sfn: Any
) -> None:
    """20,000 files in 200 folders, scanned by children running in parallel: every file
    sent once, every shard written once (one PutObject each: no conflict), the sum
    right. A second execution sends and writes nothing; after 3 files in 3 folders
    change, the third sends those 3 and writes exactly their 3 shards.

    Sends are counted, not received (moto's receive costs O(queue depth)): a shard
    records only files whose send succeeded, so 20,000 distinct recorded files and
    20,000 stored messages mean each file was sent exactly once.
    """
    folders = [f"f{i:03d}" for i in range(200)]
    keys = [f"incoming/{f}/{n:03d}.csv" for f in folders for n in range(100)]
    seeding = time.perf_counter()
    store.put_many(bucket, keys)
    seeded = time.perf_counter() - seeding
    etags = {k: v["ETag"].strip('"') for k, v in _heads(store, bucket).items()}
    with executing_step_functions(store.endpoint) as function:
        machine = create_machine(sfn, definition(bucket, results="inline"))
        started = time.perf_counter()
        first = execute(sfn, machine, timeout=600)
        timings = [time.perf_counter() - started]
        assert first["status"] == "SUCCEEDED", first
        result = first["result"]
        assert (result["statusCode"], result["queued"], result["errors"]) == (200, 20_000, 0)
        assert (result["children"], result["failed_children"]) == (200, 0)
        assert function.peak >= 4, function.peak  # children ran side by side
        assert recorded(store, bucket) == etags
        assert stored_messages(store, queue_url) == 20_000
        # One PutObject per shard: a conflict (412/409) would have cost a second one.
        assert result["api_calls"].get("PutObject") == 200
        written = shard_etags(store, bucket)
        assert set(written) == {shard_key(STATE_PREFIX, "incoming/", f) for f in folders}

        started = time.perf_counter()
        second = execute(sfn, machine, timeout=600)
        timings.append(time.perf_counter() - started)
        again = second["result"]
        assert (again["statusCode"], again["queued"], again["skipped"]) == (200, 0, 20_000)
        assert "PutObject" not in again["api_calls"]
        assert stored_messages(store, queue_url) == 20_000
        assert shard_etags(store, bucket) == written

        changed = ["incoming/f007/001.csv", "incoming/f100/050.csv", "incoming/f199/099.csv"]
        for key in changed:
            etags[key] = store.put(bucket, key, b"new,content\n")
        started = time.perf_counter()
        third = execute(sfn, machine, timeout=600)
        timings.append(time.perf_counter() - started)
    last = third["result"]
    assert (last["statusCode"], last["queued"], last["updated"]) == (200, 3, 3)
    assert last["api_calls"].get("PutObject") == 3
    assert stored_messages(store, queue_url) == 20_003
    now = shard_etags(store, bucket)
    rewritten = {key for key in now if now[key] != written[key]}
    assert rewritten == {shard_key(STATE_PREFIX, "incoming/", f) for f in ("f007", "f100", "f199")}
    assert recorded(store, bucket) == etags
    print(
        f"seeding {seeded:.1f} s; executions {', '.join(f'{t:.1f} s' for t in timings)}; "
        f"peak children {function.peak}"
    )


def _heads(env: MotoEnv, bucket: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    paginator = env.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix="incoming/"):
        found.update({item["Key"]: item for item in page.get("Contents", [])})
    return found


def test_failed_plan_ends_the_execution_in_plan_failed(
    store: MotoEnv,
    bucket: str,
    queue_url: str,
    fanout_env: dict[str, str],
    sfn: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plan that returns 500 (here: the single layout) fails the execution with
    ``PlanFailed``; no child runs and nothing is sent."""
    store.put(bucket, "incoming/a/1.csv")
    monkeypatch.setenv("STATE_LAYOUT", "single")
    with executing_step_functions(store.endpoint) as function:
        desc = execute(sfn, create_machine(sfn, definition(bucket)))
    assert desc["status"] == "FAILED", desc
    assert desc.get("error") == "PlanFailed", desc
    assert function.kinds() == Counter({"plan": 1})
    assert store.bodies(queue_url) == []


def test_shipped_definition_sums_the_manifest_moto_writes(
    store: MotoEnv, bucket: str, queue_url: str, fanout_env: dict[str, str], sfn: Any
) -> None:
    """The definition as shipped (less ``ItemBatcher``): the Map writes its results
    with ``ResultWriter`` under the results prefix, the sum reads that manifest from S3.
    moto's manifest lists no result file, so the sum finds no result for the 3 planned
    items and says so (207), never a clean 200; the children did their work."""
    store.put_many(bucket, [f"incoming/{f}/1.csv" for f in ("a", "b", "c")])
    with executing_step_functions(store.endpoint) as function:
        desc = execute(sfn, create_machine(sfn, definition(bucket)), given='{"dry_run": false}')
    assert desc["status"] == "SUCCEEDED", desc
    (summed,) = [e for e in function.events if e.get("action") == "sum"]
    location = summed["results"]
    assert location["Bucket"] == bucket and summed["items"] == 3
    assert location["Key"].startswith(RESULTS_PREFIX + "/")
    assert location["Key"].endswith("/manifest.json")
    manifest = json.loads(store.s3.get_object(**location)["Body"].read())
    # If moto starts writing result files, the sum of real ones can be checked here.
    assert manifest["ResultFiles"] == {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
    result = desc["result"]
    assert (result["statusCode"], result["children"], result["items"]) == (207, 0, 3)
    assert "3 of 3 planned items have no child result" in result["error"]
    assert len(store.bodies(queue_url)) == 3


def test_failed_map_is_recorded_then_fails_the_execution(
    store: MotoEnv,
    bucket: str,
    queue_url: str,
    fanout_env: dict[str, str],
    sfn: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A Map that fails (here its ItemReader: the plan names an object that is not
    there) is caught: the function is invoked with the failure, logs it and writes
    failed_runs = 1 to its metrics, then the execution fails as ScanFailed; no sum.

    (moto neither evaluates ``ToleratedFailurePercentage`` nor fails a Distributed Map
    whose child failed: a child's failure cannot be what fails the Map here.)"""
    store.put_many(bucket, [f"incoming/{f}/1.csv" for f in ("a", "b")])
    with executing_step_functions(store.endpoint) as function:
        function.plan_key = runs_key(STATE_PREFIX, "incoming/", "no-such-plan.json")
        desc = execute(sfn, create_machine(sfn, definition(bucket)))
    assert desc["status"] == "FAILED", desc
    assert desc.get("error") == "ScanFailed", desc
    assert function.kinds() == Counter({"plan": 1, "failed": 1})
    (recorded,) = [e for e in function.events if e.get("action") == "failed"]
    assert recorded["items"] == 2 and recorded["failure"]["Error"], recorded
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    failures = [x for x in lines if x.get("event") == "fanout_failed"]
    assert len(failures) == 1 and failures[0]["error"].startswith("fan-out failed: ")
    assert recorded["failure"]["Error"] in failures[0]["error"]
    metrics = [x for x in lines if "_aws" in x and x.get("step") == "fanout"]
    assert [m["failed_runs"] for m in metrics] == [1.0]
    assert store.bodies(queue_url) == []


def test_an_execution_started_as_a_dry_run_plans_as_one(
    store: MotoEnv, bucket: str, queue_url: str, fanout_env: dict[str, str], sfn: Any
) -> None:
    """``{"dry_run": true}`` as the execution's input reaches the plan (and, through
    ``ItemBatcher``'s ``BatchInput``, every child: see tests/test_fanout.py); the
    children moto runs without a batcher get only their item."""
    store.put(bucket, "incoming/a/1.csv")
    with executing_step_functions(store.endpoint) as function:
        desc = execute(
            sfn,
            create_machine(sfn, definition(bucket, results="inline")),
            given='{"dry_run": true}',
        )
    assert desc["status"] == "SUCCEEDED", desc
    assert {"action": "plan", "dry_run": True} in function.events
    shipped = json.loads(DEFINITION.read_text(encoding="utf-8"))
    batcher = shipped["States"]["Scan folders"]["ItemBatcher"]
    assert batcher["BatchInput"] == {"dry_run.$": "$.dry_run"}
