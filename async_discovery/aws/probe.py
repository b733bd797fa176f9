"""The doctor's adapter: single S3 and SQS calls whose outcome is reported, not acted on.

``async-discovery doctor`` asks the store and the queue questions a scan never asks
(does a second ``If-None-Match: *`` create get refused? does a listing continued one
key at a time give the keys one page gives?), so it needs calls the scan's adapters do
not offer. They live here, with botocore's ``ClientError`` translated into
:class:`ProbeError` (a :class:`~async_discovery.errors.DiscoveryError`) that keeps the
service's code and HTTP status, so the doctor can tell a refusal (412/409) from a denial
(403) from a missing bucket or queue without seeing botocore.

Every S3 answer's ``Date`` header is kept (:attr:`Probe.clock`) to compare the store's
clock with this machine's.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    SSOError,
    TokenRetrievalError,
)

from ..config import Config
from ..errors import DiscoveryError
from ..ports import StateSink
from .clients import AwsClients, open_clients
from .errors import AWS_ERRORS, describe, error_code, http_status
from .s3 import S3StateObjects

_DENIED = frozenset(
    {"AccessDenied", "AccessDeniedException", "AWS.SimpleQueueService.AccessDenied"}
)
_MISSING = frozenset(
    {"NoSuchBucket", "NoSuchKey", "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"}
)
_REFUSED = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
# The answers to a request whose credentials the service does not accept: an unknown
# access key (S3: InvalidAccessKeyId; SQS and other query/JSON services:
# InvalidClientTokenId, UnrecognizedClientException), a wrong secret, an expired or
# malformed session token.
_CREDENTIALS = frozenset(
    {
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
    }
)
# botocore finding no usable credentials before any request is sent.
_NO_CREDENTIALS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    TokenRetrievalError,
    SSOError,
)
# A query-protocol XML error body that a JSON-protocol client could not parse (moto
# answers an SQS JSON request refused for its credentials so): botocore then reports
# the HTTP status as the code and the raw body as the message.
_RAW_CODE = re.compile(r"<Code>([^<]+)</Code>")


class ProbeError(DiscoveryError):
    """A doctor's call failed: ``operation`` (e.g. ``PutObject``), the service's ``code``
    and HTTP ``status`` (``''`` / 0 when no answer came, e.g. a dropped connection)."""

    def __init__(self, operation: str, message: str, *, code: str = "", status: int = 0) -> None:
        super().__init__(f"{operation}: {message}")
        self.operation = operation
        self.code = code
        self.status = status

    @property
    def denied(self) -> bool:
        """IAM (or a bucket or queue policy) refused the call."""
        return self.code in _DENIED or (self.code == "" and self.status == 403)

    @property
    def missing(self) -> bool:
        """The bucket, key or queue does not exist."""
        return self.code in _MISSING

    @property
    def refused(self) -> bool:
        """A conditional write was refused (412 Precondition Failed or 409 Conflict)."""
        return self.code in _REFUSED or self.status in (409, 412)


def access_denied(exc: BaseException) -> bool:
    """True when ``exc``, or an error it was raised from, is an access denial; for the
    errors of the scan's own adapters (:class:`~.s3.S3StateStore`), which keep the
    botocore error as their cause."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ProbeError):
            return seen.denied
        code = error_code(seen)
        if code in _DENIED or (code == "" and http_status(seen) == 403):
            return True
        seen = seen.__cause__
    return False


