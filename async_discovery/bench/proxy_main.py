"""``python -m async_discovery.bench.proxy_main UPSTREAM LATENCY_MS``: the latency proxy
in its own process.

It is the test suite's :class:`~async_discovery.testing.fault_proxy.FaultProxy` with a
global ``latency_ms``. The bench runs it in a process of its own, not a thread of the
client, so its CPU (aiohttp parsing every request twice) is neither counted as the
scanner's nor competes with the scanner for the GIL; the bench reports it separately.
Prints the proxy URL on stdout once it listens, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

from ..testing.fault_proxy import FaultProxy


async def _serve(upstream: str, latency_ms: float) -> None:
    async with FaultProxy(upstream, latency_ms=latency_ms) as proxy:
        sys.stdout.write(proxy.url + "\n")
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        # The parent holds our stdin: EOF (parent gone or done) ends the proxy.
        await loop.run_in_executor(None, sys.stdin.read)


def main() -> None:
    """Entry point: ``UPSTREAM LATENCY_MS``."""
    upstream, latency = sys.argv[1], float(sys.argv[2])
    asyncio.run(_serve(upstream, latency))


if __name__ == "__main__":
    main()
