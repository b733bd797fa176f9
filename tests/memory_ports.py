"""In-memory implementations of the pipeline's ports, for fast tests of its mechanics.

The way httpx tests against ``MockTransport``: ordering, backpressure, cancellation,
deadlines and cursors are properties of the pipeline, tested here in milliseconds. What
S3 and SQS do is tested against the moto server, never against these.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

import anyio

from async_discovery.errors import StateConflict
from async_discovery.models import ListedObject, Outgoing
from async_discovery.ports import BatchResult, RawPage

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def listed(key: str, etag: str | None = None) -> ListedObject:
    """An object as a listing returns it (ETag derived from the key by default)."""
    return ListedObject(key, etag or hashlib.md5(key.encode()).hexdigest(), 10, EPOCH)


class MemoryLister:
    """Lists a fixed set of keys in S3 order, ``page_size`` per page.

    ``pages_yielded`` counts pages handed out; ``on_page`` (if set) is awaited before each
    page is yielded, so a test can hold or pace the listing.
    """

    def __init__(self, keys: Sequence[str], page_size: int = 1000) -> None:
        self.objects = sorted((listed(k) for k in keys), key=lambda o: o.key)
        self.page_size = page_size
        self.pages_yielded = 0
        self.on_page: Callable[[], Awaitable[None]] | None = None

    async def pages(
        self, prefix: str, *, delimiter: bool, start_after: str | None = None
    ) -> AsyncGenerator[RawPage, None]:
        """ListObjectsV2 semantics: keys under ``prefix`` after ``start_after``; with a
        delimiter, deeper keys rolled up into common prefixes (once each)."""
        entries: list[tuple[str, ListedObject | None]] = []
        seen: set[str] = set()
        for obj in self.objects:
            if not obj.key.startswith(prefix) or (start_after and obj.key <= start_after):
                continue
            rest = obj.key[len(prefix) :]
            if delimiter and "/" in rest:
                common = prefix + rest.split("/", 1)[0] + "/"
                if common not in seen and not (start_after and common <= start_after):
                    seen.add(common)
                    entries.append((common, None))
                continue
            entries.append((obj.key, obj))
        for start in range(0, len(entries), self.page_size):
            chunk = entries[start : start + self.page_size]
            if self.on_page is not None:
                await self.on_page()
            self.pages_yielded += 1
            yield RawPage(
                [o for _, o in chunk if o is not None], [k for k, o in chunk if o is None]
            )
            await anyio.lowlevel.checkpoint()


class MemoryStore:
    """The state object in memory, with S3's conditional-write semantics."""

    name = "memory://state.json"

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.etag: str | None = None
        self.writes = 0

    async def load(self) -> tuple[bytes | None, str | None]:
        """The body and its ETag, or (None, None)."""
        return self.body, self.etag

    async def save(
        self, body: bytes, *, if_match: str | None, metadata: Mapping[str, str] | None = None
    ) -> str:
        """Write if the ETag still matches (None: only if absent); metadata is dropped."""
        if if_match != self.etag:
            raise StateConflict(f"{self.name} changed meanwhile")
        self.body, self.writes = body, self.writes + 1
        self.etag = hashlib.md5(body).hexdigest()
        return self.etag


class MemorySender:
    """Accepts every message after ``delay`` seconds (or what ``hook`` decides), and
    records each batch, the order of keys per folder, and the peaks of sends and of
    folders (message groups) in flight."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[list[str]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.in_flight_by_group: dict[str, int] = {}
        self.peak_in_flight_per_group = 0
        self.peak_groups_in_flight = 0
        self.hook: Callable[[Sequence[Outgoing]], Awaitable[None]] | None = None

    async def send_batch(self, batch: Sequence[Outgoing]) -> BatchResult:
        """Record and accept the batch."""
        groups = {out.folder for out in batch}
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        for group in groups:
            n = self.in_flight_by_group.get(group, 0) + 1
            self.in_flight_by_group[group] = n
            self.peak_in_flight_per_group = max(self.peak_in_flight_per_group, n)
        busy = sum(1 for n in self.in_flight_by_group.values() if n > 0)
        self.peak_groups_in_flight = max(self.peak_groups_in_flight, busy)
        try:
            if self.hook is not None:
                await self.hook(batch)
            await anyio.sleep(self.delay)
            self.batches.append([out.obj.key for out in batch])
            return BatchResult(list(batch), [], [])
        finally:
            self.in_flight -= 1
            for group in groups:
                self.in_flight_by_group[group] -= 1

    @property
    def sent(self) -> list[str]:
        """Every key sent, in the order the batches completed."""
        return [key for batch in self.batches for key in batch]
