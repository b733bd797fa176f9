"""Decoding one state object: the streaming decoder against ``json.loads`` + the schema.

    python scripts/measure_codec.py [--cases shard:10000,single:100000,single:1000000]
                                    [--methods stream,loads] [--repeat 3]

Each case is a state object of N entries (``single``: the state object, version 1;
``shard``: a folder's shard, version 2), encoded by the codec and written to a
temporary file. Each (case, method) is decoded in a fresh process, ``--repeat`` times:

* ``stream``: the file read 1 MiB at a time into ``StateDecoder`` (as
  ``S3StateStore.load_into`` feeds it): the raw bytes never whole;
* ``loads``: the file read whole (as ``S3StateStore.load``), ``json.loads`` with the
  codec's strict hooks, then the same schema pass over the parsed document (entries
  into ``Files``, fields checked).

Prints, per case and method, the median of: CPU seconds of the decode alone (process
time), the peak RSS it added (``VmHWM`` after, less ``VmRSS`` before: raw bytes, parse
tree and decoded state), and, from one more run under ``tracemalloc``, the peak and the
memory still held by the decoded state (Python allocations, exact). Not a test: it
asserts nothing, and the figures vary with the machine and its load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

CHUNK = 1 << 20  # as S3StateStore reads a state object


def rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def decode_file(path: str, method: str, version: int) -> Any:
    """Decode the state object in ``path`` by ``method``; the decoded state."""
    from async_discovery.state_codec import StateDecoder

    decoder = StateDecoder(name="measure", version=version)
    with open(path, "rb") as fh:
        if method == "stream":
            while chunk := fh.read(CHUNK):
                decoder.feed(chunk)
            return decoder.close()
        # The schema pass of StateDecoder over a document parsed whole.
        from async_discovery.json_stream import loads, members

        decoder._take(members(loads(fh.read()), "files"))
        return decoder._state(decoder._fields)


def child(path: str, method: str, version: int, trace: bool) -> None:
    """One decode in this fresh process; prints its figures as one JSON line."""
    import async_discovery.state_codec  # noqa: F401  (imports outside the figures)

    gc.collect()
    if trace:
        tracemalloc.start()
        state = decode_file(path, method, version)
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(json.dumps({"entries": len(state.files), "trace_peak": peak, "trace_held": held}))
        return
    before_rss = rss_kib("VmRSS")
    cpu = time.process_time()
    state = decode_file(path, method, version)
    cpu = time.process_time() - cpu
    peak = rss_kib("VmHWM") - before_rss
    print(json.dumps({"entries": len(state.files), "cpu_s": cpu, "peak_kib": peak}))


def run_child(path: str, method: str, version: int, trace: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "child", path, method, str(version), str(int(trace))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def write_case(kind: str, entries: int, path: str) -> int:
    """Encode a ``kind`` state object of ``entries`` entries into ``path``; its size."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from measure_state import build

    from async_discovery.state import SHARD_VERSION, State
    from async_discovery.state_codec import iter_encoded

    state = build(entries)
    if kind == "shard":
        extra = {"prefix": "incoming/", "folder": "vendor-000"}
        state = State(files=state.files, source_bucket="b", extra=extra, version=SHARD_VERSION)
    size = 0
    with open(path, "wb") as fh:
        for part in iter_encoded(state, "2026-11-25T18:05:58Z"):
            size += fh.write(part)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="shard:10000,single:100000,single:1000000")
    parser.add_argument("--methods", default="stream,loads")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average: start {list(os.getloadavg())}")
    print(
        f"{'case':<16}{'MB':>7}{'method':>8}{'cpu s':>8}{'peak RSS MiB':>14}"
        f"{'traced peak MiB':>17}{'held MiB':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            kind, entries = case.split(":")
            path = os.path.join(tmp, f"{case.replace(':', '-')}.json")
            size = write_case(kind, int(entries), path)
            version = 2 if kind == "shard" else 1
            for method in args.methods.split(","):
                runs = [run_child(path, method, version, False) for _ in range(args.repeat)]
                traced = run_child(path, method, version, True)
                assert {r["entries"] for r in [*runs, traced]} == {int(entries)}
                cpu = statistics.median(r["cpu_s"] for r in runs)
                peak = statistics.median(r["peak_kib"] for r in runs) / 1024
                print(
                    f"{case:<16}{size / 1e6:>7.1f}{method:>8}{cpu:>8.3f}{peak:>14.1f}"
                    f"{traced['trace_peak'] / 2**20:>17.1f}{traced['trace_held'] / 2**20:>10.1f}",
                    flush=True,
                )
    print(f"load average: end {list(os.getloadavg())}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
    else:
        main()
