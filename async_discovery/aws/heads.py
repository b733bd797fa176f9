"""``HeadObject`` on the source bucket: an object's current version, for the event path."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..changes import strip_etag
from ..errors import StorageError
from ..models import ListedObject
from .errors import AWS_ERRORS, describe, error_code, http_status

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class S3Heads:
    """Reads the current version of objects of one bucket (``s3:GetObject`` permits
    ``HeadObject``; ``s3:ListBucket`` makes a missing key a 404 rather than a 403)."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    async def head(self, key: str) -> ListedObject | None:
        """The object's ETag (no quotes), size and LastModified, as a listing shows them;
        None when it does not exist (404, or a delete marker is its current version)."""
        try:
            resp = await self.client.head_object(Bucket=self.bucket, Key=key)
        except AWS_ERRORS as exc:
            code = error_code(exc)
            if code in ("404", "NoSuchKey") or (not code and http_status(exc) == 404):
                return None
            raise StorageError(
                f"reading s3://{self.bucket}/{key} (HeadObject) failed: {describe(exc)}"
            ) from exc
        return ListedObject(
            key=key,
            etag=strip_etag(str(resp.get("ETag", ""))),
            size=int(resp.get("ContentLength", 0)),
            last_modified=resp.get("LastModified", _EPOCH),
        )
