"""AWS Lambda entry point: ``async_discovery.handler.lambda_handler(event, context)``.

Nothing is created at import time: every invocation builds its config, opens its
clients inside its own ``anyio.run`` event loop and closes them before returning.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from .config import Config, event_switch
from .deadline import Deadline
from .errors import ConfigError
from .fanout import (
    action_problem,
    event_items,
    event_kind,
    event_options,
    failure_summary,
    layout_problem,
    run_plan,
    sum_results,
    sum_summaries,
)
from .logs import configure_logging, emit_line
from .metrics import SERVICE, failure_emf_record, fanout_emf_record
from .notifications import failures_response, sqs_records
from .runner import config_error_summary, record_ids, run_events, run_scan
from .stages.plan import Job

log = logging.getLogger("async_discovery")


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Run one scan and return the summary dict (SPEC "Summary").

    ``event`` may carry ``{"dry_run": true}`` (a JSON boolean; any other value is a
    configuration error); anything else in it is ignored (a scheduled EventBridge
    event), except ``action`` (``doctor``: docs/doctor.md; ``plan``, ``sum`` and
    ``failed``) and the fan-out's items (``{"Items": [{"folder": F}, …]}`` or one item,
    a folder or a key range of a split folder: a scan of exactly those), see
    :mod:`async_discovery.fanout`. An SQS event (``Records`` from ``aws:sqs``: S3
    notifications) is a batch of events and returns the partial batch response instead
    (:func:`handle_events`). The deadline comes from
    ``context.get_remaining_time_in_millis()`` minus ``DEADLINE_MARGIN_SECONDS``.

    Every run writes one EMF record (``failed_runs``, ``truncated``, ... for alarms),
    and so do a fan-out's sum and its failure record (:mod:`async_discovery.metrics`),
    with the function's name as their ``Service``.
    """
    # INFO until LOG_LEVEL is validated with the rest, so a bad value can be logged.
    configure_logging("INFO")
    if isinstance(event, dict) and event.get("action") == "doctor":
        from .doctor import run_lambda  # docs/doctor.md

        return run_lambda(os.environ, event)
    service = os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or SERVICE
    records = sqs_records(event)
    if records is not None:
        return handle_events(records, context, service)
    kind = event_kind(event)
    if kind == "failed":
        failed = failure_summary(event.get("failure"), event.get("items"))
        log.error("fan-out failed", extra={"event": "fanout_failed", **failed})
        emit_line(failure_emf_record("fanout", service=service))
        return failed
    if kind == "sum" and "results" not in event:
        return _summed(sum_summaries(event.get("summaries")), service)
    problems: list[str] = []
    action = action_problem(event)
    if action is not None:
        problems.append(action)
    items: list[Job] | None = None
    options = event
    if kind == "items":
        items = event_items(event, problems)
        options = event_options(event)
    dry_run = event_switch(options, "dry_run", problems)
    config: Config | None = None
    try:
        config = Config.from_env(os.environ, dry_run=dry_run or None)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if config is not None and kind is not None:
        layout = layout_problem(config)
        if layout is not None:
            problems.append(layout)
    if problems or config is None:
        error = ConfigError(problems)
        log.error("invalid configuration", extra={"event": "config_error", "problems": problems})
        emit_line(failure_emf_record("config", service=service))
        return config_error_summary(error)
    configure_logging(config.log_level)
    if kind == "plan":
        planned = anyio.run(run_plan, config)
        if planned["statusCode"] != 200:
            emit_line(failure_emf_record("plan", service=service))
        return planned
    if kind == "sum":
        summed = anyio.run(sum_results, config, event["results"], event.get("items"))
        return _summed(summed, service)
    deadline = _deadline(context, config)
    return anyio.run(
        functools.partial(run_scan, config, deadline=deadline, service=service, items=items)
    )


def _summed(summary: dict[str, Any], service: str) -> dict[str, Any]:
    """Log a fan-out execution's sum and write its EMF record; return the sum."""
    level = logging.ERROR if summary["statusCode"] == 500 else logging.INFO
    log.log(level, "fan-out summed", extra={"event": "fanout_summary", **summary})
    emit_line(fanout_emf_record(summary, service=service))
    return summary


def handle_events(
    records: Sequence[Mapping[str, Any]], context: Any, service: str
) -> dict[str, Any]:
    """A batch of S3 notifications from the event source mapping: the SQS partial batch
    response, ``{"batchItemFailures": [{"itemIdentifier": <messageId>}, …]}``, listing
    the records to deliver again. A configuration error lists every record (and logs
    why): nothing can be handled, and the records must not be lost."""
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        log.error(
            "invalid configuration: every record of the batch is delivered again",
            extra={"event": "config_error", "problems": exc.problems, "records": len(records)},
        )
        emit_line(failure_emf_record("config", service=service))
        return failures_response(record_ids(records))
    configure_logging(config.log_level)
    deadline = _deadline(context, config)
    failed, _ = anyio.run(
        functools.partial(run_events, config, records, deadline=deadline, service=service)
    )
    return failures_response(failed)


def _deadline(context: Any, config: Config) -> Deadline | None:
    """The invocation's deadline: the remaining time minus ``DEADLINE_MARGIN_SECONDS``."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    return Deadline(lambda: float(remaining()) / 1000.0, margin=config.deadline_margin_seconds)
