"""The fan-out's steps through the Lambda handler and the CLI, against moto: the plan,
the children's folder items (the ItemBatcher batch and the single item), the layout they
need, and the sum of the children's summaries."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from async_discovery.cli import main
from async_discovery.fanout import RESULTS_NAME, sum_summaries
from async_discovery.handler import lambda_handler
from async_discovery.layout import runs_key, shard_key, shards_prefix

from .helpers import MotoEnv

STATE_PREFIX = "state/processed_files/"
PLAN_KEY = runs_key(STATE_PREFIX, "incoming/", "plan.json")
# A folder name holding a comma and spaces: taken whole from an item, never split.
ODD = "q3, final "


class Context:
    def get_remaining_time_in_millis(self) -> int:
        return 600_000


@pytest.fixture
def fan_env(
    env: MotoEnv, bucket: str, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Folders a, b, ODD (two files each), a skipped folder, a top-level file; the
    function's variables with STATE_LAYOUT=folders."""
    keys = [f"incoming/{f}/{n}.csv" for f in ("a", "b", ODD) for n in (1, 2)]
    env.put_many(bucket, [*keys, "incoming/logs/x.csv", "incoming/top.csv"])
    return env.set_variables(
        monkeypatch, bucket, queue_url, STATE_LAYOUT="folders", S3_STATE_KEY=STATE_PREFIX
    )


def objects(env: MotoEnv, bucket: str, prefix: str = "") -> set[str]:
    listed = env.s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for item in listed.get("Contents", [])}


def test_plan_writes_the_folders_in_listing_order_without_skipped_ones(
    env: MotoEnv, bucket: str, fan_env: dict[str, str]
) -> None:
    result = lambda_handler({"action": "plan"}, Context())
    assert result["statusCode"] == 200, result
    assert (result["folders"], result["bucket"], result["key"]) == (3, bucket, PLAN_KEY)
    body = env.s3.get_object(Bucket=bucket, Key=PLAN_KEY)["Body"].read()
    assert json.loads(body) == [{"folder": "a"}, {"folder": "b"}, {"folder": ODD}]
    # The plan lists; it neither sends nor writes state.
    assert objects(env, bucket, shards_prefix(STATE_PREFIX, "incoming/")) == set()


