"""Wires a :class:`~async_discovery.config.Config` to the AWS adapters and the pipeline.

The entry points (Lambda handler, CLI, demo, bench) all call :func:`run_scan` for a
scan and :func:`run_events` for a batch of S3 notifications; neither raises for a
failure of the run: an expected one (a :class:`DiscoveryError`) and
an unexpected one (a bug, or data or a server answer nothing anticipated) both return
the summary with a 500 instead, the latter with its traceback in the log.
Cancellation and ``KeyboardInterrupt`` (not ``Exception``) still propagate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TextIO

from .aws import AwsClients, S3Lister, S3StateObjects, SqsSender, open_clients
from .aws.heads import S3Heads
from .config import Config
from .deadline import Deadline
from .errors import ConfigError, DiscoveryError
from .events import EventBatch
from .logs import emit_line
from .metrics import SERVICE, emf_record, events_emf_record
from .notifications import SqsRecord
from .pipeline import Explain, Scanner
from .stages.plan import Job
from .summary import EventStats, RunStats, build_events_summary, build_summary

log = logging.getLogger("async_discovery")


async def run_scan(
    config: Config,
    *,
    deadline: Deadline | None = None,
    explain: Explain | None = None,
    stats: RunStats | None = None,
    metrics_stream: TextIO | None = None,
    emit_metrics: bool = True,
    service: str = SERVICE,
    items: list[Job] | None = None,
) -> dict[str, Any]:
    """One complete run: returns the summary dict (statusCode 200, 207 or 500).

    ``service``: the EMF record's ``Service`` dimension (the Lambda handler passes the
    function's name, so that two deployments in one account keep their metrics apart);
    ``items``: the fan-out items to scan exactly (see :class:`~.pipeline.Scanner`)."""
    started = time.perf_counter()
    stats = stats if stats is not None else RunStats()
    error: str | None
    try:
        async with open_clients(config, stats.api_calls) as clients:
            sender = None
            if not config.dry_run and config.queue_url:
                sender = SqsSender(clients.sqs, config.queue_url)
            state = S3StateObjects.of(clients.s3, config)
            scanner = Scanner(
                config,
                S3Lister(clients.s3, config.source_bucket, page_size=config.list_page_size),
                state.store(config.state_object_key),
                sender,
                objects=state if config.state_layout == "folders" else None,
                stats=stats,
                deadline=deadline,
                explain=explain,
                items=items,
            )
            error = await scanner.run()
    except DiscoveryError as exc:
        error = str(exc)
    except Exception as exc:
        # Includes an ExceptionGroup from a task group (a BaseExceptionGroup that holds
        # a cancellation or KeyboardInterrupt is no Exception and propagates).
        error = unexpected_error(exc)
        log.exception("scan failed unexpectedly", extra={"event": "scan_crash", "error": error})
    if error is None:
        _notice_empty_listing(config, stats)
    seconds = time.perf_counter() - started
    summary = build_summary(stats, seconds, error=error, dry_run=config.dry_run)
    log.info("scan finished", extra={"event": "scan_summary", **summary})
    if emit_metrics:
        record = emf_record(stats, seconds, status=summary["statusCode"], service=service)
        emit_line(record, metrics_stream)
    return summary


def _notice_empty_listing(config: Config, stats: RunStats) -> None:
    """A complete run that found no object at all under the prefix (a misspelt
    ``S3_PREFIX``, the wrong bucket, folders that do not exist) succeeds doing nothing:
    say so in the log and in the summary's ``notices``, without failing the run (a
    prefix whose files are consumed and deleted is empty between arrivals)."""
    if stats.truncated or stats.folder_errors or stats.listed or sum(stats.ignored.values()):
        return
    where = f"s3://{config.source_bucket}/{config.prefix}"
    if config.folders is not None:
        names = ", ".join(sorted(config.folders))
        notice = f"nothing listed in the folders {names} of {where}: check the folder names"
    else:
        notice = f"nothing listed under {where}: check S3_PREFIX and S3_SOURCE_BUCKET"
    stats.notices.append(notice)
    log.warning(notice, extra={"event": "empty_listing", "bucket": config.source_bucket})


async def run_events(
    config: Config,
    records: Sequence[Mapping[str, Any] | SqsRecord],
    *,
    deadline: Deadline | None = None,
    clients: AwsClients | None = None,
    stats: RunStats | None = None,
    metrics_stream: TextIO | None = None,
    emit_metrics: bool = True,
    service: str = SERVICE,
) -> tuple[list[str], dict[str, Any]]:
    """One batch of S3 notifications: the message ids to deliver again, and the batch's
    summary (also its log line and EMF record). ``clients``: open ones to reuse (the
    ``listen`` loop), else opened for the batch. An error nothing expected fails every
    record (statusCode 500), so SQS delivers the whole batch again."""
    started = time.perf_counter()
    stats = stats if stats is not None else RunStats()
    batch: EventBatch | None = None
    error: str | None = None
    try:
        async with _clients_for(config, stats, clients) as aws:
            state = S3StateObjects.of(aws.s3, config)
            sender = SqsSender(aws.sqs, config.queue_url) if config.queue_url else None
            batch = EventBatch(
                config,
                S3Heads(aws.s3, config.source_bucket),
                state.store(config.state_object_key),
                sender,
                objects=state if config.state_layout == "folders" else None,
                stats=stats,
                deadline=deadline,
            )
            failed = await batch.run(records)
    except Exception as exc:  # as run_scan: a bug or an unforeseen answer fails the batch
        error = unexpected_error(exc)
        log.exception("events batch failed", extra={"event": "events_crash", "error": error})
        failed = list(dict.fromkeys(record_ids(records)))
    events = batch.events if batch is not None else EventStats()
    if error is not None:
        events.records, events.failed_records = len(records), len(failed)
    seconds = time.perf_counter() - started
    summary = build_events_summary(stats, events, seconds, error=error)
    log.info("events batch", extra={"event": "events_summary", **summary})
    if emit_metrics:
        record = events_emf_record(
            stats, events, seconds, status=summary["statusCode"], service=service
        )
        emit_line(record, metrics_stream)
    return failed, summary


@asynccontextmanager
async def _clients_for(
    config: Config, stats: RunStats, clients: AwsClients | None
) -> AsyncIterator[AwsClients]:
    if clients is not None:
        yield clients
        return
    async with open_clients(config, stats.api_calls) as opened:
        yield opened


def record_ids(records: Sequence[Mapping[str, Any] | SqsRecord]) -> list[str]:
    """The message ids of an events batch's records, in order."""
    return [
        r.message_id if isinstance(r, SqsRecord) else str(r.get("messageId", "")) for r in records
    ]


def unexpected_error(exc: BaseException) -> str:
    """The summary's ``error`` for an exception nothing expected: type and message of
    each underlying exception (exception groups unwrapped)."""
    leaves = list(_leaves(exc))
    return "unexpected error: " + "; ".join(
        str(leaf) if isinstance(leaf, DiscoveryError) else f"{type(leaf).__name__}: {leaf}"
        for leaf in leaves
    )


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def config_error_summary(exc: ConfigError, seconds: float = 0.0) -> dict[str, Any]:
    """The 500 summary for a configuration that could not be built."""
    summary = build_summary(RunStats(), seconds, error=str(exc))
    summary["problems"] = exc.problems
    return summary
