"""The plan stage: the listing strategy and the listing jobs, from config and cursor.

``LIST_STRATEGY=folders`` (or ``auto`` below ``FOLDER_THRESHOLD`` folders) lists each
non-skipped folder on its own, found by one ``Delimiter`` listing of the prefix (the
*discovery*); ``flat`` lists the whole prefix in one listing. A resumed pass (a saved
cursor) takes its unfinished folders first, then the folders it has not begun.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import aclosing
from datetime import datetime
from typing import Any

from ..config import Config, InitialScan, parse_initial_scan
from ..discovery import Verdict
from ..messages import iso_utc
from ..ports import Lister, RawPage
from ..ranges import Span
from ..resume import folder_sort_key, pending_from_cursor
from .classify import account, classify_page
from .context import RunContext

log = logging.getLogger("async_discovery")


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """One listing: a folder's keys after ``start_after`` up to ``until`` (both None: the
    whole folder), or the flat listing of the prefix (``folder`` None).

    Under ``STATE_LAYOUT=folders`` a job is cut at the folder's range bounds as it starts
    (:mod:`async_discovery.ranges`), so each listing decides against one state unit.
    ``whole``: its state must be read whole, not by its fingerprint (its listing was cut
    short while held for the fingerprint: listing it held again would never progress).
    """

    folder: str | None
    start_after: str | None = None
    until: str | None = None
    whole: bool = False

    @property
    def span(self) -> Span:
        """The keys this job lists."""
        return Span(self.start_after, self.until)


@dataclasses.dataclass(slots=True)
class Plan:
    """The jobs of one run and what the cursor needs to know about them."""

    strategy: str  # "folders" or "flat"
    jobs: list[Job]
    after_folder: str | None = None  # the last folder (in S3 order) a lister took
    discovered_until: str | None = None  # the last key or folder the discovery saw
    # Jobs not taken yet, in the order they would be (a job a lister cut at a range
    # bound leaves the rest of its folder here too): the cursor keeps them pending.
    untaken: dict[Job, None] = dataclasses.field(default_factory=dict)
    # Every folder the discovery saw (skipped ones too), and whether it saw them all:
    # only then may the shards of vanished folders be deleted.
    seen: set[str] = dataclasses.field(default_factory=set)
    discovery_complete: bool = False

    def taken(self, job: Job) -> None:
        """A lister took ``job``: from now on its progress decides the cursor."""
        if job.folder is None:
            return
        self.untaken.pop(job, None)
        if self.after_folder is None or folder_sort_key(job.folder) > folder_sort_key(
            self.after_folder
        ):
            self.after_folder = job.folder


async def make_plan(
    ctx: RunContext,
    lister: Lister,
    cursor: dict[str, Any] | None,
    items: list[Job] | None = None,
) -> Plan:
    """The plan of this run: exactly ``items`` (a fan-out child), or the prefix's folders
    (raises ``ListingError`` when the discovery listing fails)."""
    cfg = ctx.config
    if cursor and cursor.get("strategy") == "flat":
        start = cursor.get("start_after")
        return Plan("flat", [Job(None, str(start) if start else None)])
    if cfg.list_strategy == "flat":
        return Plan("flat", [Job(None)])
    if items is not None:  # exactly these folders or ranges (a fan-out child)
        plan = Plan("folders", [job for job in items if job.folder not in cfg.skip_folders])
        plan.untaken = dict.fromkeys(plan.jobs)
        return plan
    after = cursor.get("after_folder") if cursor else None
    until = cursor.get("discovered_until") if cursor else None
    plan = Plan("folders", [], str(after) if after else None, until or None)
    folders = await _discover(ctx, lister, plan)
    if folders is None:
        return Plan("flat", [Job(None)])
    pending = [Job(p.folder, p.after, p.until, p.whole) for p in pending_from_cursor(cursor)]
    plan.jobs = [job for job in pending if job.folder not in cfg.skip_folders]
    started = {job.folder for job in pending}
    for name in folders:
        if name in started:
            continue
        if plan.after_folder is not None and folder_sort_key(name) <= folder_sort_key(
            plan.after_folder
        ):
            continue
        plan.jobs.append(Job(name))
    plan.untaken = dict.fromkeys(job for job in plan.jobs if job.folder is not None)
    return plan


async def _discover(ctx: RunContext, lister: Lister, plan: Plan) -> list[str] | None:
    """The folders of the prefix, from one ``Delimiter`` listing (None: list flat).

    A resumed pass starts after what it already covered (``discovered_until``, or else
    after the last folder started), so a discovery too long for one invocation still
    advances. Top-level objects are classified page by page (a prefix may hold millions
    of them), and the deadline is checked between pages: a discovery cut short leaves
    the folders found so far pending.
    """
    cfg = ctx.config
    start = plan.discovered_until
    if not start and plan.after_folder is not None:
        start = cfg.prefix + plan.after_folder + "/"
    limit = cfg.folder_threshold if cfg.list_strategy == "auto" else None
    if cfg.state_layout == "folders":
        limit = None  # a shard per folder: always list folder by folder
    folders: list[str] = []
    plan.discovery_complete = start is None
    listing = lister.pages(cfg.prefix, delimiter=True, start_after=start)
    async with aclosing(listing) as pages:
        async for raw in pages:
            for cp in raw.common_prefixes:
                name = cp[len(cfg.prefix) :].rstrip("/")
                if "/" in name or not name:
                    ctx.stats.count_ignored(Verdict.DEEP)
                elif name in cfg.skip_folders:
                    ctx.tally.ignored(cp, Verdict.SKIPPED_FOLDER)  # never listed: once
                    plan.seen.add(name)
                else:
                    folders.append(name)
                    plan.seen.add(name)
            # Top-level objects: listed only here, never by the folder listings.
            page = classify_page(ctx, RawPage(raw.objects, []), None, 0)
            account(ctx, page)
            if limit is not None and len(folders) > limit:
                log.info(
                    "many folders: flat listing",
                    extra={"event": "strategy", "strategy": "flat", "threshold": limit},
                )
                return None
            seen = [page.last_key, *raw.common_prefixes[-1:]]
            plan.discovered_until = max(filter(None, seen), default=plan.discovered_until)
            if ctx.stopping():
                plan.discovery_complete = False
                break
    return folders


@dataclasses.dataclass(frozen=True, slots=True)
class FirstRun:
    """The first-run policy in force for this pass (``INITIAL_SCAN``, or the one a
    resumed first pass saved in its cursor): objects modified before ``mark_before`` are
    marked, not sent."""

    policy: InitialScan
    mark_before: datetime

    @classmethod
    def of(
        cls, config: Config, *, first: bool, cursor: dict[str, Any] | None, started: datetime
    ) -> FirstRun | None:
        """The policy for a run (``first``: no state object exists yet), or None."""
        policy: InitialScan | None = None
        if first:
            policy = config.initial_scan
        elif cursor and cursor.get("initial_scan"):
            # A first pass cut short keeps its policy (the state codec checked it parses).
            policy = parse_initial_scan(str(cursor["initial_scan"]), [])
        if policy is None or policy.mode == "all":
            return None
        # Only objects older than the pass are marked; one written or overwritten while
        # it runs is sent. LastModified has whole seconds, so the start is rounded down:
        # a file written in the second the pass began is sent.
        return cls(policy, policy.since or started.replace(microsecond=0))

    def cursor_text(self) -> str:
        """The policy a resumed pass continues with: ``mark-existing`` continues as
        ``since:<start of this pass>``, so a file that arrives between two runs of one
        pass is sent, not marked."""
        if self.policy.mode == "mark-existing":
            return "since:" + iso_utc(self.mark_before)
        return str(self.policy)
