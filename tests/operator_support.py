"""Helpers for the operator-feature tests (first-run policy, settle time, pruning,
resumable scans, explain): deterministic deadlines, a scanner wired to the real AWS
adapters with an injectable clock, and resume loops.

Everything here talks to the session's moto server; nothing fakes S3 or SQS.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from async_discovery.aws import S3Lister, S3StateStore, SqsSender, open_clients
from async_discovery.config import Config
from async_discovery.deadline import Deadline
from async_discovery.pipeline import Explain, Scanner
from async_discovery.ports import Lister, Sender
from async_discovery.summary import RunStats, build_summary

from .helpers import MotoEnv, scan


def candidate_budget(stats: RunStats, candidates: int) -> Deadline:
    """A deadline that expires once the run has considered ``candidates`` candidates.

    It measures the workers' progress, as a Lambda's clock does, but deterministically:
    the page being handled is finished, the pages still queued are dropped, so with one
    worker and pages of P files a run handles exactly ``ceil(candidates / P)`` pages.
    """

    def remaining() -> float:
        return 0.0 if stats.candidates >= candidates else 3600.0

    return Deadline(remaining, margin=1.0)


async def scan_with_budget(config: Config, candidates: int) -> dict[str, Any]:
    """One run (through the real runner) truncated after ``candidates`` candidates."""
    stats = RunStats()
    return await scan(config, stats=stats, deadline=candidate_budget(stats, candidates))


@dataclasses.dataclass
class Resumed:
    """What a sequence of runs until a complete pass produced."""

    summaries: list[dict[str, Any]]
    sent: Counter[str]  # key -> times it was sent over all runs

    @property
    def runs(self) -> int:
        return len(self.summaries)


async def run_until_complete(
    env: MotoEnv, config: Config, queue_url: str, candidates: int, max_runs: int = 40
) -> Resumed:
    """Run with a budget until a run is no longer truncated; drain the queue."""
    summaries: list[dict[str, Any]] = []
    for _ in range(max_runs):
        summary = await scan_with_budget(config, candidates)
        assert summary["statusCode"] == 200, summary
        summaries.append(summary)
        if not summary["truncated"]:
            break
    else:
        raise AssertionError(f"no complete pass in {max_runs} runs: {summaries[-1]}")
    sent = Counter(body["key"] for body in env.bodies(queue_url))
    return Resumed(summaries, sent)


async def run_scanner(
    config: Config,
    *,
    clock: Callable[[], datetime] | None = None,
    explain: Explain | None = None,
    wrap_lister: Callable[[Lister], Lister] | None = None,
    wrap_sender: Callable[[Sender], Sender] | None = None,
) -> dict[str, Any]:
    """Like the runner, but with an injectable clock (settle-time tests), and the real
    lister and sender optionally wrapped (to act at a chosen point of the run)."""
    stats = RunStats()
    async with open_clients(config, stats.api_calls) as clients:
        lister: Lister = S3Lister(clients.s3, config.source_bucket, page_size=config.list_page_size)
        if wrap_lister is not None:
            lister = wrap_lister(lister)
        sender: Sender | None = None
        if not config.dry_run and config.queue_url:
            sender = SqsSender(clients.sqs, config.queue_url)
            if wrap_sender is not None:
                sender = wrap_sender(sender)
        store = S3StateStore(
            clients.s3, config.state_bucket, config.state_key, config.state_max_bytes
        )
        kwargs: dict[str, Any] = {"stats": stats, "explain": explain}
        if clock is not None:
            kwargs["clock"] = clock
        scanner = Scanner(config, lister, store, sender, **kwargs)
        error = await scanner.run()
    return build_summary(stats, 0.0, error=error, dry_run=config.dry_run)


def seed_folders(env: MotoEnv, bucket: str, folders: int, files: int) -> list[str]:
    """``incoming/fNN/kNNN.csv`` for each folder and file; returns the keys."""
    keys = [f"incoming/f{f:02d}/k{k:03d}.csv" for f in range(folders) for k in range(files)]
    env.put_many(bucket, keys)
    return keys
