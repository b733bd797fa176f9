"""The I/O interfaces the pipeline needs, as small Protocols.

The pipeline never imports an AWS library: :mod:`async_discovery.aws` implements these
against aiobotocore, and tests of pipeline mechanics may implement them in memory.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from .models import ListedObject, Outgoing


@dataclasses.dataclass(slots=True)
class RawPage:
    """One ``ListObjectsV2`` page: objects, and (with a delimiter) rolled-up prefixes."""

    objects: list[ListedObject]
    common_prefixes: list[str]


@dataclasses.dataclass(slots=True)
class BatchResult:
    """One ``SendMessageBatch`` call: accepted entries, entries worth re-sending
    (``SenderFault`` false), and entries refused for good."""

    accepted: list[Outgoing]
    retryable: list[tuple[Outgoing, str]]
    rejected: list[tuple[Outgoing, str]]


class Lister(Protocol):
    """Lists a bucket prefix page by page (raises ``ListingError`` when it cannot)."""

    def pages(
        self, prefix: str, *, delimiter: bool, start_after: str | None = None
    ) -> AsyncGenerator[RawPage, None]:
        """Yield the listing pages of ``prefix`` in key order."""
        ...


class ObjectHeads(Protocol):
    """Reads the current version of one source object (``HeadObject``): the event path
    sends what is in the bucket now, not what an event said."""

    async def head(self, key: str) -> ListedObject | None:
        """The object as a listing would show it (ETag without quotes), or None when it
        does not exist; raises ``StorageError`` when S3 does not answer either way."""
        ...


class StateStore(Protocol):
    """Reads and conditionally writes the one state object."""

    @property
    def name(self) -> str:
        """``s3://bucket/key``, for messages."""
        ...

    async def load(self) -> tuple[bytes | None, str | None]:
        """The raw state and its ETag, or (None, None) when no state object exists."""
        ...

    async def save(
        self, body: bytes, *, if_match: str | None, metadata: Mapping[str, str] | None = None
    ) -> str:
        """Write ``body`` if the object still has ETag ``if_match`` (None: if none exists),
        with user ``metadata`` (a shard's fingerprint).

        Returns the new ETag; raises ``StateConflict`` when the condition fails.
        """
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectHead:
    """The first bytes of a state object and what its ``GetObject`` answered."""

    data: bytes  # the first bytes: the whole object when ``size <= len(data)``
    etag: str
    size: int  # of the whole object
    metadata: Mapping[str, str]


class StateSink(Protocol):
    """Takes the raw state object chunk by chunk (``state_codec.StateDecoder``)."""

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the object."""
        ...


@runtime_checkable
class StreamingStateStore(StateStore, Protocol):
    """A :class:`StateStore` that also streams the object both ways.

    The pipeline prefers these methods when a store has them, so the raw state (as large
    as the decoded state) is never whole in memory next to it; a store with only
    ``load``/``save`` still works.
    """

    async def load_into(self, sink: StateSink) -> tuple[bool, str | None]:
        """Feed the state to ``sink``; return (True, ETag), or (False, None) when no state
        object exists. Errors raised by ``sink`` propagate."""
        ...

    async def load_head(self, size: int) -> ObjectHead | None:
        """The object's first ``size`` bytes (a ranged ``GetObject``), or None when no
        such object exists."""
        ...

    async def save_stream(
        self,
        body: io.RawIOBase,
        *,
        if_match: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """:meth:`StateStore.save` with a seekable body of known ``len()``."""
        ...


class StateObjects(Protocol):
    """The state objects under the state prefix (``STATE_LAYOUT=folders``): one
    conditional store per key (a shard, the cursor, the first-run record)."""

    def store(self, key: str) -> StateStore:
        """The store of the object at ``key``."""
        ...

    async def keys(self, prefix: str) -> list[str]:
        """Keys of the objects directly under ``prefix`` (not deeper)."""
        ...

    async def etags(self, prefix: str) -> dict[str, str]:
        """The objects directly under ``prefix`` (not deeper), each with its ETag."""
        ...

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete the object at ``key`` (absent is fine); with ``if_match``, only if it
        still has that ETag (else ``StateConflict``)."""
        ...


class Sender(Protocol):
    """Sends one batch of at most 10 messages (raises ``QueueError`` queue-wide)."""

    async def send_batch(self, batch: Sequence[Outgoing]) -> BatchResult:
        """One ``SendMessageBatch`` call."""
        ...
