"""The bench's two helper processes: a (patched) moto server and the latency proxy.

Both run in processes of their own, so the client process that runs the scanner and the
references counts only its own CPU and memory; their CPU is read from ``/proc`` around
each measured run and reported separately (``server_cpu_s``, ``proxy_cpu_s``).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..testing.moto_server import free_port


@dataclasses.dataclass(frozen=True, slots=True)
class Process:
    """A helper process: its URL and pid."""

    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0.0 where ``/proc`` is missing)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def moto_process(*, stock: bool = False, timeout: float = 30.0) -> Iterator[Process]:
    """moto on 127.0.0.1 in its own process, with the bench's queue-counter patch
    (:mod:`async_discovery.bench.moto_main`) unless ``stock``."""
    port = free_port()
    cmd = [sys.executable, "-m", "async_discovery.bench.moto_main", "-H", "127.0.0.1"]
    cmd += ["-p", str(port)] + (["--stock"] if stock else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.05)
        yield Process(f"http://127.0.0.1:{port}", proc.pid)
    finally:
        _stop(proc)


@contextmanager
def proxy_process(upstream: str, latency_ms: float) -> Iterator[Process]:
    """The fault proxy (global ``latency_ms``) in front of ``upstream``, own process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "async_discovery.bench.proxy_main", upstream, str(latency_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError("the latency proxy did not start")
        yield Process(url, proc.pid)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        _stop(proc)
