"""Shared pieces of scripts/measure_memory.py and scripts/measure_cpu.py (not a test).

* ``serve``: a moto server in its own process, seeded straight through moto's backend
  (100k+ objects in seconds, where PutObject over HTTP would take minutes); its CPU is
  never the client's.
* ``client``: one scan in a fresh process that reports its own peak RSS (``VmHWM``,
  see ``async_discovery.bench.child.peak_rss_kib``) and the CPU seconds of the run alone
  (imports excluded).

    python scripts/_harness.py serve PORT LAYOUT_JSON
    python scripts/_harness.py client CONFIG_JSON [--profile FILE]
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import cProfile

    from types_boto3_s3 import S3Client
    from types_boto3_sqs import SQSClient

HERE = os.path.dirname(os.path.abspath(__file__))
BUCKET = "measure"
FOLDERS = 100


def object_keys(prefix: str, csv: int, junk: int = 0, folders: int = FOLDERS) -> list[str]:
    """``csv`` candidates then ``junk`` ignored (non-CSV) keys spread over ``folders``."""
    keys = [
        f"{prefix}f{i % folders:03d}/2026-11-{i % 28 + 1:02d}-export-{i:07d}.csv"
        for i in range(csv)
    ]
    keys += [f"{prefix}f{i % folders:03d}/sidecar-{i:07d}.json" for i in range(junk)]
    return keys


def etag_of(key: str) -> str:
    """The ETag moto gives the object seeded for ``key`` (MD5 of the key)."""
    import hashlib

    return hashlib.md5(key.encode()).hexdigest()


def state_bytes(keys: list[str], prefix: str) -> bytes:
    """A state object recording ``keys`` with the ETags their objects have."""
    from async_discovery.state import FileEntry, State
    from async_discovery.state_codec import encode

    files = {}
    for key in keys:
        folder = key[len(prefix) :].split("/", 1)[0]
        files[key] = FileEntry(etag_of(key), 1, folder, "2026-11-25T18:05:58Z")
    return encode(State(files=files, source_bucket=BUCKET), "2026-11-25T18:05:58Z")


def serve(port: int, layout: list[list[Any]]) -> None:
    """Seed moto's S3 backend with ``layout`` ([[prefix, csv, junk], ...]) and serve."""
    import logging

    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    from async_discovery.bench.moto_main import apply_patch

    # The bench's one moto patch: queue counters are free on the send path (moto
    # recounts every stored message on each send otherwise: O(queue depth)).
    apply_patch()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(BUCKET, "us-east-1")
    for prefix, csv, junk in layout:
        for key in object_keys(prefix, csv, junk):
            backend.put_object(BUCKET, key, key.encode())
    print("ready", flush=True)
    while True:
        time.sleep(3600)


@contextlib.contextmanager
def seeded_moto(layout: list[list[Any]]) -> Iterator[str]:
    """Start ``serve`` in a subprocess; yield its URL once seeded (fake credentials set)."""
    from async_discovery.testing.moto_server import free_port, use_fake_credentials

    use_fake_credentials()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "_harness.py"), "serve", str(port), json.dumps(layout)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("seeded moto server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def s3_client(endpoint: str) -> S3Client:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def sqs_client(endpoint: str) -> SQSClient:
    import boto3

    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")


def run_client(config: dict[str, Any], profile: str | None = None) -> dict[str, Any]:
    """One scan in a fresh process; returns what the process reported about itself."""
    cmd = [sys.executable, os.path.join(HERE, "_harness.py"), "client", json.dumps(config)]
    if profile:
        cmd += ["--profile", profile]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def client(config_json: str, profile: str | None) -> None:
    import logging

    import anyio

    from async_discovery.bench.child import peak_rss_kib
    from async_discovery.config import Config
    from async_discovery.runner import run_scan

    logging.disable(logging.CRITICAL)
    kwargs = json.loads(config_json)
    kwargs["skip_folders"] = frozenset(kwargs.get("skip_folders", ()))
    config = Config(**kwargs)
    base_kib = peak_rss_kib()
    profiler: cProfile.Profile | None = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    summary = anyio.run(lambda: run_scan(config, emit_metrics=False))
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    if profile and profiler is not None:
        import pstats

        profiler.disable()
        with open(profile, "w") as fh:
            pstats.Stats(profiler, stream=fh).sort_stats("tottime").print_stats(45)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(
        json.dumps(
            {
                "base_kib": base_kib,
                "peak_kib": peak_rss_kib(),
                "cpu_s": round(cpu, 3),
                "wall_s": round(wall, 3),
                "summary": summary,
            }
        )
    )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(HERE))
    from async_discovery.testing.moto_server import use_fake_credentials

    use_fake_credentials()
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]), json.loads(sys.argv[3]))
    else:
        client(sys.argv[2], sys.argv[4] if len(sys.argv) > 4 else None)
