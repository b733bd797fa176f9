"""``async-discovery state migrate``: convert the state of one prefix between layouts.

SPEC "State layout `folders`": the migration converts between the layouts of the same
``S3_STATE_KEY`` without losing an entry, is idempotent, leaves the source object(s) in
place and refuses to overwrite a target that differs unless ``--force``.

- ``--to folders``: the single object (:attr:`.Config.state_object_key`) is read; its
  entries of the configured prefix ``P`` that sit in a folder (``P + F + "/" + N``,
  skipped folders included, so none is lost) are grouped by folder and each group is
  written as folder ``F``'s shard (version 2) with ``If-None-Match: *``; a group of more
  than ``SHARD_MAX_FILES`` entries is split into key-range shards and the folder's index
  (:mod:`~.ranges`), as a scan splits a folder that grows. Entries of other prefixes
  (and any not in a folder of ``P``) stay only in the single object.
- ``--to single``: every folder's state of ``P`` (its shard, or every range of its
  index) is read and its entries are merged into the single object (created when absent;
  entries of other prefixes kept), one conditional write (``If-Match`` its ETag,
  ``If-None-Match: *`` when none existed).

A target that exists with the same entries is left alone (``same``); one whose entries
differ is refused (``differs``, nothing of the migration written) unless ``force``,
which overwrites a shard, or lets the shards' entries win in the single object, with
``If-Match`` the ETag read. Where a truncated pass stopped (the cursor) is not
migrated: a pass cut short starts over in the other layout, which re-reads every
folder but sends nothing already recorded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import anyio

from .aws import open_clients
from .aws.s3 import S3StateObjects
from .changes import strip_etag
from .config import Config
from .errors import DiscoveryError, StateConflict
from .fingerprint import META_KEY, object_metadata
from .layout import (
    is_shard_of,
    range_key,
    runs_key,
    shard_key,
    shards_prefix,
)
from .messages import iso_utc
from .ports import StateObjects, StateStore
from .ranges import (
    INDEX_VERSION,
    Index,
    RangeRef,
    decode_index,
    encode_index,
    piece_sizes,
    version_at_start,
)
from .state import SHARD_VERSION, STATE_VERSION, FileEntry, Files, State, check_source
from .state_codec import decode, encode

Target = Literal["folders", "single"]
TARGETS: tuple[Target, ...] = ("folders", "single")
# What happened to one target object.
Action = Literal["would write", "wrote", "same", "differs", "failed"]
CURSOR_NOTE = (
    "the cursor (where a truncated pass stopped) is not migrated: an unfinished pass "
    "starts over, re-reading every folder but sending nothing already recorded"
)


@dataclasses.dataclass(slots=True)
class Outcome:
    """One target object: what was (or would be) done, its entry count, why."""

    name: str
    action: Action
    entries: int
    detail: str = ""

    def line(self) -> str:
        """The outcome as one line of text."""
        text = f"{self.action:<11}  {self.name}: {self.entries} entries"
        return f"{text} ({self.detail})" if self.detail else text


@dataclasses.dataclass(slots=True)
class Report:
    """The whole migration: per-object outcomes and notes; ``ok`` is the exit status."""

    to: Target
    dry_run: bool
    force: bool
    source: str = ""
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Nothing refused, nothing failed."""
        return self.error is None and all(
            o.action not in ("differs", "failed") for o in self.outcomes
        )

    def counts(self) -> dict[str, int]:
        """Objects per action."""
        found: dict[str, int] = {}
        for outcome in self.outcomes:
            found[outcome.action] = found.get(outcome.action, 0) + 1
        return found

    def document(self) -> dict[str, Any]:
        """The JSON summary (``--output json``)."""
        doc: dict[str, Any] = {
            "ok": self.ok,
            "to": self.to,
            "dry_run": self.dry_run,
            "force": self.force,
            "source": self.source,
            "counts": self.counts(),
            "objects": [dataclasses.asdict(o) for o in self.outcomes],
            "notes": self.notes,
        }
        if self.error is not None:
            doc["error"] = self.error
        return doc

    def text(self) -> str:
        """One line per object, then the notes and the error."""
        lines = [o.line() for o in self.outcomes]
        lines += [f"note: {note}" for note in self.notes]
        if self.error is not None:
            lines.append(f"error: {self.error}")
        return "".join(line + "\n" for line in lines)


