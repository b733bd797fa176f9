"""The bench's two helper processes: a (patched) moto server and the latency proxy.

Both run in processes of their own, so the client process that runs the scanner and the
references counts only its own CPU and memory; their CPU is read from ``/proc`` around
each measured run and reported separately (``server_cpu_s``, ``proxy_cpu_s``).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ..testing.moto_server import moto_server_process, stop_process


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


@contextmanager
def moto_process(*, stock: bool = False) -> Iterator[Process]:
    """moto on 127.0.0.1 in its own process, with the bench's patches (queue counters,
    S3 listing: :mod:`async_discovery.bench.moto_main`) unless ``stock``, and its
    seeding route either way."""
    with moto_server_process(
        module="async_discovery.bench.moto_main", args=["--bench", *(["--stock"] if stock else [])]
    ) as (url, pid):
        yield Process(url, pid)


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
        stop_process(proc)