def test_first_plan_fixes_initial_scan_for_every_child(
    env: MotoEnv,
    bucket: str,
    queue_url: str,
    fan_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``INITIAL_SCAN=mark-existing``: the first plan records ``since:<its start>``, so
    each child marks the files older than the plan instead of fixing its own instant."""
    monkeypatch.setenv("INITIAL_SCAN", "mark-existing")
    time.sleep(1.1)  # LastModified has whole seconds: the files predate the plan's second
    result = lambda_handler({"action": "plan"}, Context())
    assert result["statusCode"] == 200, result
    assert result["initial_scan"].startswith("since:")
    initial = runs_key(STATE_PREFIX, "incoming/", "initial.json")
    recorded = json.loads(env.s3.get_object(Bucket=bucket, Key=initial)["Body"].read())
    assert recorded["initial_scan"] == result["initial_scan"]
    time.sleep(1.1)  # LastModified has whole seconds
    env.put(bucket, "incoming/a/3.csv")  # after the plan: sent
    child = lambda_handler({"Items": [{"folder": "a"}, {"folder": "b"}]}, Context())
    assert (child["statusCode"], child["queued"], child["marked"]) == (200, 1, 4), child
    assert [b["key"] for b in env.bodies(queue_url)] == ["incoming/a/3.csv"]
    # A later plan finds shards and keeps the recorded policy.
    assert lambda_handler({"action": "plan"}, Context())["initial_scan"] == result["initial_scan"]


def test_plan_in_a_separate_state_bucket(
    env: MotoEnv, bucket: str, fan_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state_bucket = env.new_bucket()
    monkeypatch.setenv("S3_STATE_BUCKET", state_bucket)
    result = lambda_handler({"action": "plan"}, Context())
    assert (result["statusCode"], result["bucket"]) == (200, state_bucket)
    assert objects(env, state_bucket) == {PLAN_KEY}
    assert PLAN_KEY not in objects(env, bucket)


def test_plan_failure_is_a_500_that_says_why(
    env: MotoEnv, fan_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_SOURCE_BUCKET", "no-such-bucket-here")
    monkeypatch.setenv("S3_STATE_BUCKET", env.new_bucket())
    result = lambda_handler({"action": "plan"}, Context())
    assert result["statusCode"] == 500
    assert "no-such-bucket-here" in result["error"]


def test_batch_event_scans_exactly_its_folders(
    env: MotoEnv, bucket: str, queue_url: str, fan_env: dict[str, str]
) -> None:
    """The ItemBatcher shape: only the named folders are listed, sent and sharded; a
    name with a comma stays one folder."""
    event = {"Items": [{"folder": "a"}, {"folder": ODD}], "BatchInput": {}}
    summary = lambda_handler(event, Context())
    assert (summary["statusCode"], summary["queued"]) == (200, 4), summary
    sent = sorted(b["key"] for b in env.bodies(queue_url))
    assert sent == sorted(f"incoming/{f}/{n}.csv" for f in ("a", ODD) for n in (1, 2))
    assert objects(env, bucket, shards_prefix(STATE_PREFIX, "incoming/")) == {
        shard_key(STATE_PREFIX, "incoming/", "a"),
        shard_key(STATE_PREFIX, "incoming/", ODD),
    }


def test_single_item_event_scans_one_folder(
    env: MotoEnv, queue_url: str, fan_env: dict[str, str]
) -> None:
    summary = lambda_handler({"folder": "b"}, Context())
    assert (summary["statusCode"], summary["queued"]) == (200, 2), summary
    assert sorted(b["key"] for b in env.bodies(queue_url)) == [
        "incoming/b/1.csv",
        "incoming/b/2.csv",
    ]
    again = lambda_handler({"folder": "b"}, Context())
    assert (again["queued"], again["skipped"]) == (0, 2)


def test_batch_input_dry_run_sends_and_writes_nothing(
    env: MotoEnv, bucket: str, queue_url: str, fan_env: dict[str, str]
) -> None:
    event = {"Items": [{"folder": "a"}], "BatchInput": {"dry_run": True}}
    summary = lambda_handler(event, Context())
    assert (summary["statusCode"], summary["queued"], summary["dry_run"]) == (200, 2, True)
    assert env.bodies(queue_url) == []
    assert objects(env, bucket, STATE_PREFIX) == set()


@pytest.mark.parametrize(
    "event",
    [{"action": "plan"}, {"Items": [{"folder": "a"}]}, {"folder": "a"}],
    ids=["plan", "batch", "item"],
)
def test_fanout_events_need_the_folders_layout(
    env: MotoEnv,
    bucket: str,
    queue_url: str,
    fan_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    event: dict[str, Any],
) -> None:
    monkeypatch.setenv("STATE_LAYOUT", "single")
    monkeypatch.setenv("S3_STATE_KEY", "state/processed_files.json")
    summary = lambda_handler(event, Context())
    assert summary["statusCode"] == 500
    assert "STATE_LAYOUT" in summary["error"]
    assert env.bodies(queue_url) == []
    assert objects(env, bucket, "state/") == set()


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({"Items": []}, "Items"),
        ({"Items": [{"folder": "a"}, {"name": "b"}]}, "Items[1]"),
        ({"Items": [{"folder": "a/b"}]}, "Items[0]"),
        ({"folder": ""}, "folder"),
        ({"folder": 7}, "folder"),
        ({"action": "plna"}, "action"),
    ],
    ids=["empty", "no-folder", "slash", "empty-name", "not-text", "unknown-action"],
)
def test_malformed_fanout_events_are_refused(
    env: MotoEnv, queue_url: str, fan_env: dict[str, str], event: dict[str, Any], named: str
) -> None:
    """A bad item or an unknown action is a 500 naming the field: never a scan of
    every folder instead."""
    summary = lambda_handler(event, Context())
    assert summary["statusCode"] == 500
    assert f"event field {named} " in summary["error"], summary["error"]
    assert env.bodies(queue_url) == []


def _child(status: int, queued: int, **extra: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "statusCode": status,
        "queued": queued,
        "skipped": 10,
        "errors": 1 if status == 207 else 0,
        "execution_time_seconds": 1.5,
        "listed": queued + 10,
        "truncated": False,
        "dry_run": False,
        "api_calls": {"ListObjectsV2": 1, "SendMessageBatch": 2},
        "state_objects_written": 1,
    }
    summary.update(extra)
    return summary


def test_sum_adds_up_counters_and_api_calls() -> None:
    total = sum_summaries([_child(200, 5), _child(200, 7, truncated=True)])
    assert total["statusCode"] == 200
    assert (total["queued"], total["skipped"], total["errors"], total["listed"]) == (
        12,
        20,
        0,
        32,
    )
    assert total["api_calls"] == {"ListObjectsV2": 2, "SendMessageBatch": 4}
    assert (total["children"], total["failed_children"], total["truncated"]) == (2, 0, True)
    assert total["state_objects_written"] == 2
    assert (total["execution_time_seconds"], total["slowest_child_seconds"]) == (3.0, 1.5)
    assert "error" not in total


def test_sum_is_207_when_a_child_is_partial_or_failed() -> None:
    partial = sum_summaries([_child(200, 5), _child(207, 1, error="a folder failed")])
    assert (partial["statusCode"], partial["failed_children"]) == (207, 1)
    assert "a folder failed" in partial["error"]
    failed = sum_summaries([_child(500, 0, error="listing failed"), {"Error": "States.Timeout"}])
    assert (failed["statusCode"], failed["failed_children"]) == (207, 2)
    assert "listing failed" in failed["error"] and "States.Timeout" in failed["error"]


def test_sum_reads_lambda_invoke_results_and_refuses_a_non_list() -> None:
    total = sum_summaries([{"Payload": _child(200, 3), "StatusCode": 200}])
    assert (total["statusCode"], total["queued"]) == (200, 3)
    assert sum_summaries([])["statusCode"] == 200
    refused = sum_summaries({"queued": 1})
    assert refused["statusCode"] == 500 and "summaries" in refused["error"]


def test_sum_event_through_the_handler() -> None:
    total = lambda_handler({"action": "sum", "summaries": [_child(200, 2)] * 3}, Context())
    assert (total["statusCode"], total["queued"], total["children"]) == (200, 6, 3)


# -- the sum of a map run's ResultWriter output, read from S3 ----------------------------

MAP_RUN = "6dbfba93-bcff-410b-9b5c-abf41ae9eddb"
RESULTS = runs_key(STATE_PREFIX, "incoming/", RESULTS_NAME) + "/" + MAP_RUN
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:scanner-fanout"


def _record(folders: list[str], status: str = "SUCCEEDED", **extra: Any) -> dict[str, Any]:
    """One child execution as the ResultWriter writes it (Transformation NONE): input
    and output as JSON strings, with the execution's metadata."""
    name = f"{abs(hash(tuple(folders))):x}"
    record: dict[str, Any] = {
        "ExecutionArn": f"{MACHINE.replace('stateMachine', 'execution')}/ScanFolders:{name}",
        "Input": json.dumps(
            {"Items": [{"folder": f} for f in folders], "BatchInput": {"dry_run": False}}
        ),
        "InputDetails": {"Included": True},
        "Name": name,
        "RedriveCount": 0,
        "RedriveStatus": "NOT_REDRIVABLE",
        "StartDate": "2026-11-30T10:00:00.000Z",
        "StateMachineArn": f"{MACHINE}/ScanFolders",
        "Status": status,
        "StopDate": "2026-11-30T10:00:07.000Z",
    }
    record.update(extra)
    return record


def _succeeded(folders: list[str], queued: int, **extra: Any) -> dict[str, Any]:
    output = json.dumps(_child(200, queued, **extra))
    return _record(folders, Output=output, OutputDetails={"Included": True})


def write_results(
    env: MotoEnv, bucket: str, files: dict[str, list[dict[str, Any]]], *, lines: bool = False
) -> dict[str, str]:
    """Write a map run's results as Step Functions does: ``<status>_<n>.json`` files
    (a JSON array; ``lines``: JSON Lines) and ``manifest.json`` listing them by status.
    Returns the ``ResultWriterDetails`` the Map outputs."""
    listed: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
    for status, records in files.items():
        key = f"{RESULTS}/{status}_0.json"
        body = (
            "\n".join(json.dumps(r) for r in records) if lines else json.dumps(records)
        ).encode()
        env.s3.put_object(Bucket=bucket, Key=key, Body=body)
        listed[status].append({"Key": key, "Size": len(body)})
    manifest = {
        "DestinationBucket": bucket,
        "MapRunArn": f"{MACHINE.replace('stateMachine', 'mapRun')}/ScanFolders:{MAP_RUN}",
        "ResultFiles": listed,
    }
    key = f"{RESULTS}/manifest.json"
    env.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode())
    return {"Bucket": bucket, "Key": key}


