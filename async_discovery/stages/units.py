"""State units as a run holds them, and the listings whose pages are decided against them.

A unit is one state object: the single state object, a folder's shard, or one key range
of a split folder. It is loaded before its first candidate is decided and written (if it
changed) once its last batch is settled; :mod:`.commit` and :mod:`.shards` do both.
Under ``STATE_LAYOUT=single`` one unit holds every folder; under ``folders`` each listed
folder, or each listed range of a split folder, has its own.

A :class:`Listing` is one job being listed (:class:`~.plan.Job`): how far its pages
are handled and the unit they are decided against; each classified :class:`Page`
names its listing, so the decide and send stages know where a file is recorded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from ..discovery import Verdict
from ..models import ListedObject
from ..ports import StateStore
from ..ranges import WHOLE, Span
from ..resume import ListingProgress
from ..state import FileEntry, State

if TYPE_CHECKING:
    from .plan import Job

log = logging.getLogger("async_discovery")

_HEADROOM = 1 << 20  # state bytes kept free for the cursor and top-level fields
# An entry as the codec writes it, less its three strings: ',\n ' + ': {"status": "queued",
# "etag": , "size": <up to 20 digits>, "folder": , "queued_at": "<ISO with µs>Z"}'.
_ENTRY_OVERHEAD = 140
_quoted = json.encoder.encode_basestring


def _entry_bytes(key: str, etag: str, folder: str) -> int:
    """One entry's size in the encoded state (an upper bound, within a few bytes)."""
    return _ENTRY_OVERHEAD + sum(
        len(_quoted(text).encode("utf-8", "surrogatepass")) for text in (key, etag, folder)
    )


class StateBudget:
    """How much the state may still grow before it reaches ``STATE_MAX_BYTES``.

    A state over the cap is one every later run refuses to load, so every file to
    record (sent or marked) first takes its entry's encoded size from this budget: the
    cap minus the state as loaded minus a headroom for the cursor and the top-level
    fields (5% of the cap, at most 1 MiB). Once it is spent no new file is sent or
    marked; those stay unrecorded, and a later run finds them again.
    """

    def __init__(self, cap: int, loaded_bytes: int) -> None:
        self.cap = cap
        self.room = cap - loaded_bytes - min(cap // 20, _HEADROOM)
        self.full = False

    def take(self, obj: ListedObject, folder: str, entry: FileEntry | None) -> bool:
        """Room for recording ``obj`` (replacing ``entry``); False once the state is full."""
        size = _entry_bytes(obj.key, obj.etag, folder)
        if entry is not None:
            size -= _entry_bytes(obj.key, entry.etag, entry.folder)
        if self.room - size < 0:
            if not self.full:
                self.full = True
                log.error("state full: no more files sent", extra={"event": "state_full"})
            return False
        self.room -= size
        return True


@dataclasses.dataclass(slots=True, eq=False)
class Unit:
    """One state object as this run holds it, and what the run changes in it."""

    store: StateStore
    state: State  # as loaded (empty when the object did not exist)
    etag: str | None  # of the object as loaded (None: it did not exist)
    budget: StateBudget
    folder: str | None = None  # the shard's folder (None: the single state object)
    # The keys it holds: all of its folder, or one range of a split folder; ``shard`` is
    # that range's id in the folder's index (None: the folder's own shard).
    span: Span = WHOLE
    shard: str | None = None
    ranged: bool = False  # a range of a split folder (else: the folder's own shard)
    # Listings still deciding against it; once none is left it can be written.
    listings: int = 0
    complete: bool = True  # every listing of it reached its end (else: no pruning)
    # Under a first-run policy: objects modified before this are marked, not sent.
    mark_before: datetime | None = None
    upserts: dict[str, FileEntry] = dataclasses.field(default_factory=dict)
    # Keys in the unit this run may prune: each one listed is discarded (None: no pruning).
    unseen: set[str] | None = None
    # Only the shard's head was read: its fingerprint (``files-digest``), and whether
    # the folder's listing matched it (every candidate unchanged; files never read).
    expected: str | None = None
    verified: bool = False

    @property
    def head_only(self) -> bool:
        """True while only the shard's head was read: nothing may be decided against
        it (its pages are held) or written from it."""
        return self.expected is not None

    @property
    def existed(self) -> bool:
        """True when the object existed when the run loaded it."""
        return self.etag is not None


@dataclasses.dataclass(slots=True, eq=False)
class Listing:
    """One job being listed: its pages' progress and the unit they are decided against
    (None until it is opened; the single state object under ``STATE_LAYOUT=single``)."""

    job: Job
    progress: ListingProgress
    unit: Unit | None = None
    held: bool = False  # its pages were held for the unit's fingerprint when it stopped


@dataclasses.dataclass(slots=True)
class Page:
    """One listing page, classified: what flows through the bounded page stream.

    ``seq`` numbers the pages of one listing so a truncated run knows how far the
    processed pages reach (``last_key`` of the last contiguous processed page).
    """

    listing: Listing | None  # None: the folder discovery's top-level objects
    seq: int
    last_key: str | None
    candidates: list[tuple[str, ListedObject]]
    ignored: dict[Verdict, int]
    listed: int
    explained: list[tuple[str, Verdict]] = dataclasses.field(default_factory=list)

    @property
    def folder(self) -> str | None:
        """The folder it was listed from (None: the flat listing)."""
        return None if self.listing is None else self.listing.job.folder
