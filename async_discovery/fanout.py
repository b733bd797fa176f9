"""Fan-out on AWS Step Functions Distributed Map (SPEC "Fan-out on AWS Step Functions
Distributed Map"): the plan, the children's events and the sum of their summaries.

One Lambda function serves every step of ``deploy/statemachine/fanout.asl.json``:

- ``{"action": "plan"}`` (:func:`run_plan`): one ``Delimiter`` listing of the prefix
  finds its folders (skipped folders left out); they are written, in listing order, as
  a JSON array of items to ``<state prefix>runs/<P>plan.json`` in the state bucket, the
  Distributed Map's ``ItemReader`` source: ``{"folder": F}``, or for a folder split by
  key range one item per range, ``{"folder": F, "after": …, "until": …}``. A first
  plan of the prefix also fixes ``INITIAL_SCAN`` (:func:`fix_first_run`), so the
  children agree on it.
- ``{"Items": [item, …], "BatchInput": {…}}`` (what ``ItemBatcher`` passes) or one item
  (:func:`event_items`): a scan of exactly those folders and ranges. A child cut short
  by the deadline leaves each unfinished item's progress under ``runs/<P>items/``; the
  next child given the item continues from there.
- ``{"action": "sum", "results": {"Bucket": …, "Key": …}, "items": N}``
  (:func:`sum_results`): the Map's ``ResultWriter`` manifest in S3 and the files it
  lists, one record per child execution, summed into the execution's summary; or
  ``{"action": "sum", "summaries": [...]}`` (:func:`sum_summaries`): the summaries
  themselves (the command line's ``sum``).
- ``{"action": "failed", "failure": {"Error": …, "Cause": …}}`` (:func:`failure_summary`):
  what the state machine's ``Catch`` passes when the Map failed; recorded as a 500.

The plan, the children and a sum of results need ``STATE_LAYOUT=folders`` (each
folder's state is its own shard, so children never write the same object); under
``single`` they return a 500 summary naming ``STATE_LAYOUT`` (:func:`layout_problem`).
"""

from __future__ import annotations

import json
import logging
import math
import reprlib
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from .aws import S3Lister, S3StateObjects, open_clients
from .aws.objects import get_bytes, put_json
from .config import Config
from .deadline import Deadline
from .errors import DiscoveryError
from .layout import runs_key, shard_name, shards_prefix
from .messages import iso_utc
from .runner import unexpected_error
from .stages.context import RunContext
from .stages.decide import Tally
from .stages.plan import Job
from .stages.runs import RunObjects, item_of
from .stages.shards import Shards
from .summary import FAILED, OK, PARTIAL, RunStats, build_summary

log = logging.getLogger("async_discovery")

PLAN_NAME = "plan.json"
# Where the Distributed Map's ResultWriter puts a map run's manifest and result files:
# <state prefix>runs/<P>results/<map run id>/ (deploy/template.yaml, ResultsPrefix).
RESULTS_NAME = "results"
# A result file is read whole: 10,000 children write about 25 MB (input and output of
# each child execution), far below this.
RESULT_FILE_MAX_BYTES = 256 << 20
EventKind = Literal["plan", "items", "sum", "failed"]

# The summary counters a sum adds up (SPEC "Summary" and the extra keys of a run).
COUNTERS = (
    "queued",
    "skipped",
    "errors",
    "listed",
    "candidates",
    "ignored",
    "new",
    "updated",
    "deferred",
    "marked",
    "pruned",
    "found_by_reconciliation",
    "folder_errors",
    "held_back",
    "state_bytes",
    "state_objects_read",
    "state_objects_written",
    "state_objects_verified",
)
_SHOWN_ERRORS = 3  # child errors quoted in the sum's ``error`` (the rest are counted)


def event_kind(event: Any) -> EventKind | None:
    """Which fan-out step ``event`` asks for; None for a plain run (a scheduled event,
    ``{"dry_run": true}``). An ``action`` other than ``plan``/``sum``/``doctor`` is
    refused by :func:`action_problem`, not taken for a plain run."""
    if not isinstance(event, dict):
        return None
    action = event.get("action")
    if action == "plan":
        return "plan"
    if action == "sum":
        return "sum"
    if action == "failed":
        return "failed"
    if "Items" in event or "folder" in event:
        return "items"
    return None