def folder_of(key: str, prefix: str) -> str | None:
    """``F`` when ``key`` is ``prefix + F + "/" + N`` (``F`` and ``N`` non-empty, no
    ``/``), else None: the entries a folder's shard holds."""
    if not key.startswith(prefix):
        return None
    folder, slash, name = key[len(prefix) :].partition("/")
    if not folder or not slash or not name or "/" in name:
        return None
    return folder


class ObjectIO:
    """The state objects a migration reads and writes, decoded, checked and encoded
    (``dry_run``: a write only says it would be done)."""

    def __init__(self, config: Config, objects: StateObjects, *, dry_run: bool) -> None:
        self.config = config
        self.objects = objects
        self.dry_run = dry_run
        self.state_prefix = config.state_prefix
        self.prefix = config.prefix
        self.clock: Callable[[], datetime] = functools.partial(datetime.now, UTC)

    def decode(self, raw: bytes, name: str, version: int) -> State:
        """A state object's bytes decoded, refused when bound to another bucket."""
        state = decode(raw, name=name, max_bytes=self.config.state_max_bytes, version=version)
        check_source(state, self.config.source_bucket, name=name, force_rebind=False)
        return state

    async def load(self, store: StateStore, version: int) -> tuple[State | None, str | None]:
        """A state object, checked and decoded, and its ETag; (None, None) if absent."""
        raw, etag = await store.load()
        if raw is None:
            return None, None
        return self.decode(raw, store.name, version), etag

    async def load_folder(
        self, store: StateStore, folder: str | None
    ) -> tuple[dict[str, FileEntry] | None, str | None, Index | None]:
        """A folder's entries (its shard's, or all its ranges'), the ETag of ``<F>.json``
        and its index when it is split; (None, None, None) when it has no state."""
        raw, etag = await store.load()
        if raw is None:
            return None, None, None
        if version_at_start(raw) != INDEX_VERSION:
            return dict(self.decode(raw, store.name, SHARD_VERSION).files.items()), etag, None
        index = decode_index(raw, name=store.name, prefix=self.prefix, folder=folder)
        check_source(
            State(source_bucket=index.source_bucket),
            self.config.source_bucket,
            name=store.name,
            force_rebind=False,
        )
        entries: dict[str, FileEntry] = {}
        for ref in index.ranges:
            if ref.shard is None:
                continue
            key = range_key(self.state_prefix, self.prefix, index.folder, ref.shard)
            part, _ = await self.load(self.objects.store(key), SHARD_VERSION)
            if part is not None:
                entries.update(part.files.items())
        return entries, etag, index

    async def write_ranges(
        self,
        store: StateStore,
        folder: str,
        entries: dict[str, FileEntry],
        etag: str | None,
        old: Index | None,
        detail: str,
    ) -> Outcome:
        """Write a folder of more than ``SHARD_MAX_FILES`` entries as range shards and
        their index (``If-Match`` the ``<F>.json`` read); the ranges of ``old`` (an
        index replaced) are deleted once the new one is written."""
        keys = sorted(entries)
        sizes = piece_sizes(len(keys), self.config.shard_max_files)
        detail = f"{detail}, split into {len(sizes)} ranges"
        if self.dry_run:
            return Outcome(store.name, "would write", len(keys), detail)
        refs: list[RangeRef] = []
        start = 0
        for size in sizes:
            part = keys[start : start + size]
            start += size
            shard = secrets.token_hex(8)
            files = Files({k: entries[k] for k in part})
            state = State(
                files=files,
                source_bucket=self.config.source_bucket,
                version=SHARD_VERSION,
                extra={"prefix": self.prefix, "folder": folder},
            )
            body = self.encoded(state, store.name)
            if isinstance(body, Outcome):
                return body
            metadata = object_metadata(state)
            key = range_key(self.state_prefix, self.prefix, folder, shard)
            new_etag = await self.objects.store(key).save(body, if_match=None, metadata=metadata)
            until = part[-1] if start < len(keys) else None
            refs.append(RangeRef(until, shard, strip_etag(new_etag), metadata.get(META_KEY)))
        index = Index(folder, self.prefix, self.config.source_bucket, refs)
        try:
            await store.save(encode_index(index, iso_utc(self.clock())), if_match=etag)
        except StateConflict as exc:
            return Outcome(
                store.name, "failed", len(keys), f"written meanwhile by another run: {exc}"
            )
        for ref in old.ranges if old is not None else ():
            if ref.shard is not None:
                await self.objects.delete(
                    range_key(self.state_prefix, self.prefix, folder, ref.shard)
                )
        return Outcome(store.name, "wrote", len(keys), detail)

    def encoded(self, state: State, name: str) -> bytes | Outcome:
        """``state``'s bytes, or the failure of one past ``STATE_MAX_BYTES``."""
        raw = encode(state, iso_utc(self.clock()))
        cap = self.config.state_max_bytes
        if len(raw) > cap:
            return Outcome(
                name, "failed", len(state.files), f"{len(raw)} bytes, over STATE_MAX_BYTES={cap}"
            )
        return raw

    async def write(
        self, store: StateStore, state: State, etag: str | None, detail: str
    ) -> Outcome:
        """Write ``state`` conditionally (or say it would be written)."""
        body = self.encoded(state, store.name)
        if isinstance(body, Outcome):
            return body
        entries = len(state.files)
        if self.dry_run:
            return Outcome(store.name, "would write", entries, detail)
        try:
            await store.save(body, if_match=etag, metadata=object_metadata(state))
        except StateConflict as exc:
            return Outcome(
                store.name, "failed", entries, f"written meanwhile by another run: {exc}"
            )
        return Outcome(store.name, "wrote", entries, detail)

    async def write_folder(
        self,
        store: StateStore,
        folder: str,
        entries: dict[str, FileEntry],
        etag: str | None,
        index: Index | None,
        detail: str,
    ) -> Outcome:
        """Folder ``folder``'s ``entries`` as its one shard, or as key ranges and their
        index past ``SHARD_MAX_FILES``; ranges the folder had before are deleted."""
        if len(entries) > self.config.shard_max_files:
            return await self.write_ranges(store, folder, entries, etag, index, detail)
        target = State(
            files=entries,
            source_bucket=self.config.source_bucket,
            version=SHARD_VERSION,
            extra={"prefix": self.prefix, "folder": folder},
        )
        outcome = await self.write(store, target, etag, detail)
        if outcome.action == "wrote" and index is not None:
            for ref in index.ranges:  # the folder's ranges, replaced by one shard
                if ref.shard is not None:
                    await self.objects.delete(
                        range_key(self.state_prefix, self.prefix, folder, ref.shard)
                    )
        return outcome


