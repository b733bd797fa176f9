"""Plain data shared by every layer: listed objects and outgoing messages."""

from __future__ import annotations

import dataclasses
from datetime import datetime


@dataclasses.dataclass(frozen=True, slots=True)
class ListedObject:
    """One object as a listing returned it (ETag without quotes)."""

    key: str
    etag: str
    size: int
    last_modified: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to send, with what the state needs once SQS accepts it."""

    obj: ListedObject
    folder: str
    event: str  # "new" or "updated"
    message_id: str
    body: str
    previous_etag: str | None = None
