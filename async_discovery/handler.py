"""AWS Lambda entry point: ``async_discovery.handler.lambda_handler(event, context)``.

Nothing is created at import time: every invocation builds its config, opens its
clients inside its own ``anyio.run`` event loop and closes them before returning.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import anyio

from .config import Config
from .deadline import Deadline
from .errors import ConfigError
from .logs import configure_logging
from .runner import config_error_summary, run_scan


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Run one scan and return the summary dict (SPEC "Summary").

    ``event`` may carry ``{"dry_run": true}``; anything else in it is ignored (a
    scheduled EventBridge event). The deadline comes from
    ``context.get_remaining_time_in_millis()`` minus ``DEADLINE_MARGIN_SECONDS``.
    """
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    dry_run = bool(event.get("dry_run")) if isinstance(event, dict) else False
    try:
        config = Config.from_env(os.environ, dry_run=dry_run or None)
    except ConfigError as exc:
        return config_error_summary(exc)
    deadline = None
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        deadline = Deadline(
            lambda: float(remaining()) / 1000.0, margin=config.deadline_margin_seconds
        )
    return anyio.run(functools.partial(run_scan, config, deadline=deadline))
