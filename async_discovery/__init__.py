"""async_discovery: an asynchronous S3 CSV discovery scanner (aiobotocore + anyio).

Layers, one import direction: the pure core (``config``, ``discovery``, ``changes``,
``messages``, ``state``, ``state_codec``, ``resume``, ``summary``, ``metrics``) ← the AWS adapters
(``aws``) and the pipeline (``pipeline``, which sees only ``ports``) ← the entry points
(``runner``, ``handler``, ``cli``, ``demo``).
"""

from ._version import __version__
from .config import Config
from .deadline import Deadline
from .errors import (
    ConfigError,
    DiscoveryError,
    ListingError,
    QueueError,
    StateBucketMismatch,
    StateConflict,
    StateCorrupt,
    StateError,
    StateTooLarge,
    StorageError,
)

__all__ = [
    "Config",
    "ConfigError",
    "Deadline",
    "DiscoveryError",
    "ListingError",
    "QueueError",
    "StateBucketMismatch",
    "StateConflict",
    "StateCorrupt",
    "StateError",
    "StateTooLarge",
    "StorageError",
    "__version__",
]