def test_sum_reads_the_result_writer_manifest_and_its_files(
    env: MotoEnv, bucket: str, fan_env: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    """A map run's results in S3: the children that succeeded are added up, a failed
    child execution is a failed child (with its Error and Cause), every planned item is
    accounted for; the sum's EMF record follows."""
    location = write_results(
        env,
        bucket,
        {
            "SUCCEEDED": [_succeeded(["a", "b"], 4), _succeeded(["c"], 3, truncated=True)],
            "FAILED": [
                _record(["d", "e"], "FAILED", Error="Lambda.Unknown", Cause="out of memory")
            ],
        },
    )
    event = {"action": "sum", "results": location, "items": 5}
    total = lambda_handler(event, Context())
    assert (total["statusCode"], total["queued"], total["children"]) == (207, 7, 3), total
    assert (total["failed_children"], total["items"], total["truncated"]) == (1, 5, True)
    assert total["error"] == (
        "1 of 3 children did not return 200: child (folders d, e): execution FAILED "
        "(Lambda.Unknown: out of memory)"
    )
    assert total["results"] == {"bucket": bucket, "key": location["Key"]}
    assert total["sum_api_calls"] == {"GetObject": 3}
    records = [json.loads(x) for x in capfd.readouterr().err.splitlines() if '"_aws"' in x]
    assert [(r["step"], r["fanout.truncated"], r["fanout.failed_children"]) for r in records] == [
        ("sum", 1.0, 1.0)
    ]


def test_sum_of_json_lines_results_with_every_child_clean_is_200(
    env: MotoEnv, bucket: str, fan_env: dict[str, str]
) -> None:
    location = write_results(
        env, bucket, {"SUCCEEDED": [_succeeded(["a"], 2), _succeeded(["b", ODD], 4)]}, lines=True
    )
    total = lambda_handler({"action": "sum", "results": location, "items": 3}, Context())
    assert (total["statusCode"], total["queued"], total["children"]) == (200, 6, 2), total
    assert "error" not in total


def test_sum_says_when_planned_items_have_no_result(
    env: MotoEnv, bucket: str, fan_env: dict[str, str]
) -> None:
    """A manifest that accounts for fewer items than the plan had (a child never run,
    a result lost) is never a clean run."""
    location = write_results(env, bucket, {"SUCCEEDED": [_succeeded(["a"], 2)]})
    total = lambda_handler({"action": "sum", "results": location, "items": 4}, Context())
    assert total["statusCode"] == 207
    assert (
        total["error"]
        == "3 of 4 planned items have no child result (not run, or lost before the sum)"
    )


def test_sum_of_results_that_cannot_be_read_is_a_500_naming_them(
    env: MotoEnv, bucket: str, fan_env: dict[str, str]
) -> None:
    missing = {"Bucket": bucket, "Key": f"{RESULTS}/manifest.json"}
    total = lambda_handler({"action": "sum", "results": missing}, Context())
    assert total["statusCode"] == 500 and missing["Key"] in total["error"]
    env.s3.put_object(Bucket=bucket, Key=missing["Key"], Body=b"{not json")
    total = lambda_handler({"action": "sum", "results": missing}, Context())
    assert total["statusCode"] == 500 and "is not JSON" in total["error"]
    location = write_results(env, bucket, {"SUCCEEDED": [_succeeded(["a"], 2)]})
    env.s3.delete_object(Bucket=bucket, Key=f"{RESULTS}/SUCCEEDED_0.json")
    total = lambda_handler({"action": "sum", "results": location}, Context())
    assert total["statusCode"] == 500 and "SUCCEEDED_0.json" in total["error"]
    refused = lambda_handler({"action": "sum", "results": "s3://x/y"}, Context())
    assert refused["statusCode"] == 500 and "ResultWriterDetails" in refused["error"]


def test_failure_record_is_a_500_with_the_maps_error(capfd: pytest.CaptureFixture[str]) -> None:
    failure = {"Error": "States.ExceedToleratedFailureThreshold", "Cause": "2 of 10 failed"}
    record = lambda_handler({"action": "failed", "failure": failure, "items": 10}, Context())
    assert record["statusCode"] == 500 and record["items"] == 10
    assert record["error"] == (
        "fan-out failed: States.ExceedToleratedFailureThreshold: 2 of 10 failed"
    )
    err = capfd.readouterr().err
    metrics = [json.loads(x) for x in err.splitlines() if '"_aws"' in x]
    assert [(m["step"], m["failed_runs"]) for m in metrics] == [("fanout", 1.0)]
    assert "fanout.truncated" not in metrics[0]  # a 0 here would read as a finished pass


def test_cli_plan_scan_folders_and_sum(
    env: MotoEnv,
    bucket: str,
    queue_url: str,
    fan_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The CLI's fan-out: ``plan``, a ``scan --folders`` per batch, ``sum``."""
    assert main(["plan"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert (planned["statusCode"], planned["folders"], planned["key"]) == (200, 3, PLAN_KEY)
    assert main(["scan", "--folders", "a,b"]) == 0
    first = capsys.readouterr().out
    assert json.loads(first)["queued"] == 4
    assert sorted(b["key"] for b in env.bodies(queue_url)) == sorted(
        f"incoming/{f}/{n}.csv" for f in ("a", "b") for n in (1, 2)
    )
    assert main(["scan", "--folders", "b"]) == 0
    second = capsys.readouterr().out
    summaries = tmp_path / "children.jsonl"
    summaries.write_text(first + second, encoding="utf-8")
    assert main(["sum", str(summaries)]) == 0
    total = json.loads(capsys.readouterr().out)
    assert (total["queued"], total["skipped"], total["children"]) == (4, 2, 2)


def test_cli_sum_exit_status_follows_the_children(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "children.json"
    path.write_text(json.dumps([_child(200, 1), _child(207, 1)]), encoding="utf-8")
    assert main(["sum", str(path)]) == 3
    assert json.loads(capsys.readouterr().out)["statusCode"] == 207
    path.write_text("{not json", encoding="utf-8")
    assert main(["sum", str(path)]) == 1
    assert "children.json" in capsys.readouterr().err


DEEP = 100_000  # far past Python's recursion limit


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[" * DEEP + "]" * DEEP, "nested too deep"),
        ('{"a": ' * DEEP + "1" + "}" * DEEP, "nested too deep"),
        ('{"statusCode": 200, "execution_time_seconds": NaN}', "NaN"),
        ('{"statusCode": 200, "execution_time_seconds": Infinity}', "Infinity"),
        ('[{"statusCode": 200, "execution_time_seconds": -Infinity}]', "-Infinity"),
        ('{"statusCode": 200, "execution_time_seconds": 1e400}', "out of range"),
    ],
    ids=["deep-array", "deep-object", "nan", "infinity", "minus-infinity", "1e400"],
)
def test_cli_sum_bad_input_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    path = tmp_path / "children.json"
    path.write_text(text, encoding="utf-8")
    assert main(["sum", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"async-discovery sum: {path}: ")
    assert said in err


def test_cli_sum_total_out_of_range_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "children.json"
    path.write_text(json.dumps([_child(200, 1, execution_time_seconds=1e308)] * 2))
    assert main(["sum", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "cannot be written as JSON" in err


def test_sum_event_with_non_finite_or_deep_values_stays_json() -> None:
    # The Lambda runtime's json reads NaN and Infinity; the sum never returns them.
    deep: Any = []
    for _ in range(5_000):
        deep = [deep]
    total = lambda_handler(
        {
            "action": "sum",
            "summaries": [
                _child(200, 1, execution_time_seconds=float("nan")),
                _child(200, 1, execution_time_seconds=float("inf")),
                deep,
            ],
        },
        Context(),
    )
    json.dumps(total, allow_nan=False)
    assert (total["statusCode"], total["queued"], total["failed_children"]) == (207, 2, 1)
    assert total["execution_time_seconds"] == 0.0 and "not a summary" in total["error"]


def test_cli_plan_needs_the_folders_layout(
    fan_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STATE_LAYOUT", "single")
    assert main(["plan"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["statusCode"] == 500
    assert "STATE_LAYOUT" in captured.err
