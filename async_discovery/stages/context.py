"""What the stages of one run share (see :mod:`async_discovery.stages`)."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from datetime import datetime

from ..config import Config
from ..deadline import Deadline
from ..errors import DiscoveryError
from ..resume import ListingProgress
from ..summary import RunStats
from .decide import Tally
from .units import Unit

log = logging.getLogger("async_discovery")

FLAT = "\x00flat"  # progress key of the flat listing (no folder name can contain NUL)


@dataclasses.dataclass(slots=True)
class RunContext:
    """One run's shared, mutable bookkeeping. Stages run on one event loop, so plain
    attributes are safe: nothing here is touched across an ``await`` half-done."""

    config: Config
    stats: RunStats
    tally: Tally
    deadline: Deadline
    clock: Callable[[], datetime]
    # The state units: the one state object (single layout) or the folders' shards
    # loaded and not yet written (folders layout).
    single: Unit | None = None
    shards: dict[str, Unit] = dataclasses.field(default_factory=dict)
    # Per listing (folder name, or FLAT): how far its pages were handled.
    progress: dict[str, ListingProgress] = dataclasses.field(default_factory=dict)
    fatal: DiscoveryError | None = None

    def unit_of(self, folder: str) -> Unit:
        """The state unit a candidate of ``folder`` is recorded in."""
        return self.single if self.single is not None else self.shards[folder]

    def fail(self, exc: DiscoveryError) -> None:
        """Record the first error that makes the run a 500; stages then take no new work."""
        if self.fatal is None:
            self.fatal = exc

    def stopping(self) -> bool:
        """True once no new listing page should be taken (fatal error, deadline, or an
        interrupt, which stops the run as the deadline does)."""
        if self.fatal is not None:
            return True
        if self.deadline.expired():
            if not self.stats.truncated:
                reason = self.deadline.stopped_by
                if reason is None:
                    log.warning("deadline reached: stop listing", extra={"event": "deadline"})
                else:
                    log.warning("%s: stop listing", reason, extra={"event": "interrupted"})
            self.stats.truncated = True
            return True
        return False


def backoff(attempt: int, base: float = 0.1, cap: float = 2.0) -> float:
    """Full-jitter exponential backoff (AWS architecture blog): uniform in [0, min(cap, b*2^n)]."""
    return random.uniform(0, min(cap, base * (2**attempt)))
