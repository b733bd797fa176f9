"""Between a listing and the decider: its pages wait for the state they are decided against.

A listing's pages go on only once its unit is open (:meth:`Gate.ready`). Under
``STATE_LAYOUT=folders`` a unit listed from its lower bound may have only its shard's
head read (its fingerprint, :mod:`async_discovery.fingerprint`): its pages are then held,
with the fingerprint of their candidates, until the listing ends. If it matches, every
candidate is unchanged and the shard's files are never read (the unit is *verified*);
if not, the files are read and the held pages go on. Held pages are released early, the
files read, as soon as the listing holds more candidates than the shard records (it can
no longer match) or than ``HOLD_CANDIDATES``, so memory stays bounded by one range's
pages. A changed unit costs what it would without a fingerprint plus one ranged
``GetObject`` and the wait for its listing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from ..errors import StateError, StorageError
from ..fingerprint import Fingerprint, recorded_count
from .units import Listing, Page, Unit

# Candidates held at most per listing (a ListedObject each, ~0.3 KB), whatever the
# shard records: one written before ranges existed may hold any number of files.
HOLD_CANDIDATES = 20_000


class Units(Protocol):
    """Settles a unit opened by its head (:class:`~.shards.Shards`)."""

    async def settle(self, unit: Unit, fingerprint: str | None) -> None:
        """Given the fingerprint of its listing (None: not known): verified, or its
        files read."""
        ...


Send = Callable[[Page], Awaitable[None]]
Open = Callable[[Listing], Awaitable[Unit]]


class Gate:
    """One listing's pages on their way to the decider (see the module docstring).

    ``open`` finds the listing's unit; it runs in ``tg`` while the first page is
    listed. :meth:`ready`, :meth:`page` and :meth:`finish` raise the ``StateError`` or
    ``StorageError`` that made the unit unusable.
    """

    def __init__(self, units: Units | None, listing: Listing, open: Open, tg: TaskGroup) -> None:
        self._units = units
        self._listing = listing
        self._opened = anyio.Event()
        self._error: Exception | None = None
        self._held: list[Page] = []
        self._fingerprint = Fingerprint()
        self._limit = HOLD_CANDIDATES
        tg.start_soon(self._open, open)

    async def _open(self, open: Open) -> None:
        try:
            unit = self._listing.unit = await open(self._listing)
            if unit.expected is not None:
                self._limit = min(HOLD_CANDIDATES, recorded_count(unit.expected))
        except (StateError, StorageError) as exc:
            self._error = exc
        finally:
            self._opened.set()

    async def ready(self) -> Unit:
        """The listing's unit, once open (its job is then cut at its range's bounds)."""
        await self._opened.wait()
        if self._error is not None:
            raise self._error
        assert self._listing.unit is not None
        return self._listing.unit

    @property
    def holding(self) -> bool:
        """True while pages are held for the fingerprint."""
        return bool(self._held)

    async def page(self, page: Page, send: Send) -> None:
        """Pass ``page`` on, or hold it while only the shard's head is read."""
        unit = await self.ready()
        if not unit.head_only or unit.verified:
            await send(page)
            return
        self._held.append(page)
        candidates = page.candidates
        self._fingerprint.add([o.key for _, o in candidates], [o.etag for _, o in candidates])
        if self._fingerprint.count > self._limit:  # can no longer match: read the files
            await self._release(unit, send, None)

    async def finish(self, send: Send) -> None:
        """The listing ended: settle the held pages and pass them on."""
        unit = await self.ready()
        if unit.head_only and not unit.verified:
            await self._release(unit, send, self._fingerprint.value())

    async def _release(self, unit: Unit, send: Send, fingerprint: str | None) -> None:
        assert self._units is not None
        await self._units.settle(unit, fingerprint)
        held, self._held = self._held, []
        for page in held:
            await send(page)
