"""The Lambda deadline (SPEC "Lambda deadline"), as a small clock the pipeline consults;
an interrupted CLI scan stops through it too (:meth:`Deadline.stop`)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Deadline:
    """Says when to stop taking new listing pages.

    ``remaining`` returns the seconds the invocation has left (for Lambda,
    ``context.get_remaining_time_in_millis() / 1000``); None means no deadline (CLI).
    The run stops taking pages once fewer than ``margin`` seconds remain, leaving that
    margin for in-flight sends and the single state write.
    """

    def __init__(self, remaining: Callable[[], float] | None = None, margin: float = 2.0):
        self._remaining = remaining
        self.margin = margin
        # Why the run was told to stop before its time (an interrupt), or None.
        self.stopped_by: str | None = None

    def stop(self, reason: str) -> None:
        """Stop now, as if the deadline had passed (the CLI on SIGINT or SIGTERM); the
        first ``reason`` given is kept."""
        if self.stopped_by is None:
            self.stopped_by = reason

    @classmethod
    def after(cls, seconds: float, margin: float = 2.0) -> Deadline:
        """A deadline ``seconds`` from now (tests, and CLI runs with a time budget)."""
        end = time.monotonic() + seconds
        return cls(lambda: end - time.monotonic(), margin)

    def seconds_left(self) -> float | None:
        """Seconds until the margin is reached (negative once past), or None."""
        if self._remaining is None:
            return None
        return self._remaining() - self.margin

    def expired(self) -> bool:
        """True once the remaining time has fallen below the margin, or once stopped."""
        if self.stopped_by is not None:
            return True
        left = self.seconds_left()
        return left is not None and left <= 0