def action_problem(event: Any) -> str | None:
    """The problem with an event's ``action`` that names no step (a typo must not run
    a whole scan instead), or None."""
    if not isinstance(event, dict) or "action" not in event:
        return None
    action = event["action"]
    if action in ("plan", "sum", "failed", "doctor"):
        return None
    return f"event field action = {_shown(action)}: unknown; expected plan, sum, failed or doctor"


def layout_problem(config: Config) -> str | None:
    """Why the fan-out steps cannot run under this config (None when they can)."""
    if config.state_layout == "folders":
        return None
    return (
        f"STATE_LAYOUT = {config.state_layout!r}: the fan-out (plan, folder items) needs "
        "STATE_LAYOUT=folders, so that parallel children write separate state shards"
    )


def event_items(event: Mapping[str, Any], problems: list[str]) -> list[Job]:
    """The items an items event names: ``{"Items": [item, …]}`` or one item, each
    ``{"folder": F}`` (a whole folder) or, for one range of a split folder, with its
    bounds ``"after"`` and ``"until"`` (keys, or null: unbounded), as :func:`run_plan`
    writes them. Names are taken exactly (a comma or a space is part of a name); any
    other item is a problem."""
    if "Items" in event:
        items = event["Items"]
        if not isinstance(items, list) or not items:
            problems.append(
                f"event field Items = {_shown(items)}: expected a non-empty list of "
                '{"folder": <name>} items'
            )
            return []
    else:
        items = [event]
    jobs: list[Job] = []
    for index, item in enumerate(items):
        job = _item(item)
        if job is None:
            where = f"Items[{index}]" if "Items" in event else "folder"
            shown = item if "Items" in event else event.get("folder")
            problems.append(
                f"event field {where} = {_shown(shown)}: expected "
                '{"folder": <a folder name: not empty, no "/">} and, for a range, '
                '"after" and "until" (keys or null, after < until)'
            )
            continue
        jobs.append(job)
    return sorted(set(jobs), key=lambda j: (j.folder or "", j.start_after or ""))


def _item(item: Any) -> Job | None:
    if not isinstance(item, dict):
        return None
    folder, after, until = item.get("folder"), item.get("after"), item.get("until")
    if not isinstance(folder, str) or not folder or "/" in folder:
        return None
    if any(b is not None and not isinstance(b, str) for b in (after, until)):
        return None
    if after is not None and until is not None and until <= after:
        return None
    return Job(folder, after, until)


