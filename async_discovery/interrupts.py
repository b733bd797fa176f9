"""SIGINT and SIGTERM during a CLI scan: the first stops the run as the deadline does, a
second aborts it.

On the first signal the run's :class:`~async_discovery.deadline.Deadline` is stopped:
no new listing page is taken, the sends in flight finish, and the state records exactly
what SQS accepted (with the cursor of a truncated pass), so the next run sends nothing
twice. One line says so on stderr. A second signal cancels the run at once: whatever
SQS accepted since the last state write is sent again by the next run. The exit status
is then ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM), as a shell reports a
process a signal ended.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import ExitStack

import anyio
from anyio.abc import TaskStatus

from .deadline import Deadline

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Watches SIGINT and SIGTERM for one run (:meth:`watch`, in the run's task group).

    ``deadline`` is the run's; ``scope`` the cancel scope around the run, which a second
    signal cancels; ``say`` writes one line for the person at the terminal.
    """

    def __init__(self, deadline: Deadline, scope: anyio.CancelScope, say: Callable[[str], None]):
        self.deadline = deadline
        self.scope = scope
        self.say = say
        self.received: signal.Signals | None = None  # the first signal, once one came

    @property
    def exit_status(self) -> int | None:
        """``128 + signal number`` once a signal came, else None."""
        return None if self.received is None else 128 + int(self.received)

    def abort_error(self) -> str:
        """The summary's ``error`` of a run a second signal cancelled."""
        name = self.received.name if self.received is not None else "signal"
        return (
            f"aborted by a second {name}: the state was not written; the next run sends "
            "again what this one sent"
        )

    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Handle the signals until cancelled; started once the handlers are in place.
        Where signals cannot be received (not the main thread), Python's own handling
        stays and this returns at once."""
        with ExitStack() as stack:
            try:
                signals = stack.enter_context(anyio.open_signal_receiver(*SIGNALS))
            except (NotImplementedError, ValueError, RuntimeError):
                task_status.started()
                return
            task_status.started()
            async for number in signals:
                self.handle(signal.Signals(number))

    def handle(self, received: signal.Signals) -> None:
        """One signal: the first stops the run, the next aborts it."""
        if self.received is None:
            self.received = received
            self.deadline.stop(f"{received.name} received")
            self.say(
                f"{received.name} received: taking no new page, finishing the sends in "
                "flight and recording them in the state (again to abort at once)"
            )
            return
        if not self.scope.cancel_called:
            self.say(
                f"{received.name} received again: aborting; what SQS accepted since the "
                "last state write is sent again by the next run"
            )
            self.scope.cancel()
