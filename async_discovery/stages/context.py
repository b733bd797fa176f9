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
from ..summary import RunStats
from .decide import Tally
from .units import Listing, Unit

log = logging.getLogger("async_discovery")

UnitKey = tuple[str, str | None]  # a shard's folder and the lower bound of its keys


@dataclasses.dataclass(slots=True)
class RunContext:
    """One run's shared, mutable bookkeeping. Stages run on one event loop, so plain
    attributes are safe: nothing here is touched across an ``await`` half-done."""

    config: Config
    stats: RunStats
    tally: Tally
    deadline: Deadline
    clock: Callable[[], datetime]
    # The state units: the one state object (single layout), or the shards (a folder's,
    # or one range of a split folder's) loaded and not yet written (folders layout).
    single: Unit | None = None
    shards: dict[UnitKey, Unit] = dataclasses.field(default_factory=dict)
    # Every listing this run started, with how far its pages were handled.
    listings: list[Listing] = dataclasses.field(default_factory=list)
    fatal: DiscoveryError | None = None

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
