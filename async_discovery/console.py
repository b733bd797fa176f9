"""Terminal output for people: the live progress line of ``scan`` and the summary table.

Kept out of :mod:`async_discovery.cli` so the parser stays a parser. Nothing here
decides *whether* to draw: the CLI draws progress only when stderr is a terminal, so
logs redirected to a file or collected by a CI system never contain carriage returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

import anyio

from .cells import cells, ljust, rjust
from .summary import RunStats

# A few redraws a second: smooth enough to read a rate, cheap enough to be free.
REFRESH_SECONDS = 0.2
_CLEAR_LINE = "\r\x1b[K"


def progress_text(stats: RunStats, seconds: float) -> str:
    """One status line: files listed, queued, skipped, errors and the listing rate."""
    rate = stats.listed / seconds if seconds > 0 else 0.0
    parts = [
        f"listed {stats.listed:,}",
        f"queued {stats.queued:,}",
        f"skipped {stats.skipped:,}",
        f"errors {stats.errors + stats.folder_errors:,}",
        f"{rate:,.0f} files/s",
        f"{seconds:.1f}s",
    ]
    return "scan: " + " | ".join(parts)


class ProgressLine:
    """A single redrawn status line on a terminal stream.

    Other output to the same terminal (the JSON logs, the metrics line) goes through
    :meth:`write`, which clears the status line first and redraws it on the next tick,
    so log lines never end up glued to the status text.
    """

    def __init__(
        self,
        stream: TextIO,
        stats: RunStats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.stats = stats
        self.clock = clock
        self.started = clock()
        self._shown = False

    def draw(self) -> None:
        """Redraw the status line in place (no newline)."""
        text = progress_text(self.stats, self.clock() - self.started)
        self.stream.write(_CLEAR_LINE + text)
        self.stream.flush()
        self._shown = True

    def write(self, text: str) -> int:
        """Write ``text`` above the status line (file-like, for log handlers)."""
        if self._shown:
            self.stream.write(_CLEAR_LINE)
            self._shown = False
        written = self.stream.write(text)
        self.stream.flush()
        return written

    def flush(self) -> None:
        """File-like ``flush``."""
        self.stream.flush()

    def isatty(self) -> bool:
        """File-like ``isatty`` (of the underlying stream)."""
        return self.stream.isatty()

    def finish(self) -> None:
        """Draw the final counts and end the line, so the shell prompt starts clean."""
        self.draw()
        self.stream.write("\n")
        self.stream.flush()
        self._shown = False

    async def run(self, interval: float = REFRESH_SECONDS) -> None:
        """Redraw every ``interval`` seconds until cancelled."""
        while True:
            self.draw()
            await anyio.sleep(interval)


# (label, summary key), in display order
_ROWS: tuple[tuple[str, str], ...] = (
    ("status", "statusCode"),
    ("queued", "queued"),
    ("skipped (unchanged)", "skipped"),
    ("errors", "errors"),
    ("listed", "listed"),
    ("candidates", "candidates"),
    ("new", "new"),
    ("updated", "updated"),
    ("ignored", "ignored"),
    ("deferred (too young)", "deferred"),
    ("marked (not sent)", "marked"),
    ("pruned from state", "pruned"),
    ("folder errors", "folder_errors"),
    ("truncated (deadline)", "truncated"),
    ("dry run", "dry_run"),
    ("time", "execution_time_seconds"),
)
_STATUS_TEXT = {200: "200 complete", 207: "207 partial: some files failed", 500: "500 failed"}


def _cell(key: str, value: Any) -> str:
    if key == "statusCode":
        return _STATUS_TEXT.get(int(value), str(value))
    if key == "execution_time_seconds":
        return f"{float(value):.2f} s"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as an aligned two-column table (ends with a newline).

    Rows for counters that are absent are left out; ``api_calls`` becomes one row per
    operation, and ``error``/``problems`` are shown in full below the table.
    """
    rows: list[tuple[str, str]] = [
        (label, _cell(key, summary[key])) for label, key in _ROWS if key in summary
    ]
    calls = summary.get("api_calls")
    if isinstance(calls, dict):
        rows.extend((f"api calls: {op}", f"{n:,}") for op, n in calls.items())
    width = max(cells(label) for label, _ in rows) if rows else 0
    value_width = max(cells(value) for _, value in rows) if rows else 0
    rule = "-" * width + "  " + "-" * value_width
    lines = [rule]
    lines.extend(f"{ljust(label, width)}  {rjust(value, value_width)}" for label, value in rows)
    lines.append(rule)
    problems = summary.get("problems") or ()
    if problems:
        lines.append("error: invalid configuration:")
        lines.extend(f"  - {item}" for item in problems)
    elif summary.get("error"):
        lines.append(f"error: {summary['error']}")
    return "\n".join(lines) + "\n"
