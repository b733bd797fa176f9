"""AWS Lambda entry point: ``async_discovery.handler.lambda_handler(event, context)``.

Nothing is created at import time: every invocation builds its config, opens its
clients inside its own ``anyio.run`` event loop and closes them before returning.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any

import anyio

from .config import Config, event_switch
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
from .runner import config_error_summary, run_scan

log = logging.getLogger("async_discovery")


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Run one scan and return the summary dict (SPEC "Summary").

    ``event`` may carry ``{"dry_run": true}`` (a JSON boolean; any other value is a
    configuration error); anything else in it is ignored (a scheduled EventBridge
    event), except ``action`` (``doctor``: docs/doctor.md; ``plan`` and ``sum``) and the
    fan-out's folder items (``{"Items": [{"folder": F}, …]}`` or ``{"folder": F}``: a
    scan of exactly those folders), see :mod:`async_discovery.fanout`. The deadline
    comes from ``context.get_remaining_time_in_millis()`` minus
    ``DEADLINE_MARGIN_SECONDS``.
    """
    # INFO until LOG_LEVEL is validated with the rest, so a bad value can be logged.
    configure_logging("INFO")
    if isinstance(event, dict) and event.get("action") == "doctor":
        from .doctor import run_lambda  # docs/doctor.md

        return run_lambda(os.environ, event)
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
        return config_error_summary(error)
    configure_logging(config.log_level)
    if kind == "plan":
        return anyio.run(run_plan, config)
    if folders is not None:
        # Replaced, not parsed from text: a folder name may hold a comma.
        config = dataclasses.replace(config, folders=folders)
    deadline = None
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        deadline = Deadline(
            lambda: float(remaining()) / 1000.0, margin=config.deadline_margin_seconds
        )
    return anyio.run(functools.partial(run_scan, config, deadline=deadline))
