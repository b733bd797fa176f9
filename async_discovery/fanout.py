"""Fan-out on AWS Step Functions Distributed Map (SPEC "Fan-out on AWS Step Functions
Distributed Map"): the plan, the children's events and the sum of their summaries.

One Lambda function serves every step of ``deploy/statemachine/fanout.asl.json``:

- ``{"action": "plan"}`` (:func:`run_plan`): one ``Delimiter`` listing of the prefix
  finds its folders (skipped folders left out); they are written, in listing order, as
  a JSON array of ``{"folder": F}`` items to ``<state prefix>runs/<P>plan.json`` in the
  state bucket, the Distributed Map's ``ItemReader`` source. A first plan of the prefix
  also fixes ``INITIAL_SCAN`` (:func:`fix_first_run`), so the children agree on it.
- ``{"Items": [{"folder": F}, …], "BatchInput": {…}}`` (what ``ItemBatcher`` passes) or
  one item ``{"folder": F}`` (:func:`event_folders`): a scan of exactly those folders.
- ``{"action": "sum", "summaries": [...]}`` (:func:`sum_summaries`): the Map's output,
  one summary per child, summed into the execution's summary.

All three need ``STATE_LAYOUT=folders`` (each folder's state is its own shard, so
children never write the same object); under ``single`` they return a 500 summary
naming ``STATE_LAYOUT`` (:func:`layout_problem`).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from .aws import S3Lister, S3StateObjects, open_clients
from .aws.objects import put_json
from .config import Config
from .deadline import Deadline
from .errors import DiscoveryError
from .layout import runs_key
from .messages import iso_utc
from .runner import unexpected_error
from .stages.context import RunContext
from .stages.decide import Tally
from .stages.shards import Shards
from .summary import FAILED, OK, PARTIAL, RunStats, build_summary

log = logging.getLogger("async_discovery")

PLAN_NAME = "plan.json"
EventKind = Literal["plan", "items", "sum"]

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
    if "Items" in event or "folder" in event:
        return "items"
    return None


def action_problem(event: Any) -> str | None:
    """The problem with an event's ``action`` that names no step (a typo must not run
    a whole scan instead), or None."""
    if not isinstance(event, dict) or "action" not in event:
        return None
    action = event["action"]
    if action in ("plan", "sum", "doctor"):
        return None
    return f"event field action = {_shown(action)}: unknown; expected plan, sum or doctor"


def layout_problem(config: Config) -> str | None:
    """Why the fan-out steps cannot run under this config (None when they can)."""
    if config.state_layout == "folders":
        return None
    return (
        f"STATE_LAYOUT = {config.state_layout!r}: the fan-out (plan, folder items) needs "
        "STATE_LAYOUT=folders, so that parallel children write separate state shards"
    )


def event_folders(event: Mapping[str, Any], problems: list[str]) -> frozenset[str]:
    """The folders an items event names: ``{"Items": [{"folder": F}, …]}`` or
    ``{"folder": F}``. Names are taken exactly (a comma or a space is part of a name);
    an item that is not ``{"folder": <non-empty name without '/'>}`` is a problem."""
    if "Items" in event:
        items = event["Items"]
        if not isinstance(items, list) or not items:
            problems.append(
                f"event field Items = {_shown(items)}: expected a non-empty list of "
                '{"folder": <name>} items'
            )
            return frozenset()
    else:
        items = [event]
    names: list[str] = []
    for index, item in enumerate(items):
        folder = item.get("folder") if isinstance(item, dict) else None
        if not isinstance(folder, str) or not folder or "/" in folder:
            where = f"Items[{index}]" if "Items" in event else "folder"
            shown = item if "Items" in event else folder
            problems.append(
                f"event field {where} = {_shown(shown)}: expected "
                '{"folder": <a folder name: not empty, no "/">}'
            )
            continue
        names.append(folder)
    return frozenset(names)


def event_options(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """Where an items event carries run options such as ``dry_run``: the execution's
    input reaches a batch as ``BatchInput`` (set by ``ItemBatcher``), a single item
    carries them itself."""
    batch_input = event.get("BatchInput")
    if "Items" in event and isinstance(batch_input, dict):
        return batch_input
    return event


def plan_body(folders: Sequence[str]) -> bytes:
    """The plan object: a JSON array of ``{"folder": F}`` items, in the given order."""
    return json.dumps([{"folder": f} for f in folders], ensure_ascii=False).encode("utf-8")


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
            objects = S3StateObjects(clients.s3, config.state_bucket, config.state_max_bytes)
            first = await fix_first_run(config, objects, now)
            await put_json(clients.s3, config.state_bucket, key, plan_body(folders))
        result["folders"] = len(folders)
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


async def fix_first_run(config: Config, objects: S3StateObjects, now: datetime) -> str | None:
    """Fix ``INITIAL_SCAN`` for the prefix before any child runs, as its first run
    would (SPEC: "fixed by the prefix's first run or plan"): with no shard of the
    prefix yet, ``<state prefix>runs/<P>initial.json`` records ``since:<T>`` (for
    ``mark-existing``, T is the plan's start), so every child of this first fan-out
    marks the same files. Returns the policy in force (``since:<T>``), or None for
    ``all`` or when shards exist without one."""
    stats = RunStats()
    ctx = RunContext(config, stats, Tally(stats), Deadline(), lambda: now)
    first = await Shards(ctx, objects).first_run(now)
    return None if first is None else "since:" + iso_utc(first.mark_before)


def sum_summaries(children: Any) -> dict[str, Any]:
    """One summary from the children's (the Distributed Map's output, in any order).

    Counters and ``api_calls`` are added up; ``truncated`` and ``dry_run`` are true when
    any child's is; ``execution_time_seconds`` is the children's total (the Lambda
    compute time), ``slowest_child_seconds`` the longest one. ``statusCode`` is 200 when
    every child returned 200, else 207 (a child that returned 207 or 500, or an entry
    that is no summary, such as the error record of a failed iteration), with ``error``
    quoting the first few children's errors. A Lambda ``invoke`` result
    (``{"Payload": <summary>, …}``) counts as its payload. Not a list: 500.
    """
    if not isinstance(children, list):
        stats = RunStats()
        return build_summary(
            stats,
            0.0,
            error=f"event field summaries = {_shown(children)}: expected the list of the "
            "children's summaries (the Distributed Map's output)",
        )
    total: dict[str, Any] = {"statusCode": OK, **dict.fromkeys(COUNTERS[:3], 0)}
    total["execution_time_seconds"] = 0.0
    total.update(dict.fromkeys(COUNTERS[3:], 0))
    calls: Counter[str] = Counter()
    truncated = dry_run = False
    slowest = 0.0
    failed: list[str] = []
    for index, child in enumerate(children):
        summary = _unwrap(child)
        if summary is None:
            failed.append(f"child {index}: not a summary: {_shown(child)}")
            continue
        for name in COUNTERS:
            total[name] += _count(summary.get(name))
        seconds = _seconds(summary.get("execution_time_seconds"))
        total["execution_time_seconds"] += seconds
        slowest = max(slowest, seconds)
        api_calls = summary.get("api_calls")
        if isinstance(api_calls, dict):
            calls.update({str(k): _count(v) for k, v in api_calls.items()})
        truncated = truncated or summary.get("truncated") is True
        dry_run = dry_run or summary.get("dry_run") is True
        status = summary.get("statusCode")
        if status != OK:
            error = summary.get("error") or "some files or folders failed"
            failed.append(f"child {index}: statusCode {status}: {error}")
    total["execution_time_seconds"] = round(total["execution_time_seconds"], 3)
    total.update(
        truncated=truncated,
        dry_run=dry_run,
        api_calls=dict(sorted(calls.items())),
        children=len(children),
        failed_children=len(failed),
        slowest_child_seconds=round(slowest, 3),
    )
    if failed:
        total["statusCode"] = PARTIAL
        more = len(failed) - _SHOWN_ERRORS
        shown = "; ".join(failed[:_SHOWN_ERRORS]) + (f"; and {more} more" if more > 0 else "")
        total["error"] = f"{len(failed)} of {len(children)} children did not return 200: {shown}"
    return total


def _unwrap(child: Any) -> Mapping[str, Any] | None:
    """A child's summary: itself, or the ``Payload`` of a Lambda invoke result."""
    if isinstance(child, dict) and "statusCode" not in child and "Payload" in child:
        child = child["Payload"]
    if isinstance(child, dict) and isinstance(child.get("statusCode"), int):
        return child
    return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 80 else text[:60] + "..."
