"""Plain S3 object reads and writes: run objects that are replaced whole, with no
condition (the fan-out plan), and the fan-out's result files. State shards and the
state object go through :class:`S3StateStore`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import StorageError
from .errors import AWS_ERRORS, describe, error_code

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


async def put_json(
    client: S3Client, bucket: str, key: str, body: bytes, *, role: str = "state bucket"
) -> str:
    """Write ``body`` (JSON) to ``s3://bucket/key``, replacing any object there; return
    the new ETag. Raises :class:`StorageError` once botocore gives up (a missing bucket
    named by its ``role``)."""
    try:
        resp = await client.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType="application/json"
        )
    except AWS_ERRORS as exc:
        if error_code(exc) == "NoSuchBucket":
            raise StorageError(f"{role} {bucket!r} does not exist") from exc
        raise StorageError(f"writing s3://{bucket}/{key} failed: {describe(exc)}") from exc
    return str(resp.get("ETag", "")).strip('"')


async def get_bytes(client: S3Client, bucket: str, key: str, max_bytes: int) -> bytes:
    """The whole body of ``s3://bucket/key``, refused past ``max_bytes``. Raises
    :class:`StorageError` for a missing object or once botocore gives up."""
    try:
        resp = await client.get_object(Bucket=bucket, Key=key)
        if int(resp.get("ContentLength", 0)) > max_bytes:
            resp["Body"].close()
            raise StorageError(
                f"s3://{bucket}/{key} holds {resp['ContentLength']:,} bytes, "
                f"more than the {max_bytes:,} read whole"
            )
        async with resp["Body"] as body:
            data: bytes = await body.read()
            return data
    except AWS_ERRORS as exc:
        raise StorageError(f"reading s3://{bucket}/{key} failed: {describe(exc)}") from exc
