"""AWS adapters: the only modules that import aiobotocore or botocore.

They implement :mod:`async_discovery.ports` and translate botocore errors into the
:mod:`async_discovery.errors` tree, so nothing above this package sees a ``ClientError``.
"""

from .clients import AwsClients, open_clients
from .s3 import S3Lister, S3StateObjects, S3StateStore
from .sqs import SqsSender

__all__ = [
    "AwsClients",
    "S3Lister",
    "S3StateObjects",
    "S3StateStore",
    "SqsSender",
    "open_clients",
]
