"""S3 adapters: the paginated lister and the conditional state store."""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, Mapping
from typing import IO, TYPE_CHECKING, Any, cast

from ..changes import strip_etag
from ..errors import ListingError, StateConflict, StateTooLarge, StorageError
from ..ports import ObjectHead, RawPage, StateSink
from .errors import AWS_ERRORS, describe, error_code, http_status
from .list_xml import install, list_page

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

    from ..config import Config


class S3Lister:
    """Lists one bucket with ``ListObjectsV2`` (1,000 keys a page), each page parsed lean.

    The request is botocore's (signed, sent and retried by aiobotocore); the success body
    is parsed by :mod:`.list_xml` for the fields the scanner uses. Keys are asked for
    with ``EncodingType=url`` and decoded as botocore does, so keys with spaces, ``+``,
    ``%``, unicode or control characters come back exactly as stored.
    """

    def __init__(self, client: S3Client, bucket: str, page_size: int = 1000) -> None:
        self.client = client
        self.bucket = bucket
        self.page_size = page_size
        install(client)

    async def pages(
        self, prefix: str, *, delimiter: bool, start_after: str | None = None
    ) -> AsyncGenerator[RawPage, None]:
        """Yield pages of ``prefix``; raise :class:`ListingError` once botocore gives up."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": prefix,
            "MaxKeys": self.page_size,
            "EncodingType": "url",
        }
        if delimiter:
            params["Delimiter"] = "/"
        if start_after:
            params["StartAfter"] = start_after
        try:
            while True:
                page = await list_page(self.client, params)
                yield RawPage(page.objects, page.common_prefixes)
                if not page.truncated:
                    return
                if page.next_token == params.get("ContinuationToken"):
                    # botocore's paginator refuses this too: the listing would loop.
                    raise ListingError(
                        f"listing s3://{self.bucket}/{prefix} failed: the same "
                        "continuation token came back twice"
                    )
                params["ContinuationToken"] = page.next_token
        except AWS_ERRORS as exc:
            code = error_code(exc)
            if code == "NoSuchBucket":
                raise ListingError(f"source bucket {self.bucket!r} does not exist") from exc
            raise ListingError(
                f"listing s3://{self.bucket}/{prefix} failed: {describe(exc)}"
            ) from exc


_CHUNK = 1 << 20  # bytes of the state object read (and decoded) at a time


class _Collector:
    """A sink that keeps every chunk (for :meth:`S3StateStore.load`)."""

    def __init__(self, parts: list[bytes]) -> None:
        self.feed = parts.append


class S3StateStore:
    """The state object: read with its ETag, written with ``If-Match``/``If-None-Match``."""

    def __init__(
        self, client: S3Client, bucket: str, key: str, max_bytes: int, *, role: str = "state bucket"
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.max_bytes = max_bytes
        self.role = role  # how a missing bucket is named: Config.state_bucket_role

    @property
    def name(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"

    async def load(self) -> tuple[bytes | None, str | None]:
        """The state bytes and ETag, or (None, None) when the object does not exist."""
        parts: list[bytes] = []
        found, etag = await self.load_into(_Collector(parts))
        return (b"".join(parts) if found else None), etag

    async def load_into(self, sink: StateSink) -> tuple[bool, str | None]:
        """Feed the state object to ``sink`` as it arrives; (True, ETag), or (False, None)
        when the object does not exist. Over ``max_bytes`` (by ContentLength before
        reading, or by the bytes actually received) raises :class:`StateTooLarge`."""
        try:
            resp = await self.client.get_object(Bucket=self.bucket, Key=self.key)
            length = int(resp.get("ContentLength", 0))
            if length > self.max_bytes:
                resp["Body"].close()
                raise self._too_large(length)
            received = 0
            async with resp["Body"] as stream:
                async for chunk in stream.iter_chunks(_CHUNK):
                    received += len(chunk)
                    if received > self.max_bytes:
                        raise self._too_large(None)
                    sink.feed(chunk)
            return True, resp["ETag"]
        except AWS_ERRORS as exc:
            await self._read_failed(exc)
            return False, None

    async def load_head(self, size: int) -> ObjectHead | None:
        """The first ``size`` bytes (``Range``), the ETag, the whole size (from
        ``Content-Range``) and the user metadata; None when the object does not exist.
        Over ``max_bytes`` raises :class:`StateTooLarge`; an empty object (which no
        range fits) is read whole."""
        try:
            try:
                resp = await self.client.get_object(
                    Bucket=self.bucket, Key=self.key, Range=f"bytes=0-{size - 1}"
                )
            except AWS_ERRORS as exc:
                if error_code(exc) != "InvalidRange":
                    raise
                resp = await self.client.get_object(Bucket=self.bucket, Key=self.key)
            length = int(resp.get("ContentLength", 0))
            whole = _range_total(resp.get("ContentRange"), length)
            if whole > self.max_bytes:
                resp["Body"].close()
                raise self._too_large(whole)
            async with resp["Body"] as stream:
                data = await stream.read()
            return ObjectHead(data, resp["ETag"], whole, dict(resp.get("Metadata", {})))
        except AWS_ERRORS as exc:
            await self._read_failed(exc)
            return None

    def _too_large(self, length: int | None) -> StateTooLarge:
        """``length``: the size announced (None: more bytes arrived than the cap)."""
        if length is None:
            return StateTooLarge(
                f"state object {self.name} is over STATE_MAX_BYTES={self.max_bytes} bytes"
            )
        return StateTooLarge(
            f"state object {self.name} is {length} bytes, over STATE_MAX_BYTES={self.max_bytes}"
        )

    async def _read_failed(self, exc: BaseException) -> None:
        """Return when a failed read means "no such object"; raise otherwise."""
        code = error_code(exc)
        if code in ("NoSuchKey", "404") or (code == "" and http_status(exc) == 404):
            return
        if code == "NoSuchBucket":
            raise StorageError(f"{self.role} {self.bucket!r} does not exist") from exc
        if code == "AccessDenied" or (code == "" and http_status(exc) == 403):
            # S3 hides a missing key behind 403 from a caller who may not list the
            # bucket, so on the first run a least-privilege role sees this. A 403 is
            # "no state" only when a listing of exactly the key shows it absent:
            # reading a real denial as "no state" would resend every file.
            missing = await self._listed_missing()
            if missing:
                return
            if missing is None:
                raise StorageError(
                    f"reading state {self.name} failed: {describe(exc)}; listing the "
                    "key to tell a missing object from a forbidden one was denied too "
                    "(grant s3:ListBucket with s3:prefix = the state key: see "
                    "`async-discovery iam-policy`)"
                ) from exc
        raise StorageError(f"reading state {self.name} failed: {describe(exc)}") from exc

    async def _listed_missing(self) -> bool | None:
        """True when a listing of exactly the state key shows no such object, False when
        it shows one, None when the listing itself fails. The lexically first key under
        the prefix ``key`` is ``key`` itself when it exists, so one key is enough."""
        try:
            resp = await self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key, MaxKeys=1)
        except AWS_ERRORS:
            return None
        return not any(item.get("Key") == self.key for item in resp.get("Contents", ()))

    async def save(
        self, body: bytes, *, if_match: str | None, metadata: Mapping[str, str] | None = None
    ) -> str:
        """Conditional ``PutObject``; a refused condition raises :class:`StateConflict`."""
        return await self.save_stream(io.BytesIO(body), if_match=if_match, metadata=metadata)

    async def save_stream(
        self,
        body: io.RawIOBase | io.BytesIO,
        *,
        if_match: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """:meth:`save` from a seekable body (``state_codec.EncodedBody``): botocore takes the
        Content-Length from ``len()`` or seek/tell and re-reads it by seeking back (CRC32
        checksum, SigV4 payload hash, retries); aiohttp streams it in chunks."""
        condition: dict[str, str] = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            resp = await self.client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=cast("IO[bytes]", body),  # typeshed: RawIOBase is not IO[bytes]
                ContentType="application/json",
                Metadata=dict(metadata or {}),
                **condition,  # type: ignore[arg-type]
            )
        except AWS_ERRORS as exc:
            code = error_code(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or http_status(exc) in (
                409,
                412,
            ):
                raise StateConflict(f"{self.name} changed since it was read ({code})") from exc
            if code == "NoSuchKey" and if_match:
                # Deleted since we read it: also a conflict, resolved by reloading.
                raise StateConflict(f"{self.name} was deleted since it was read") from exc
            if code == "NoSuchBucket":
                raise StorageError(f"{self.role} {self.bucket!r} does not exist") from exc
            raise StorageError(f"writing state {self.name} failed: {describe(exc)}") from exc
        return str(resp.get("ETag", ""))


def _range_total(content_range: str | None, length: int) -> int:
    """The whole object's size from ``Content-Range: bytes 0-16383/1745123`` (a server
    that ignored the range sent the whole object: its ``ContentLength``)."""
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        if total.isdigit():
            return int(total)
    return length


class S3StateObjects:
    """The state objects under one key prefix (``STATE_LAYOUT=folders``): a store per
    key, the keys under a prefix, and deletion (pruned shards, a finished cursor)."""

    def __init__(
        self, client: S3Client, bucket: str, max_bytes: int, *, role: str = "state bucket"
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.max_bytes = max_bytes
        self.role = role

    @classmethod
    def of(cls, client: S3Client, config: Config) -> S3StateObjects:
        """The state objects of ``config``'s state bucket."""
        return cls(
            client, config.state_bucket, config.state_max_bytes, role=config.state_bucket_role
        )

    def store(self, key: str) -> S3StateStore:
        """The conditional store of one object."""
        return S3StateStore(self.client, self.bucket, key, self.max_bytes, role=self.role)

    async def keys(self, prefix: str) -> list[str]:
        """The object keys directly under ``prefix`` (``Delimiter=/``: no deeper keys)."""
        return list(await self.etags(prefix))

    async def etags(self, prefix: str) -> dict[str, str]:
        """The objects directly under ``prefix`` with their ETags (no deeper keys)."""
        found: dict[str, str] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                found.update(
                    (item["Key"], strip_etag(item.get("ETag", "")))
                    for item in page.get("Contents", ())
                )
        except AWS_ERRORS as exc:
            raise StorageError(
                f"listing state objects s3://{self.bucket}/{prefix} failed: {describe(exc)}"
            ) from exc
        return found

    async def prefixes(self, prefix: str) -> list[str]:
        """The common prefixes directly under ``prefix`` (``Delimiter=/``)."""
        found: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                found.extend(cp["Prefix"] for cp in page.get("CommonPrefixes", ()))
        except AWS_ERRORS as exc:
            raise StorageError(
                f"listing state objects s3://{self.bucket}/{prefix} failed: {describe(exc)}"
            ) from exc
        return found

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete one object (a missing one is not an error, as S3 answers); with
        ``if_match`` a conditional delete (S3 general purpose buckets since 2025-09):
        a changed object raises :class:`StateConflict`."""
        try:
            if if_match:
                await self.client.delete_object(
                    Bucket=self.bucket, Key=key, IfMatch=f'"{strip_etag(if_match)}"'
                )
            else:
                await self.client.delete_object(Bucket=self.bucket, Key=key)
        except AWS_ERRORS as exc:
            code = error_code(exc)
            if code == "PreconditionFailed" or http_status(exc) == 412:
                raise StateConflict(f"s3://{self.bucket}/{key} changed since it was seen") from exc
            if code in ("NoSuchKey", "404") or http_status(exc) == 404:
                return  # deleted by another run meanwhile
            raise StorageError(
                f"deleting state object s3://{self.bucket}/{key} failed: {describe(exc)}"
            ) from exc
