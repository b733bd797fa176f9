"""Client construction: one aiobotocore session per run over the process's parsed
models, one pool sized to the work.

Clients are opened per run with ``async with`` (a Lambda handler that calls
``anyio.run`` per invocation must not reuse a client bound to a closed event loop).
The botocore data loader, which parses and caches the service models, is kept for the
life of the process (:func:`process_loader`), so a warm invocation does not parse them
again.
Retries, timeouts, endpoint resolution (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL_SQS``) and credentials are botocore's own; we only set them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from ..config import Config

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sqs import SQSClient

FALLBACK_REGION = "us-east-1"


@dataclasses.dataclass(frozen=True, slots=True)
class AwsClients:
    """The two clients one run uses."""

    s3: S3Client
    sqs: SQSClient


def client_config(config: Config) -> AioConfig:
    """botocore retry mode, attempts, timeouts and a pool sized to the concurrency.

    ``MAX_ATTEMPTS`` counts every attempt, the first included, like ``AWS_MAX_ATTEMPTS``:
    that is botocore's ``total_max_attempts`` (its ``max_attempts`` key counts retries
    only, so it would make one attempt more than configured).
    """
    return AioConfig(
        retries={"mode": config.retry_mode, "total_max_attempts": config.max_attempts},
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_pool_connections=config.pool_size,
    )


@functools.cache
def process_loader() -> Any:
    """The botocore data loader every run of this process shares (a ``Loader``).

    A new session's loader parses the S3 and SQS models, endpoint rules and partitions
    again: ~0.1 s of CPU on every warm Lambda invocation (docs/performance.md). The
    loader holds plain data bound to no event loop, so it is safe to share. The session
    is not shared: it caches the credentials, and botocore's refreshable credentials
    hold an ``asyncio.Lock`` that binds to the event loop of their first contended
    refresh, so a session reused across ``anyio.run`` calls can fail a later refresh
    ("bound to a different event loop").
    """
    return get_session().get_component("data_loader")


@asynccontextmanager
async def open_clients(
    config: Config, api_calls: Counter[str] | None = None
) -> AsyncIterator[AwsClients]:
    """Open S3 and SQS clients for one run; count API calls by operation if asked."""
    session = get_session()
    session.register_component("data_loader", process_loader())
    # botocore parses every LastModified of a listing with dateutil (~0.3 ms each: most
    # of the client CPU of a listing); S3's ISO 8601 timestamps take a C call instead.
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp
    )
    # The standard chain decides the region; without one anywhere (a bare laptop
    # against moto), fall back instead of failing on an irrelevant setting.
    region = session.get_config_variable("region") or os.environ.get("AWS_DEFAULT_REGION")
    kwargs: dict[str, Any] = {
        "region_name": region or FALLBACK_REGION,
        "config": client_config(config),
    }
    if config.endpoint_url:
        kwargs["endpoint_url"] = config.endpoint_url
    async with AsyncExitStack() as stack:
        s3 = await stack.enter_async_context(session.create_client("s3", **kwargs))
        sqs = await stack.enter_async_context(session.create_client("sqs", **kwargs))
        if api_calls is not None:
            for client in (s3, sqs):
                count_calls(client, api_calls)
        yield AwsClients(s3=s3, sqs=sqs)


def parse_timestamp(value: Any) -> datetime:
    """A response timestamp: ISO 8601 (what S3 lists) natively, else botocore's parser.

    Always aware: a timestamp without a zone (some S3-compatible stores omit the ``Z``
    S3 sends) is taken as UTC, as S3 means it, so comparing it with an aware instant
    (``MIN_OBJECT_AGE_SECONDS``, ``INITIAL_SCAN=since:``) works. botocore's own parser
    would give a naive datetime there.
    """
    moment: datetime
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = _http_date(value) or botocore_parse_timestamp(value)
    else:
        moment = botocore_parse_timestamp(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _http_date(value: str) -> datetime | None:
    """An HTTP date (``Last-Modified`` of a ``GetObject``), parsed by the standard library
    (a hundred times cheaper than botocore's dateutil fallback); None when it is not one."""
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def count_calls(client: Any, counter: Counter[str]) -> None:
    """Count ``client``'s API calls by operation into ``counter`` (boto3 clients too)."""

    # "before-call" fires once per API call (not per retry attempt).
    def on_call(model: Any, **_: Any) -> None:
        counter[model.name] += 1

    client.meta.events.register("before-call.*.*", on_call)
