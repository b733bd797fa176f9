"""Fixtures: a real moto server over HTTP on a free loopback port, and helpers around it.

The server runs in a process of its own (``async-discovery moto-server``: moto with
the bench's queue-counter patch, whose SQS sends and receives do not slow down as a
queue fills), so its CPU runs beside the tests' instead of taking turns with them.
Setup and inspection use boto3 (synchronous, straight to moto); the code under test uses
aiobotocore, possibly through the fault proxy. Every test gets its own bucket and queue,
so tests never see each other's data and the session-wide server is shared safely.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack

import pytest

from async_discovery.testing.fault_proxy import FaultProxy, ThreadedFaultProxy
from async_discovery.testing.moto_server import moto_server_process, use_fake_credentials

from .helpers import SCANNER_VARIABLES, MotoEnv
from .seaweedfs import SeaweedFSUnavailable, seaweedfs_server, split_env


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto server started for this test session on 127.0.0.1, in its own
    process (tests/test_state_machine.py starts an in-process one for Step Functions)."""
    saved = dict(os.environ)
    use_fake_credentials()
    # A developer's AWS_ENDPOINT_URL or profile must not leak into the tests.
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name == "AWS_CONFIG_FILE":
            del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    try:
        with moto_server_process(module="async_discovery.bench.moto_main") as (url, _pid):
            yield url
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def env(moto_endpoint: str) -> MotoEnv:
    """Helpers bound to the session's moto server."""
    return MotoEnv(moto_endpoint)


@pytest.fixture
def bucket(env: MotoEnv) -> str:
    """A fresh, empty source bucket."""
    return env.new_bucket()


@pytest.fixture
def queue_url(env: MotoEnv) -> str:
    """A fresh standard queue."""
    return env.new_queue()


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of moto on the test's event loop (records requests)."""
    async with FaultProxy(moto_endpoint, record=True) as p:
        yield p


@pytest.fixture
def threaded_proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """A fault proxy on its own thread and loop, for sync tests that call ``anyio.run``."""
    with ThreadedFaultProxy(moto_endpoint, record=True) as p:
        yield p


@pytest.fixture(scope="session")
def seaweedfs_endpoint() -> Iterator[str]:
    """S3 endpoint URL of a SeaweedFS server (``weed mini``) started for this session on
    127.0.0.1. Sign requests with ``seaweedfs.SEAWEEDFS_CREDENTIALS`` and no session token
    (``seaweedfs.s3_client(url)`` does; ``seaweedfs.split_env`` points code under test at
    it, SQS staying on moto). A missing ``weed`` binary fails, never skips."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(seaweedfs_server())
        except SeaweedFSUnavailable as exc:
            problem = str(exc)
        else:
            problem = ""
        if problem:
            pytest.fail(problem, pytrace=False)
        yield url


@pytest.fixture(params=["moto", "seaweedfs"])
def s3env(
    request: pytest.FixtureRequest, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> MotoEnv:
    """Helpers with S3 on the parametrized backend (moto, SeaweedFS) and SQS on moto."""
    if request.param == "moto":
        return MotoEnv(moto_endpoint)
    return split_env(monkeypatch, moto_endpoint, request.getfixturevalue("seaweedfs_endpoint"))


@pytest.fixture
def clean_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No scanner variable from the developer's shell leaks into the test."""
    for name in SCANNER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
