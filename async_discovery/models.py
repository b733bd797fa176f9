"""Plain data shared by every layer: listed objects, listing pages, outgoing messages."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from .discovery import Verdict


@dataclasses.dataclass(frozen=True, slots=True)
class ListedObject:
    """One object as a listing returned it (ETag without quotes)."""

    key: str
    etag: str
    size: int
    last_modified: datetime


@dataclasses.dataclass(slots=True)
class Page:
    """One listing page, classified: the unit that flows through the bounded stream.

    ``folder`` is the subfolder the page was listed from (None for the flat listing);
    ``seq`` numbers the pages of one listing so a truncated run knows how far the
    processed pages reach (``last_key`` of the last contiguous processed page).
    """

    folder: str | None
    seq: int
    last_key: str | None
    candidates: list[tuple[str, ListedObject]]
    ignored: dict[Verdict, int]
    listed: int
    explained: list[tuple[str, Verdict]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to send, with what the state needs once SQS accepts it."""

    obj: ListedObject
    folder: str
    event: str  # "new" or "updated"
    message_id: str
    body: str
    previous_etag: str | None = None
