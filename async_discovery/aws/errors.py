"""botocore errors → the async_discovery error tree, in one place."""

from __future__ import annotations

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError`` ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int:
    """The HTTP status of a ``ClientError`` (0 for anything else)."""
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a botocore failure."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip().rstrip(":")
    return f"{type(exc).__name__}: {exc}"


# aiohttp and timeout errors can escape botocore's wrapping on a dropped connection.
AWS_ERRORS: tuple[type[BaseException], ...] = (
    ClientError,
    BotoCoreError,
    aiohttp.ClientError,
    TimeoutError,
)
