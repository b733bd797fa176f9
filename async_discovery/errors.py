"""The exception tree of async_discovery.

Every error the scanner raises on purpose derives from :class:`DiscoveryError`, so an
entry point can catch one root and turn it into a 500 summary. botocore's
``ClientError`` never escapes an adapter: ``async_discovery.aws`` maps it to the most
specific class below, ``raise ... from exc``.

    DiscoveryError
    ├── ConfigError            bad or missing configuration (every problem listed)
    ├── StateError             the state object cannot be used
    │   ├── StateCorrupt       not JSON, or not the state schema
    │   ├── StateTooLarge      larger than STATE_MAX_BYTES
    │   ├── StateBucketMismatch  recorded for another source bucket
    │   └── StateConflict      conditional write refused (412/409); retried by the pipeline
    │       └── StateMoved     a range's keys now belong to other shards (another run split it)
    ├── StorageError           S3 failed (missing bucket, access denied, retries exhausted)
    │   └── ListingError       a listing could not be completed
    └── QueueError             SQS failed as a whole (missing queue, access denied)
"""

from __future__ import annotations


class DiscoveryError(Exception):
    """Root of every error async_discovery raises on purpose."""


class ConfigError(DiscoveryError):
    """Configuration is missing or invalid; ``problems`` holds one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))


class StateError(DiscoveryError):
    """The state object cannot be used."""


class StateCorrupt(StateError):
    """The state object is not valid JSON or does not follow the state schema."""


class StateTooLarge(StateError):
    """The state object is larger than the configured cap."""


class StateBucketMismatch(StateError):
    """The state object records a different source bucket than the one scanned."""


class StateConflict(StateError):
    """A conditional state write was refused because another run wrote meanwhile."""


class StateMoved(StateConflict):
    """The shard written or read holds no keys any more: another run split or removed
    it (``STATE_LAYOUT=folders``); its keys now belong where the folder's index says."""


class StorageError(DiscoveryError):
    """An S3 call failed for good (after botocore's retries)."""


class ListingError(StorageError):
    """A listing of the source bucket could not be completed."""


class QueueError(DiscoveryError):
    """SQS refused the queue as a whole (it does not exist, or access is denied)."""
