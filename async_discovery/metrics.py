"""CloudWatch Embedded Metric Format records (SPEC "Observability").

One record per invocation: a run (:func:`emf_record`: a scan, or a fan-out child), a
fan-out execution's sum (:func:`fanout_emf_record`), a step that did not get as far as
a run (:func:`failure_emf_record`: a configuration error, a failed plan, the record of a
failed Map), and an events batch (:func:`events_emf_record`, SPEC "Events"). A run that
returns statusCode 500 is a normal return to Lambda (its ``Errors`` metric stays 0), so
the record carries what an alarm needs as metrics: ``failed_runs`` (1 for a 500),
``partial_runs`` (1 for a 207), ``truncated`` (1 when the deadline cut the run short) and
``folder_errors``. ``deploy/template.yaml`` alarms on them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .summary import FAILED, PARTIAL, EventStats, RunStats

NAMESPACE = "AsyncDiscovery"
SERVICE = "async-discovery"
_COUNTS = (
    "listed",
    "candidates",
    "queued",
    "skipped",
    "errors",
    "deferred",
    "pruned",
    "found_by_reconciliation",
    "held_back",
    "folder_errors",
    "state_objects_read",
    "state_objects_written",
    "state_objects_verified",
)
_UNITS = {"duration": "Milliseconds", "state_bytes": "Bytes"}


def outcome_metrics(status: int, truncated: bool) -> dict[str, float]:
    """What an alarm reads: a failed run (500), a partial one (207), a truncated one."""
    return {
        "failed_runs": float(status == FAILED),
        "partial_runs": float(status == PARTIAL),
        "truncated": float(bool(truncated)),
    }


def emf_record(
    stats: RunStats, seconds: float, *, status: int, service: str = SERVICE
) -> dict[str, Any]:
    """The run's EMF document: counters, ignored total, outcome, API calls by operation,
    duration. ``statusCode`` also stays a property, for Logs Insights."""
    values: dict[str, float] = {name: float(getattr(stats, name)) for name in _COUNTS}
    values["ignored"] = float(sum(stats.ignored.values()))
    values.update(outcome_metrics(status, stats.truncated))
    values["duration"] = round(seconds * 1000.0, 3)
    values["state_bytes"] = float(stats.state_bytes)
    for op, n in sorted(stats.api_calls.items()):
        values[f"api_calls.{op}"] = float(n)
    return _document(values, service, {"statusCode": status})


def fanout_emf_record(summary: Mapping[str, Any], *, service: str = SERVICE) -> dict[str, Any]:
    """A fan-out execution's EMF document, from its sum: ``failed_runs`` (1 when the sum
    itself failed: statusCode 500), ``fanout.truncated`` (1 when any child was cut short:
    the pass did not finish in this execution), ``fanout.children`` and
    ``fanout.failed_children``. The children's own records carry the file counts, so
    none are repeated here."""
    status = int(summary.get("statusCode", FAILED))
    values = {
        "failed_runs": float(status == FAILED),
        "fanout.truncated": float(summary.get("truncated") is True),
        "fanout.children": float(_number(summary.get("children"))),
        "fanout.failed_children": float(_number(summary.get("failed_children"))),
    }
    return _document(values, service, {"statusCode": status, "step": "sum"})


def failure_emf_record(step: str, *, service: str = SERVICE) -> dict[str, Any]:
    """``failed_runs`` = 1 for an invocation that failed before any run: ``step`` is
    ``config`` (a configuration error), ``plan`` or ``fanout`` (the Map failed). Only
    that metric: a ``truncated`` of 0 here would read as a finished pass."""
    return _document({"failed_runs": 1.0}, service, {"statusCode": FAILED, "step": step})


def _document(values: dict[str, float], service: str, properties: dict[str, Any]) -> dict[str, Any]:
    metrics = [{"Name": name, "Unit": _UNITS.get(name, "Count")} for name in values]
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {"Namespace": NAMESPACE, "Dimensions": [["Service"]], "Metrics": metrics}
            ],
        },
        "Service": service,
        **properties,
        **values,
    }


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


EVENTS_PATH = "events"
_EVENT_COUNTS = ("records", "failed_records", "deleted", "superseded", "state_units")


def events_emf_record(
    stats: RunStats,
    events: EventStats,
    seconds: float,
    *,
    status: int,
    service: str = SERVICE,
) -> dict[str, Any]:
    """The EMF document of one events batch: the run's counters plus records, failed
    records, deleted and superseded candidates, state units and the lag from event
    time to send (p50, max). Published under ``Service`` (summed with the scans) and
    under ``Service`` + ``Path=events`` (the event path alone)."""
    doc = emf_record(stats, seconds, status=status, service=service)
    directive = doc["_aws"]["CloudWatchMetrics"][0]
    directive["Dimensions"] = [["Service"], ["Service", "Path"]]
    doc["Path"] = EVENTS_PATH
    added: dict[str, tuple[float, str]] = {
        name: (float(getattr(events, name)), "Count") for name in _EVENT_COUNTS
    }
    p50, worst = events.lag()
    if p50 is not None and worst is not None:
        added["lag_p50"] = (p50 * 1000.0, "Milliseconds")
        added["lag_max"] = (worst * 1000.0, "Milliseconds")
    for name, (value, unit) in added.items():
        doc[name] = value
        directive["Metrics"].append({"Name": name, "Unit": unit})
    return doc