def credentials_refused(exc: BaseException) -> bool:
    """True when ``exc``, or an error it was raised from, says the credentials were
    refused (unknown key, wrong secret, expired token) or none were found: every other
    call fails the same way, whatever the permissions."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _NO_CREDENTIALS):
            return True
        code = error_code(seen)
        if code.isdigit() and isinstance(seen, ClientError):
            raw = _RAW_CODE.search(str(seen.response.get("Error", {}).get("Message", "")))
            code = raw.group(1) if raw else code
        if code in _CREDENTIALS:
            return True
        seen = seen.__cause__
    return False


def _translate(operation: str, exc: BaseException) -> ProbeError:
    return ProbeError(operation, describe(exc), code=error_code(exc), status=http_status(exc))


@dataclasses.dataclass(frozen=True, slots=True)
class ClockSample:
    """The store's ``Date`` header and this machine's clock before and after the call."""

    server: datetime
    sent: float  # time.time() when the request went out
    received: float  # time.time() when the answer was in

    @property
    def skew(self) -> float:
        """Seconds the store's clock is ahead of this machine's (negative: behind).
        ``Date`` has whole seconds, cut down: the server's moment is ``Date + 0.5 s``
        give or take half a second, the local one the midpoint of the call."""
        return self.server.timestamp() + 0.5 - (self.sent + self.received) / 2

    @property
    def uncertainty(self) -> float:
        """Half a second of ``Date`` rounding plus half the round trip."""
        return 0.5 + (self.received - self.sent) / 2


@dataclasses.dataclass(frozen=True, slots=True)
class Listing:
    """One ``ListObjectsV2`` page: keys, common prefixes, and whether more follow."""

    keys: list[str]
    prefixes: list[str]
    truncated: bool


class Probe:
    """The doctor's calls on one run's clients."""

    def __init__(self, clients: AwsClients, config: Config) -> None:
        self.s3 = clients.s3
        self.sqs = clients.sqs
        self.config = config
        self.clock: ClockSample | None = None

    @property
    def region(self) -> str:
        """The region the clients resolved (for ARNs in messages)."""
        return str(self.sqs.meta.region_name)

    def _sample(self, resp: Mapping[str, Any], sent: float) -> None:
        date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if not date:
            return
        try:
            server = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return
        self.clock = ClockSample(server=server, sent=sent, received=time.time())

    async def list_page(
        self, bucket: str, prefix: str, *, delimiter: bool, max_keys: int = 1000
    ) -> Listing:
        """The first ``ListObjectsV2`` page of ``prefix`` (``Delimiter=/`` if asked)."""
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            params["Delimiter"] = "/"
        sent = time.time()
        try:
            resp = await self.s3.list_objects_v2(**params)
        except AWS_ERRORS as exc:
            raise _translate("ListObjectsV2", exc) from exc
        self._sample(resp, sent)
        return Listing(
            keys=[item["Key"] for item in resp.get("Contents", ())],
            prefixes=[cp["Prefix"] for cp in resp.get("CommonPrefixes", ())],
            truncated=bool(resp.get("IsTruncated")),
        )

    async def list_keys(
        self, bucket: str, prefix: str, *, page_size: int, limit: int, until: str | None = None
    ) -> list[str]:
        """The first keys of ``prefix``, ``page_size`` a page, each page asked for with the
        previous page's continuation token: ``limit`` of them, or (``until``) up to the
        first key at or past ``until``, ``limit`` at most. botocore's paginator sends
        ``EncodingType=url`` and decodes the keys, as the scan's lister does."""
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
        )
        try:
            async for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", ()))
                if len(keys) >= limit or (until is not None and keys and keys[-1] >= until):
                    break
        except AWS_ERRORS as exc:
            raise _translate("ListObjectsV2", exc) from exc
        return keys[:limit]

    async def list_sizes(
        self, bucket: str, prefix: str, *, limit: int
    ) -> tuple[list[tuple[str, int]], bool]:
        """The keys directly under ``prefix`` (``Delimiter=/``) with their sizes, ``limit``
        at most, and whether more were left unlisted."""
        found: list[tuple[str, int]] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        try:
            async for page in pages:
                found.extend(
                    (item["Key"], int(item.get("Size", 0))) for item in page.get("Contents", ())
                )
                if len(found) > limit:
                    return found[:limit], True
        except AWS_ERRORS as exc:
            raise _translate("ListObjectsV2", exc) from exc
        return found, False

    async def listed(self, bucket: str, key: str) -> bool:
        """True when a listing of exactly ``key`` (``Prefix=key``, one key) shows it."""
        try:
            resp = await self.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        except AWS_ERRORS as exc:
            raise _translate("ListObjectsV2", exc) from exc
        return any(item.get("Key") == key for item in resp.get("Contents", ()))

    async def load_state(self, sink: StateSink, key: str | None = None) -> tuple[bool, str | None]:
        """The state object (or the state object at ``key``: a shard, a run object) fed to
        ``sink``, read as a scan reads it (:meth:`S3StateStore.load_into`: its errors, its
        403-then-list rule)."""
        config = self.config
        key = config.state_object_key if key is None else key
        store = S3StateObjects.of(self.s3, config).store(key)
        return await store.load_into(sink)

    async def put(
        self, bucket: str, key: str, body: bytes, *, if_match: str | None = None, create: bool
    ) -> str:
        """``PutObject`` with ``If-None-Match: *`` (``create``) or ``If-Match``; the ETag."""
        condition: dict[str, str] = {}
        if create:
            condition["IfNoneMatch"] = "*"
        if if_match is not None:
            condition["IfMatch"] = if_match
        sent = time.time()
        try:
            resp = await self.s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentType="text/plain",
                **condition,  # type: ignore[arg-type]
            )
        except AWS_ERRORS as exc:
            raise _translate("PutObject", exc) from exc
        self._sample(resp, sent)
        return str(resp.get("ETag", ""))

    async def delete(self, bucket: str, key: str) -> None:
        """``DeleteObject`` (a missing key is no error, as in S3)."""
        try:
            await self.s3.delete_object(Bucket=bucket, Key=key)
        except AWS_ERRORS as exc:
            raise _translate("DeleteObject", exc) from exc

    async def queue_attributes(self, queue_url: str) -> dict[str, str]:
        """Every attribute of the queue (``GetQueueAttributes``, ``All``)."""
        try:
            resp = await self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
        except AWS_ERRORS as exc:
            raise _translate("GetQueueAttributes", exc) from exc
        return {str(name): value for name, value in resp.get("Attributes", {}).items()}

    async def send_message(
        self,
        queue_url: str,
        body: str,
        attributes: Mapping[str, str],
        *,
        group_id: str | None = None,
        dedup_id: str | None = None,
    ) -> str:
        """One message, through ``SendMessageBatch`` as a scan sends; its MessageId."""
        entry: dict[str, Any] = {
            "Id": "0",
            "MessageBody": body,
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": value}
                for name, value in attributes.items()
            },
        }
        if group_id is not None:
            entry["MessageGroupId"] = group_id
        if dedup_id is not None:
            entry["MessageDeduplicationId"] = dedup_id
        try:
            resp = await self.sqs.send_message_batch(
                QueueUrl=queue_url,
                Entries=[entry],  # type: ignore[list-item]
            )
        except AWS_ERRORS as exc:
            raise _translate("SendMessageBatch", exc) from exc
        for failed in resp.get("Failed", ()):
            raise ProbeError(
                "SendMessageBatch",
                f"{failed.get('Code', 'Failed')}: {failed.get('Message', '')}".strip(),
                code=str(failed.get("Code", "")),
            )
        return str(resp["Successful"][0]["MessageId"])


@asynccontextmanager
async def open_probe(config: Config) -> AsyncIterator[Probe]:
    """A :class:`Probe` on clients opened for ``config`` (closed on exit)."""
    async with open_clients(config) as clients:
        yield Probe(clients, config)
