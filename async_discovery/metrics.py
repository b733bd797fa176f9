"""One CloudWatch Embedded Metric Format record per run (SPEC "Observability")."""

from __future__ import annotations

import time
from typing import Any

from .summary import RunStats

NAMESPACE = "AsyncDiscovery"
_COUNTS = (
    "listed",
    "candidates",
    "queued",
    "skipped",
    "errors",
    "deferred",
    "pruned",
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
