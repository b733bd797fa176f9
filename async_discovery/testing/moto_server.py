"""A moto server on 127.0.0.1 for the demo, the benchmark and the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

# Fake credentials for a local moto server: never real secrets, never sent to AWS.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def use_fake_credentials(environ: dict[str, str] | None = None) -> None:
    """Point the standard credential chain at fake keys (for runs against moto only)."""
    env = os.environ if environ is None else environ
    env.update(FAKE_CREDENTIALS)
    for name in ("AWS_PROFILE", "AWS_SECURITY_TOKEN"):
        env.pop(name, None)


@contextmanager
def threaded_moto_server() -> Iterator[str]:
    """Start moto in a thread of this process on a free loopback port; yield its URL."""
    import logging

    from moto.server import ThreadedMotoServer

    # werkzeug logs every request on stderr; the JSON logs are what users read.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 10.0
) -> None:
    """Terminate a helper process, killing it if it does not stop within ``timeout`` s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def moto_server_process(
    *, module: str = "moto.server", args: Sequence[str] = (), timeout: float = 30.0
) -> Iterator[tuple[str, int]]:
    """Start moto in its own process (so its CPU is not the client's); yield (URL, pid).

    ``module`` is run with ``-m`` and moto's own ``-H``/``-p`` flags, then ``args``
    (the benchmark passes its patched entry point, :mod:`async_discovery.bench.moto_main`).
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(proc, port, timeout)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        stop_process(proc)


def wait_for_port(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str], port: int, timeout: float = 30.0
) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection; raise ``RuntimeError`` when
    ``proc`` exits or ``timeout`` seconds pass first."""
    end = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.05)
