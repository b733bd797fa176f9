"""AWS Lambda entry point: ``async_discovery.handler.lambda_handler(event, context)``.

Nothing is created at import time: every invocation builds its config, opens its
clients inside its own ``anyio.run`` event loop and closes them before returning.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from .config import Config
from .deadline import Deadline
from .errors import ConfigError
from .fanout import (
    action_problem,
    event_folders,
    event_kind,
    event_options,
    layout_problem,
    run_plan,
    sum_summaries,
)
from .logs import configure_logging
from .notifications import failures_response, sqs_records
from .runner import config_error_summary, record_ids, run_events, run_scan

log = logging.getLogger("async_discovery")


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Run one scan and return the summary dict (SPEC "Summary").

    ``event`` may carry ``{"dry_run": true}`` (a JSON boolean; any other value is a
    configuration error); anything else in it is ignored (a scheduled EventBridge
    event), except ``action`` (``doctor``: docs/doctor.md; ``plan`` and ``sum``) and the
    fan-out's folder items (``{"Items": [{"folder": F}, …]}`` or ``{"folder": F}``: a
    scan of exactly those folders), see :mod:`async_discovery.fanout`. An SQS event
    (``Records`` from ``aws:sqs``: S3 notifications) is a batch of events and returns
    the partial batch response instead (:func:`handle_events`). The deadline
    comes from ``context.get_remaining_time_in_millis()`` minus
    ``DEADLINE_MARGIN_SECONDS``.
    """
    # INFO until LOG_LEVEL is validated with the rest, so a bad value can be logged.
    configure_logging("INFO")
    if isinstance(event, dict) and event.get("action") == "doctor":
        from .doctor import run_lambda  # docs/doctor.md

        return run_lambda(os.environ, event)
    records = sqs_records(event)
    if records is not None:
        return handle_events(records, context)
    kind = event_kind(event)
    if kind == "sum":
        return sum_summaries(event.get("summaries"))
    problems: list[str] = []
    action = action_problem(event)
    if action is not None:
        problems.append(action)
    folders: frozenset[str] | None = None
    options = event
    if kind == "items":
        folders = event_folders(event, problems)
        options = event_options(event)
    dry_run = event_dry_run(options, problems)
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
        return config_error_summary(error)
    configure_logging(config.log_level)
    if kind == "plan":
        return anyio.run(run_plan, config)
    if folders is not None:
        # Replaced, not parsed from text: a folder name may hold a comma.
        config = dataclasses.replace(config, folders=folders)
    deadline = _deadline(context, config)
    return anyio.run(functools.partial(run_scan, config, deadline=deadline))


def handle_events(records: Sequence[Mapping[str, Any]], context: Any) -> dict[str, Any]:
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
        return failures_response(record_ids(records))
    configure_logging(config.log_level)
    deadline = _deadline(context, config)
    failed, _ = anyio.run(functools.partial(run_events, config, records, deadline=deadline))
    return failures_response(failed)


def _deadline(context: Any, config: Config) -> Deadline | None:
    """The invocation's deadline: the remaining time minus ``DEADLINE_MARGIN_SECONDS``."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    return Deadline(lambda: float(remaining()) / 1000.0, margin=config.deadline_margin_seconds)


def event_dry_run(event: Any, problems: list[str]) -> bool | None:
    """The event's ``dry_run``: a JSON boolean, or None when absent (or the event is not
    an object). Any other value (``"false"`` is truthy to Python) is appended to
    ``problems`` rather than guessed at."""
    if not isinstance(event, dict) or event.get("dry_run") is None:
        return None
    value = event["dry_run"]
    if isinstance(value, bool):
        return value
    shown = repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:60]}..."
    problems.append(f"event field dry_run = {shown}: not a JSON boolean; expected true or false")
    return None
