"""Structured JSON logs on stderr: one object per line, fields from ``extra=``."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, message, then its extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (``extra=`` fields become top-level keys)."""
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure_logging(level: str | int = "INFO", stream: TextIO | None = None) -> None:
    """Send the package's logs to ``stream`` (stderr) as JSON lines; idempotent."""
    logger = logging.getLogger("async_discovery")
    logger.setLevel(level if isinstance(level, int) else level.upper())
    for handler in list(logger.handlers):
        if getattr(handler, "_async_discovery", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._async_discovery = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


def emit_line(doc: dict[str, Any], stream: TextIO | None = None) -> None:
    """Write one raw JSON line (an EMF record must not be wrapped in a log envelope)."""
    out = stream or sys.stderr
    out.write(json.dumps(doc, default=str, ensure_ascii=False) + "\n")
    out.flush()
