"""Between the listing of a folder and the decider: its pages wait for its state.

A folder's pages go on only once the state they are decided against is loaded. Under
``STATE_LAYOUT=folders`` a folder listed from its start may have only its shard's head
read (its fingerprint, :mod:`async_discovery.fingerprint`): its pages are then held,
with the fingerprint of their candidates, until the listing ends. If it matches, every
candidate is unchanged and the shard's files are never read (the unit is *verified*);
if not, or once more than ``HOLD_CANDIDATES`` wait, the files are read and the held
pages go on, the rest streaming after them. So memory stays bounded by the held pages,
and a changed folder costs what it did before plus one ranged ``GetObject`` and the
wait for its listing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from ..errors import StateError, StorageError
from ..fingerprint import Fingerprint
from ..models import Page
from .plan import Job
from .units import Unit

# Candidates held at most per folder (a ListedObject each, ~0.3 KB): a folder with more
# has its shard's files read, as it would without a fingerprint.
HOLD_CANDIDATES = 10_000


class Units(Protocol):
    """Where a folder's state unit comes from (:class:`~.shards.Shards`)."""

    async def open(self, job: Job) -> Unit:
        """The folder's unit, registered for the decider (its head only, or whole)."""
        ...

    async def settle(self, unit: Unit, fingerprint: str | None) -> None:
        """Settle a unit opened by its head, given the fingerprint of its folder's
        listing (None: not known, too long to hold): verified, or its files read."""
        ...


Send = Callable[[Page], Awaitable[None]]


class FolderGate:
    """One folder's pages on their way to the decider (see the module docstring).

    The unit is opened in ``tg`` next to the listing of the first page; ``page`` and
    ``finish`` raise the ``StateError`` or ``StorageError`` that made it unusable.
    """

    def __init__(self, units: Units | None, job: Job, tg: TaskGroup) -> None:
        self._units = units
        self._opened = anyio.Event()
        self._error: Exception | None = None
        self._unit: Unit | None = None
        self._held: list[Page] = []
        self._fingerprint = Fingerprint()
        if units is None or job.folder is None:
            self._opened.set()
        else:
            tg.start_soon(self._open, units, job)

    async def _open(self, units: Units, job: Job) -> None:
        try:
            self._unit = await units.open(job)
        except (StateError, StorageError) as exc:
            self._error = exc
        finally:
            self._opened.set()

    async def _ready(self) -> Unit | None:
        await self._opened.wait()
        if self._error is not None:
            raise self._error
        return self._unit

    async def page(self, page: Page, send: Send) -> None:
        """Pass ``page`` on, or hold it while only the shard's head is read."""
        unit = await self._ready()
        if unit is None or not unit.head_only or unit.verified:
            await send(page)
            return
        self._held.append(page)
        candidates = page.candidates
        self._fingerprint.add([o.key for _, o in candidates], [o.etag for _, o in candidates])
        if self._fingerprint.count > HOLD_CANDIDATES:
            await self._release(unit, send, None)

    async def finish(self, send: Send) -> None:
        """The folder's listing ended: settle the held pages and pass them on."""
        unit = await self._ready()
        if unit is not None and unit.head_only and not unit.verified:
            await self._release(unit, send, self._fingerprint.value())

    async def _release(self, unit: Unit, send: Send, fingerprint: str | None) -> None:
        assert self._units is not None
        await self._units.settle(unit, fingerprint)
        held, self._held = self._held, []
        for page in held:
            await send(page)