class Migration:
    """One migration of ``config``'s prefix through the state objects of its bucket."""

    def __init__(
        self, config: Config, objects: StateObjects, *, dry_run: bool, force: bool
    ) -> None:
        self.config = config
        self.objects = objects
        self.force = force
        self.state_prefix = config.state_prefix
        self.prefix = config.prefix
        self.io = ObjectIO(config, objects, dry_run=dry_run)

    # -- single -> folders ---------------------------------------------------------------

    async def to_folders(self, report: Report) -> None:
        """Each folder's entries of the single object into that folder's state."""
        source = self.objects.store(self.config.state_object_key)
        report.source = source.name
        single, _ = await self.io.load(source, STATE_VERSION)
        if single is None:
            report.error = f"nothing to migrate: {source.name} does not exist"
            return
        groups = self._groups(single, source.name, report)
        planned: list[tuple[str, StateStore, str | None, Index | None, str]] = []
        for folder, entries in groups.items():
            store = self.objects.store(shard_key(self.state_prefix, self.prefix, folder))
            existing, etag, index = await self.io.load_folder(store, folder)
            if existing is None:
                planned.append((folder, store, None, None, "new shard"))
            elif existing == entries:
                report.outcomes.append(Outcome(store.name, "same", len(entries)))
            elif self.force:
                planned.append((folder, store, etag, index, _difference(existing, entries)))
            else:
                report.outcomes.append(
                    Outcome(store.name, "differs", len(entries), _difference(existing, entries))
                )
        if not report.ok and not self.force:
            planned = []  # refused: write nothing, so a fixed rerun starts from the same place
            report.error = "targets differ from the source: nothing written (--force overwrites)"
        for folder, store, etag, index, detail in planned:
            outcome = await self.io.write_folder(store, folder, groups[folder], etag, index, detail)
            report.outcomes.append(outcome)

    def _groups(self, single: State, name: str, report: Report) -> dict[str, dict[str, FileEntry]]:
        """The single object's entries of the prefix, by folder (notes for the others)."""
        groups: dict[str, dict[str, FileEntry]] = {}
        elsewhere = 0
        for key, entry in single.files.items():
            folder = folder_of(key, self.prefix)
            if folder is None:
                elsewhere += 1
            else:
                groups.setdefault(folder, {})[key] = entry
        if elsewhere:
            report.notes.append(
                f"{elsewhere} entries outside the folders of prefix {self.prefix!r} stay "
                f"only in {name}"
            )
        if not groups:
            report.notes.append(f"no entry of prefix {self.prefix!r} in {name}")
        if self.prefix in single.cursors:
            report.notes.append(CURSOR_NOTE)
        return groups

    # -- folders -> single ---------------------------------------------------------------

    async def to_single(self, report: Report) -> None:
        """Every shard of the prefix merged into the single object."""
        cfg = self.config
        head = shards_prefix(self.state_prefix, self.prefix)
        report.source = f"s3://{cfg.state_bucket}/{head}*.json"
        keys = [
            k
            for k in await self.objects.keys(head)
            if is_shard_of(k, self.state_prefix, self.prefix)
        ]
        if not keys:
            report.error = f"nothing to migrate: no shard under s3://{cfg.state_bucket}/{head}"
            return
        merged: dict[str, FileEntry] = {}
        for key in keys:
            found, _, _ = await self.io.load_folder(self.objects.store(key), None)
            if found is not None:  # deleted since listed: a scan pruned its folder
                merged.update(found)
        cursor = self.objects.store(runs_key(self.state_prefix, self.prefix, "cursor.json"))
        if (await cursor.load())[0] is not None:
            report.notes.append(CURSOR_NOTE)
        target = self.objects.store(cfg.state_object_key)
        single, etag = await self.io.load(target, STATE_VERSION)
        if single is None:
            single = State(source_bucket=cfg.source_bucket)
            detail = "new state object"
        else:
            kept = sum(1 for k in single.files if k not in merged)
            detail = f"merged, {kept} entries kept"
        differing = {
            key: old
            for key, entry in merged.items()
            if (old := single.files.get(key)) is not None and old != entry
        }
        missing = sum(1 for key in merged if key not in single.files)
        if differing and not self.force:
            report.outcomes.append(
                Outcome(
                    target.name,
                    "differs",
                    len(single.files),
                    f"{len(differing)} entries differ from the shards' (first "
                    f"{next(iter(differing))!r})",
                )
            )
            report.error = (
                "the target differs from the source: nothing written (--force overwrites)"
            )
            return
        if not differing and not missing:
            report.outcomes.append(Outcome(target.name, "same", len(single.files)))
            return
        single.files.update(merged)
        single.source_bucket = cfg.source_bucket
        if differing:
            detail += f", {len(differing)} differing entries replaced"
        report.outcomes.append(await self.io.write(target, single, etag, detail))