def event_options(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """Where an items event carries run options such as ``dry_run``: the execution's
    input reaches a batch as ``BatchInput`` (set by ``ItemBatcher``), a single item
    carries them itself."""
    batch_input = event.get("BatchInput")
    if "Items" in event and isinstance(batch_input, dict):
        return batch_input
    return event


def plan_body(items: Sequence[Job]) -> bytes:
    """The plan object: a JSON array of items (:func:`~.stages.runs.item_of`), in the
    given order."""
    return json.dumps([item_of(job) for job in items], ensure_ascii=False).encode("utf-8")


def folder_of(common_prefix: str, prefix: str) -> str | None:
    """The folder a ``CommonPrefixes`` entry of ``prefix`` names (None for ``P/``)."""
    name = common_prefix[len(prefix) :]
    name = name[:-1] if name.endswith("/") else name
    return name if name and "/" not in name else None


async def list_folders(lister: S3Lister, config: Config) -> list[str]:
    """The folders of the prefix in listing order, skipped folders left out (one
    ``Delimiter`` listing; raises ``ListingError``)."""
    folders: list[str] = []
    async for page in lister.pages(config.prefix, delimiter=True):
        for cp in page.common_prefixes:
            name = folder_of(cp, config.prefix)
            if name is not None and name not in config.skip_folders:
                folders.append(name)
    return folders


async def run_plan(config: Config) -> dict[str, Any]:
    """The plan step: list the folders, write the plan object, return where it is.

    ``{"statusCode": 200, "folders": N, "bucket": …, "key": …}`` (plus ``prefix``,
    ``execution_time_seconds`` and ``api_calls``); a failure returns statusCode 500 and
    ``error``, and writes nothing.
    """
    started = time.perf_counter()
    now = datetime.now(UTC)
    calls: Counter[str] = Counter()
    key = runs_key(config.state_prefix, config.prefix, PLAN_NAME)
    result: dict[str, Any] = {"statusCode": OK, "folders": 0}
    try:
        async with open_clients(config, calls) as clients:
            lister = S3Lister(clients.s3, config.source_bucket, page_size=config.list_page_size)
            folders = await list_folders(lister, config)
            objects = S3StateObjects.of(clients.s3, config)
            first = await fix_first_run(config, objects, now)
            items = await plan_items(config, objects, folders, now)
            await put_json(
                clients.s3,
                config.state_bucket,
                key,
                plan_body(items),
                role=config.state_bucket_role,
            )
        result["folders"] = len(folders)
        result["items"] = len(items)
        if first is not None:
            result["initial_scan"] = first
    except DiscoveryError as exc:
        result = {"statusCode": FAILED, "folders": 0, "error": str(exc)}
    except Exception as exc:
        error = unexpected_error(exc)
        log.exception("plan failed unexpectedly", extra={"event": "plan_crash", "error": error})
        result = {"statusCode": FAILED, "folders": 0, "error": error}
    result.update(
        bucket=config.state_bucket,
        key=key,
        prefix=config.prefix,
        execution_time_seconds=round(time.perf_counter() - started, 3),
        api_calls=dict(sorted(calls.items())),
    )
    log.info("plan written", extra={"event": "plan_summary", **result})
    return result


async def plan_items(
    config: Config, objects: S3StateObjects, folders: Sequence[str], now: datetime
) -> list[Job]:
    """The plan's items: one per folder, and one per range of a split folder (which
    folders are split is seen in one listing of the shards prefix: their
    ``<F>.ranges/``; only their indexes are read)."""
    head = shards_prefix(config.state_prefix, config.prefix)
    stems = {p[len(head) : -len(".ranges/")] for p in await objects.prefixes(head)}
    stems.discard("")
    stats = RunStats()
    shards = Shards(RunContext(config, stats, Tally(stats), Deadline(), lambda: now), objects)
    items: list[Job] = []
    for folder in folders:
        split = folder in stems or shard_name(folder) in stems
        index = (await shards.folders.read_folder(folder)).index if split else None
        if index is None:
            items.append(Job(folder))
        else:
            items.extend(Job(folder, s.after, s.until) for s, _ in index.spans())
    return items


async def fix_first_run(config: Config, objects: S3StateObjects, now: datetime) -> str | None:
    """Fix ``INITIAL_SCAN`` for the prefix before any child runs, as its first run
    would (SPEC: "fixed by the prefix's first run or plan"): with no shard of the
    prefix yet, ``<state prefix>runs/<P>initial.json`` records ``since:<T>`` (for
    ``mark-existing``, T is the plan's start), so every child of this first fan-out
    marks the same files. Returns the policy in force (``since:<T>``), or None for
    ``all`` or when shards exist without one."""
    stats = RunStats()
    ctx = RunContext(config, stats, Tally(stats), Deadline(), lambda: now)
    first = await RunObjects(ctx, objects).first_run(now)
    return None if first is None else "since:" + iso_utc(first.mark_before)


def sum_summaries(children: Any) -> dict[str, Any]:
    """One summary from the children's (the Distributed Map's output, in any order).

    Counters and ``api_calls`` are added up; ``truncated`` and ``dry_run`` are true when
    any child's is; ``execution_time_seconds`` is the children's total (the Lambda
    compute time), ``slowest_child_seconds`` the longest one. ``statusCode`` is 200 when
    every child returned 200, else 207 (a child that returned 207 or 500, or an entry
    that is no summary, such as the error record of a failed iteration), with ``error``
    quoting the first few children's errors. A Lambda ``invoke`` result
    (``{"Payload": <summary>, …}``) counts as its payload, and a ResultWriter execution
    record (``{"Status": …, "Output": "<summary>", …}``) as its output. Not a list: 500.
    """
    if not isinstance(children, list):
        return _sum_error(
            f"event field summaries = {_shown(children)}: expected the list of the "
            "children's summaries (the Distributed Map's output)"
        )
    total = _Total()
    for index, child in enumerate(children):
        total.add(child, f"child {index}")
    return total.summary()


async def sum_results(config: Config, results: Any, items: Any = None) -> dict[str, Any]:
    """The sum of a map run from its ``ResultWriter`` output in S3: ``results`` is the
    Map's ``ResultWriterDetails`` (``{"Bucket": …, "Key": <…/manifest.json>}``).

    The manifest lists the result files by child status (``SUCCEEDED``, ``FAILED``,
    ``PENDING``); each file is a JSON array (or JSON lines) of child execution records
    whose ``Output`` is the child's summary. A child that did not succeed counts as
    failed, with its ``Error`` and ``Cause``. ``items`` (the plan's item count): when the
    records' inputs cover fewer items, the missing ones are a failure too, so a result
    lost on the way never passes for a clean run. A manifest or result file that cannot
    be read or parsed: statusCode 500, with ``error`` saying which.
    """
    location = _results_location(results)
    if isinstance(location, str):
        return _sum_error(location)
    if items is not None and (not isinstance(items, int) or isinstance(items, bool) or items < 0):
        return _sum_error(f"event field items = {_shown(items)}: expected a count (integer >= 0)")
    bucket, key = location
    calls: Counter[str] = Counter()
    total = _Total()
    try:
        async with open_clients(config, calls) as clients:
            manifest = _parsed(await get_bytes(clients.s3, bucket, key, RESULT_FILE_MAX_BYTES), key)
            for entry in _result_files(manifest, key):
                body = await get_bytes(clients.s3, bucket, entry, RESULT_FILE_MAX_BYTES)
                for record in _records(body, entry):
                    total.add(record, f"child ({_items_named(record)})")
    except DiscoveryError as exc:
        return _sum_error(str(exc))
    except Exception as exc:
        error = unexpected_error(exc)
        log.exception("sum failed unexpectedly", extra={"event": "sum_crash", "error": error})
        return _sum_error(error)
    summary = total.summary(items=items)
    summary["results"] = {"bucket": bucket, "key": key}
    summary["sum_api_calls"] = dict(sorted(calls.items()))
    return summary


def failure_summary(failure: Any, items: Any = None) -> dict[str, Any]:
    """The record of a fan-out whose Map failed (the state machine's ``Catch``): a 500
    summary whose ``error`` carries the ``Error`` and ``Cause`` Step Functions gave."""
    error = cause = None
    if isinstance(failure, dict):
        error, cause = failure.get("Error"), failure.get("Cause")
    text = f"{error or 'unknown error'}: {cause or 'no cause given'}"
    summary = build_summary(RunStats(), 0.0, error=f"fan-out failed: {_clipped(str(text), 1000)}")
    summary.update(children=0, failed_children=0)
    if isinstance(items, int) and not isinstance(items, bool):
        summary["items"] = items
    return summary


class _Total:
    """The running sum of children's summaries (see :func:`sum_summaries`)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.calls: Counter[str] = Counter()
        self.seconds = self.slowest = 0.0
        self.truncated = self.dry_run = False
        self.children = 0
        self.items = 0
        self.failed: list[str] = []

    def add(self, child: Any, name: str) -> None:
        """Add one child: a summary, a Lambda invoke result or an execution record."""
        self.children += 1
        self.items += _item_count(child)
        summary, problem = _child_summary(child)
        if summary is None:
            self.failed.append(f"{name}: {problem}")
            return
        for counter in COUNTERS:
            self.counts[counter] += _count(summary.get(counter))
        seconds = _seconds(summary.get("execution_time_seconds"))
        self.seconds += seconds
        self.slowest = max(self.slowest, seconds)
        api_calls = summary.get("api_calls")
        if isinstance(api_calls, dict):
            self.calls.update({str(k): _count(v) for k, v in api_calls.items()})
        self.truncated = self.truncated or summary.get("truncated") is True
        self.dry_run = self.dry_run or summary.get("dry_run") is True
        status = summary.get("statusCode")
        if status != OK:
            error = summary.get("error") or "some files or folders failed"
            self.failed.append(f"{name}: statusCode {status}: {error}")

    def summary(self, items: int | None = None) -> dict[str, Any]:
        """The sum; with ``items``, planned items no record covers are a failure too."""
        failed = list(self.failed)
        if items is not None and self.items < items:
            failed.append(
                f"{items - self.items} of {items} planned items have no child result "
                "(not run, or lost before the sum)"
            )
        total: dict[str, Any] = {"statusCode": OK}
        total.update({name: self.counts[name] for name in COUNTERS[:3]})
        total["execution_time_seconds"] = round(self.seconds, 3)
        total.update({name: self.counts[name] for name in COUNTERS[3:]})
        total.update(
            truncated=self.truncated,
            dry_run=self.dry_run,
            api_calls=dict(sorted(self.calls.items())),
            children=self.children,
            failed_children=len(self.failed),
            slowest_child_seconds=round(self.slowest, 3),
        )
        if items is not None:
            total["items"] = items
        if failed:
            total["statusCode"] = PARTIAL
            parts = failed[len(self.failed) :]
            if self.failed:
                more = len(self.failed) - _SHOWN_ERRORS
                shown = "; ".join(self.failed[:_SHOWN_ERRORS])
                shown += f"; and {more} more" if more > 0 else ""
                parts.insert(
                    0, f"{len(self.failed)} of {self.children} children did not return 200: {shown}"
                )
            total["error"] = "; ".join(parts)
        return total


def _sum_error(error: str) -> dict[str, Any]:
    return build_summary(RunStats(), 0.0, error=error)


def _child_summary(child: Any) -> tuple[Mapping[str, Any] | None, str]:
    """A child's summary, or None and why there is none."""
    if isinstance(child, dict) and "ExecutionArn" in child and "Status" in child:
        status = child.get("Status")
        if status != "SUCCEEDED":
            detail = ": ".join(str(child[k]) for k in ("Error", "Cause") if child.get(k))
            return None, f"execution {status}" + (f" ({_clipped(detail, 300)})" if detail else "")
        output = child.get("Output")
        try:
            child = json.loads(output) if isinstance(output, str) else None
        except ValueError:
            child = None
        if child is None:
            return None, "execution SUCCEEDED but its output is not in the results"
    if isinstance(child, dict) and "statusCode" not in child and "Payload" in child:
        child = child["Payload"]
    if isinstance(child, dict) and isinstance(child.get("statusCode"), int):
        return child, ""
    return None, f"not a summary: {_shown(child)}"


def _input_of(child: Any) -> Any:
    """The input of an execution record (a JSON string), or None."""
    if not isinstance(child, dict) or not isinstance(child.get("Input"), str):
        return None
    try:
        return json.loads(child["Input"])
    except ValueError:
        return None


def _item_count(child: Any) -> int:
    """The plan items an execution record's input held: a batch's ``Items``, or one."""
    given = _input_of(child)
    if isinstance(given, dict) and isinstance(given.get("Items"), list):
        return len(given["Items"])
    return 1 if isinstance(given, dict) else 0


def _items_named(child: Any) -> str:
    """The folders an execution record's input named, for an error message."""
    given = _input_of(child)
    items = given.get("Items") if isinstance(given, dict) else None
    items = items if isinstance(items, list) else [given]
    names = [str(i["folder"]) for i in items if isinstance(i, dict) and "folder" in i]
    if not names:
        return str(child.get("Name", "?")) if isinstance(child, dict) else "?"
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return "folders " + ", ".join(names[:3]) + more


def _results_location(results: Any) -> tuple[str, str] | str:
    """(bucket, key) of a ``ResultWriterDetails``, or the problem with it."""
    if isinstance(results, dict):
        bucket, key = results.get("Bucket"), results.get("Key")
        if isinstance(bucket, str) and bucket and isinstance(key, str) and key:
            return bucket, key
    return (
        f"event field results = {_shown(results)}: expected the Map's ResultWriterDetails, "
        '{"Bucket": <bucket>, "Key": <manifest key>}'
    )


def _parsed(body: bytes, key: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise DiscoveryError(f"results manifest {key} is not JSON: {exc}") from exc


def _result_files(manifest: Any, key: str) -> list[str]:
    """The key of every result file a manifest lists (``SUCCEEDED``, ``FAILED`` and
    ``PENDING``: each record says its own status)."""
    files = manifest.get("ResultFiles") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise DiscoveryError(f"results manifest {key}: no ResultFiles object")
    found: list[str] = []
    for status, entries in sorted(files.items()):
        for entry in entries if isinstance(entries, list) else [entries]:
            name = entry.get("Key") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                raise DiscoveryError(f"results manifest {key}: {status} entry without a Key")
            found.append(name)
    return found


def _records(body: bytes, key: str) -> list[Any]:
    """The execution records of a result file: a JSON array, or JSON lines."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        if text.startswith("["):
            records = json.loads(text)
            return records if isinstance(records, list) else [records]
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise DiscoveryError(f"result file {key} is not JSON: {exc}") from exc


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _seconds(value: Any) -> float:
    # NaN and Infinity (which Python's json reads) count as no time, as a non-number does.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    seconds = float(value)
    return seconds if math.isfinite(seconds) else 0.0


def _clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (RecursionError, ValueError):  # nested too deep, or an int too long to print
        text = reprlib.repr(value)
    return text if len(text) <= 80 else text[:60] + "..."
