"""One CloudWatch Embedded Metric Format record per run (SPEC "Observability"), and
one per events batch (SPEC "Events")."""

from __future__ import annotations

import time
from typing import Any

from .summary import EventStats, RunStats

NAMESPACE = "AsyncDiscovery"
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
    "state_objects_read",
    "state_objects_written",
    "state_objects_verified",
)


def emf_record(
    stats: RunStats, seconds: float, *, status: int, service: str = "async-discovery"
) -> dict[str, Any]:
    """The EMF document: counters, ignored total, API calls by operation, duration."""
    values: dict[str, float] = {name: float(getattr(stats, name)) for name in _COUNTS}
    values["ignored"] = float(sum(stats.ignored.values()))
    values["duration"] = round(seconds * 1000.0, 3)
    values["state_bytes"] = float(stats.state_bytes)
    units = {"duration": "Milliseconds", "state_bytes": "Bytes"}
    metrics: list[dict[str, str]] = [
        {"Name": name, "Unit": units.get(name, "Count")} for name in values
    ]
    for op, n in sorted(stats.api_calls.items()):
        name = f"api_calls.{op}"
        values[name] = float(n)
        metrics.append({"Name": name, "Unit": "Count"})
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {"Namespace": NAMESPACE, "Dimensions": [["Service"]], "Metrics": metrics}
            ],
        },
        "Service": service,
        "statusCode": status,
        "truncated": stats.truncated,
        **values,
    }


EVENTS_PATH = "events"
_EVENT_COUNTS = ("records", "failed_records", "deleted", "superseded", "state_units")


def events_emf_record(
    stats: RunStats,
    events: EventStats,
    seconds: float,
    *,
    status: int,
    service: str = "async-discovery",
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