def _difference(old: Any, new: dict[str, FileEntry]) -> str:
    """How an existing shard's entries differ from the migrated ones, in words."""
    only_old = sum(1 for k in old if k not in new)
    only_new = sum(1 for k in new if k not in old)
    changed = sum(1 for k, e in new.items() if k in old and old[k] != e)
    return f"{only_new} entries only in the source, {only_old} only in the target, {changed} differ"


async def migrate(
    config: Config, objects: StateObjects, *, to: Target, dry_run: bool, force: bool
) -> Report:
    """Migrate ``config``'s prefix to layout ``to`` through ``objects``."""
    report = Report(to=to, dry_run=dry_run, force=force)
    migration = Migration(config, objects, dry_run=dry_run, force=force)
    try:
        if to == "folders":
            await migration.to_folders(report)
        else:
            await migration.to_single(report)
    except DiscoveryError as exc:
        report.error = str(exc)
    return report


async def run_migrate(config: Config, *, to: Target, dry_run: bool, force: bool) -> Report:
    """:func:`migrate` on clients opened for ``config`` (closed on return)."""
    async with open_clients(config) as clients:
        objects = S3StateObjects.of(clients.s3, config)
        return await migrate(config, objects, to=to, dry_run=dry_run, force=force)


def run_cli(config: Config, *, to: Target, dry_run: bool, force: bool, output: str) -> int:
    """``async-discovery state migrate``: print the report; 0 when done, 1 when refused
    or failed."""
    report = anyio.run(lambda: run_migrate(config, to=to, dry_run=dry_run, force=force))
    if output == "json":
        sys.stdout.write(json.dumps(report.document(), ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(report.text())
    sys.stdout.flush()
    return 0 if report.ok else 1
