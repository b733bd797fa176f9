"""The bench's runs: scenarios side by side with the references, the sweep, memory.

Every measured run is a child process (:mod:`async_discovery.bench.child`) against the
same moto server, through the same latency proxy. Before each run the bench resets the
starting condition directly on moto (not through the proxy):

- ``cold``: no state object; every candidate is new.
- ``warm``: the complete state (every candidate with its current ETag); nothing to send.
- ``incremental``: the same complete state, after 1% of the candidates were overwritten
  with new bytes (new ETags); those are sent as ``updated``.

The state is seeded in the layout the scanner runs with (``--state-layout``): the one
state object, or one shard per folder (``folders``).

moto's queue-depth cost is kept out in two ways (README, Performance): the moto process
has the bench's counter patch (:mod:`async_discovery.bench.moto_main`), and every
measured run gets a fresh, empty queue that is deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anyio
import boto3

from ..layout import state_prefix
from ..settings import DEFAULTS
from ..stages.folders import HEAD_BYTES
from .seed import (
    BODY_V1,
    BODY_V2,
    PREFIX,
    STATE_KEY,
    Layout,
    extra_junk,
    object_metadata_of,
    put_objects,
    seed_route,
    state_objects,
)
from .servers import cpu_seconds

SCENARIOS = ("cold", "warm", "incremental")
EMPTY_PREFIX = "nothing-here/"  # the start-up runs' prefix: no object under it
DIGEST_LIMIT = 5000  # messages a queue digest receives one by one (see queue_digest)
SKIP = ("logs", "temp", "backups")
Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True, slots=True)
class Servers:
    """Where the runs go (``endpoint``: the proxy) and where setup goes (``direct``)."""

    endpoint: str
    direct: str
    server_pid: int | None = None
    proxy_pid: int | None = None


def _etag(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()  # the ETag S3 gives a single-part put


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


class Bench:
    """Seeds one bucket and runs measured child processes against it."""

    def __init__(
        self,
        servers: Servers,
        say: Say,
        tuning: dict[str, Any] | None = None,
        *,
        fifo: bool = False,
        state_layout: str = "single",
    ) -> None:
        self.servers = servers
        self.fifo = fifo
        self.state_layout = state_layout
        self.say = say
        self.tuning = dict(tuning or {})
        kw: dict[str, Any] = {"endpoint_url": servers.direct, "region_name": "us-east-1"}
        self.s3 = boto3.client("s3", **kw)
        self.sqs = boto3.client("sqs", **kw)
        self.tmp = tempfile.TemporaryDirectory(prefix="ad-bench-")
        # Fan-out comparisons: every scanner run also records what its queue received.
        self.check_messages = False

    def close(self) -> None:
        """Remove temporary files and close the setup clients."""
        self.s3.close()
        self.sqs.close()
        self.tmp.cleanup()

    # -- setup ------------------------------------------------------------------------

    def new_bucket(self) -> str:
        """A fresh bucket name (created by the seeding)."""
        return f"bench-{uuid.uuid4().hex[:12]}"

    def seed(
        self, bucket: str, keys: Sequence[str], body: bytes = BODY_V1, create: bool = False
    ) -> None:
        """Put ``keys`` (through the bench moto's seeding route when the bench started
        moto, else in parallel over HTTP), showing progress."""
        total = len(keys)

        def progress(done: int) -> None:
            self.say(f"seeding s3://{bucket}: {done}/{total}")

        if self.servers.server_pid is not None:
            seed_route(self.servers.direct, bucket, keys, body, create=create, progress=progress)
            return
        anyio.run(
            lambda: put_objects(
                self.servers.direct, bucket, keys, body, create=create, progress=progress
            )
        )

    def state(self, bucket: str, entries: Iterable[tuple[str, str]]) -> dict[str, bytes]:
        """The state recording ``(key, etag)`` pairs, in this bench's layout (a folder
        past ``SHARD_MAX_FILES`` as key ranges, as a scan writes it)."""
        split = int(self.tuning.get("shard_max_files", DEFAULTS["shard_max_files"]))
        return state_objects(bucket, entries, self.state_layout, shard_max_files=split)

    def put_state(self, bucket: str, objects: dict[str, bytes] | None) -> None:
        """Reset the state directly on moto: every object under the state prefix and
        the single state object deleted, then ``objects`` (key -> body) put."""
        self.put_state_objects(bucket, objects)

    def put_state_objects(self, bucket: str, objects: dict[str, bytes] | None) -> None:
        """See :meth:`put_state` (any layout: the keys say where)."""
        old = [STATE_KEY]
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=state_prefix(STATE_KEY)
        )
        for page in pages:
            old.extend(item["Key"] for item in page.get("Contents", ()))
        for start in range(0, len(old), 1000):
            chunk: Any = [{"Key": key} for key in old[start : start + 1000]]
            self.s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
        for key, body in (objects or {}).items():
            metadata = object_metadata_of(key, body)  # as the scanner writes it
            self.s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)

    def state_files(self, objects: dict[str, bytes]) -> list[list[str]]:
        """Write each body to a temporary file: ``[key, path]`` pairs (for the floor's
        state writes, read by the child before its clock starts)."""
        out = []
        for key, body in objects.items():
            path = os.path.join(self.tmp.name, f"state-{uuid.uuid4().hex[:8]}.json")
            with open(path, "wb") as fh:
                fh.write(body)
            out.append([key, path])
        return out

    def tuning_for_state(self) -> dict[str, Any]:
        """The scanner tuning a state-cost child runs with (its LIST_CONCURRENCY)."""
        return {k: v for k, v in self.tuning.items() if k == "list_concurrency"}

    # -- one measured run ------------------------------------------------------------

    def measure(self, kind: str, bucket: str, **extra: Any) -> dict[str, Any]:
        """One measured run of ``kind`` in a child process, into a fresh queue."""
        queue_url = self.new_queue()
        spec: dict[str, Any] = {"kind": kind, **self._child_base(bucket, queue_url)}
        if kind in ("scanner", "floor"):
            spec["state_layout"] = self.state_layout
        if kind == "scanner":
            spec["tuning"] = {**self.tuning, **extra.pop("tuning", {})}
        spec.update(extra)
        result = self.measure_child(spec)
        if self.fifo and kind == "scanner":
            result["fifo_order_ok"] = self._group_order_ok(queue_url)
        elif self.check_messages and kind == "scanner":
            result["messages"] = self.queue_digest(queue_url)
        self.sqs.delete_queue(QueueUrl=queue_url)
        return result

    def measure_startup(self, bucket: str, reps: int) -> dict[str, Any]:
        """The scanner's fixed cost: ``reps`` runs over a prefix holding nothing (clients
        opened, the prefix listed, the cursor read), with the scanner's tuning."""
        return aggregate(
            [self.measure("scanner", bucket, prefix=EMPTY_PREFIX) for _ in range(reps)]
        )

    def _child_base(self, bucket: str, queue_url: str) -> dict[str, Any]:
        """What every measured child is given: the server, bucket, prefix and queue."""
        return {
            "endpoint": self.servers.endpoint,
            "bucket": bucket,
            "prefix": PREFIX,
            "queue_url": queue_url,
            "state_key": STATE_KEY,
            "skip": list(SKIP),
        }

    def new_queue(self) -> str:
        """A fresh, empty queue (standard or FIFO, as the bench runs); its URL."""
        name = f"bench-{uuid.uuid4().hex[:12]}"
        if self.fifo:
            queue = self.sqs.create_queue(
                QueueName=name + ".fifo", Attributes={"FifoQueue": "true"}
            )
            return str(queue["QueueUrl"])
        return str(self.sqs.create_queue(QueueName=name)["QueueUrl"])

    def queue_digest(self, queue_url: str) -> dict[str, Any]:
        """What a queue received: messages, distinct keys and a SHA-256 of the sorted
        keys (received directly from moto, not deleted; the queue is dropped after).

        moto scans the whole queue on every receive, so above :data:`DIGEST_LIMIT`
        messages only the count (``ApproximateNumberOfMessages``) is taken."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        count = int(attrs["ApproximateNumberOfMessages"])
        if count > DIGEST_LIMIT:
            return {"count": count}
        keys: Counter[str] = Counter()
        while True:
            msgs = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=3600
            ).get("Messages", [])
            if not msgs:
                break
            keys.update(json.loads(m["Body"])["key"] for m in msgs)
        digest = hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()
        return {"count": sum(keys.values()), "distinct": len(keys), "sha256": digest}

    def measure_fanout(
        self, bucket: str, children: int, *, parallel: bool = True
    ) -> dict[str, Any]:
        """One fan-out run, into one fresh queue: the plan step (a child process), the
        plan's items (a folder each, or a key range of a split folder) in ``children``
        batches of ``ceil(items / children)`` (the Distributed Map's ``ItemBatcher``),
        one scanner child per batch, then :func:`~async_discovery.fanout.sum_summaries`
        of their summaries.

        ``parallel``: the children run at once, each released after its setup (the
        phase's wall is from the release to the last child's end); otherwise one after
        another (each child's figures without the others' contention)."""
        from ..fanout import PLAN_NAME, sum_summaries
        from ..layout import runs_key

        queue_url = self.new_queue()
        base = {**self._child_base(bucket, queue_url), "state_layout": self.state_layout}
        server0 = cpu_seconds(self.servers.server_pid) if self.servers.server_pid else 0.0
        plan = self.measure_child({**base, "kind": "plan", "tuning": dict(self.tuning)})
        key = runs_key(state_prefix(STATE_KEY), PREFIX, PLAN_NAME)
        items = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        size = max(1, math.ceil(len(items) / children))
        batches = [items[i : i + size] for i in range(0, len(items), size)]
        specs = [
            {**base, "kind": "scanner", "barrier": True, "tuning": self.tuning, "items": b}
            for b in batches
        ]
        if parallel:
            phase_wall, runs = self._run_together(specs)
        else:
            runs = [self._run_together([spec])[1][0] for spec in specs]
            phase_wall = sum(r["wall_s"] for r in runs)
        t0 = time.perf_counter()
        total = sum_summaries([r["summary"] for r in runs])
        sum_wall = time.perf_counter() - t0
        calls: Counter[str] = Counter(plan["api_calls"])
        calls.update(total["api_calls"])
        out: dict[str, Any] = {
            "parallel": parallel,
            "children": len(batches),
            "items_per_child": size,
            "wall_s": plan["wall_s"] + phase_wall + sum_wall,
            "plan": {
                k: plan[k] for k in ("status", "folders", "items", "wall_s", "cpu_s", "api_calls")
            },
            "children_wall_s": phase_wall,
            "sum_wall_s": sum_wall,
            "per_child": [
                {
                    "items": len(b),
                    "folders": len({item["folder"] for item in b}),
                    "wall_s": r["wall_s"],
                    "cpu_s": r["cpu_s"],
                    "peak_rss_mb": r["peak_rss_kb"] / 1024,
                    "listed": r["listed"],
                    "queued": r["queued"],
                    "status": r["status"],
                    "api_calls": r["api_calls"],
                }
                for b, r in zip(batches, runs, strict=True)
            ],
            "status": total["statusCode"],
            "listed": total["listed"],
            "queued": total["queued"],
            "api_calls": dict(sorted(calls.items())),
            "messages": self.queue_digest(queue_url),
        }
        if self.servers.server_pid:
            out["server_cpu_s"] = cpu_seconds(self.servers.server_pid) - server0
        self.sqs.delete_queue(QueueUrl=queue_url)
        return out

    def _run_together(self, specs: Sequence[dict[str, Any]]) -> tuple[float, list[dict[str, Any]]]:
        """Start one child per spec (each with ``barrier``), release them together once
        all are set up; the wall from the release to the last end, and their results."""
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "async_discovery.bench.child", _json(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for spec in specs
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line.strip() != "ready":
                    assert proc.stderr is not None
                    proc.wait()
                    raise RuntimeError(f"bench child failed: {proc.stderr.read()[-2000:]}")
            go = time.time()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            outputs = [proc.communicate(timeout=3600) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        results = []
        for proc, (out, err) in zip(procs, outputs, strict=True):
            if proc.returncode != 0 or not out.strip():
                raise RuntimeError(f"bench fan-out child failed: {err.strip()[-2000:]}")
            results.append(_loads(out.strip().splitlines()[-1]))
        return max(r["ended_at"] for r in results) - go, results

    def measure_child(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Run one child (:mod:`.child`) with ``spec``; its measurement, with the CPU
        seconds moto and the proxy spent meanwhile."""
        server0 = cpu_seconds(self.servers.server_pid) if self.servers.server_pid else 0.0
        proxy0 = cpu_seconds(self.servers.proxy_pid) if self.servers.proxy_pid else 0.0
        proc = subprocess.run(
            [sys.executable, "-m", "async_discovery.bench.child", _json(spec)],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            raise RuntimeError(f"bench child {spec['kind']} failed: {proc.stderr.strip()[-2000:]}")
        result: dict[str, Any] = _loads(proc.stdout.strip().splitlines()[-1])
        if self.servers.server_pid:
            result["server_cpu_s"] = cpu_seconds(self.servers.server_pid) - server0
        if self.servers.proxy_pid:
            result["proxy_cpu_s"] = cpu_seconds(self.servers.proxy_pid) - proxy0
        return result

    def _group_order_ok(self, queue_url: str) -> bool:
        """Drain a FIFO queue: is every message group's key sequence ascending (the
        listing order of its folder)?"""
        keys: dict[str, list[str]] = {}
        while True:
            msgs = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
            ).get("Messages", [])
            if not msgs:
                break
            for msg in msgs:
                group = msg["Attributes"]["MessageGroupId"]
                keys.setdefault(group, []).append(json.loads(msg["Body"])["key"])
            self.sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
                ],
            )
        return bool(keys) and all(seq == sorted(seq) for seq in keys.values())


def _json(doc: Any) -> str:
    import json

    return json.dumps(doc)


def _loads(text: str) -> dict[str, Any]:
    import json

    doc: dict[str, Any] = json.loads(text)
    return doc


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median/min/max over repetitions of one kind in one scenario.

    Counts (listed, queued, API calls) are the same in every repetition, which starts
    from the same state: they are read from the last one."""
    last = runs[-1]
    wall = summarise([r["wall_s"] for r in runs])
    med = wall["median"]
    out: dict[str, Any] = {
        "reps": len(runs),
        "wall_s": wall,
        "cpu_s": summarise([r["cpu_s"] for r in runs]),
        "cpu_total_s": summarise([r.get("cpu_total_s", r["cpu_s"]) for r in runs]),
        "peak_rss_mb": summarise([r["peak_rss_kb"] / 1024 for r in runs]),
        "listed": last["listed"],
        "queued": last["queued"],
        "files_per_s": (last["listed"] / med) if med else 0.0,
        "messages_per_s": (last["queued"] / med) if med else 0.0,
        "api_calls": dict(sorted(last["api_calls"].items())),
    }
    for key in ("server_cpu_s", "proxy_cpu_s"):
        if key in last:
            out[key] = summarise([r.get(key, 0.0) for r in runs])
    if "status" in last:
        out["status"] = sorted({r["status"] for r in runs})
    if "fifo_order_ok" in last:
        out["fifo_order_ok"] = all(r["fifo_order_ok"] for r in runs)
    if "messages" in last:
        out["messages"] = last["messages"]
    return out


def cpu_per_1000(scanner: dict[str, Any], startup: dict[str, Any]) -> dict[str, float]:
    """Client CPU milliseconds per 1,000 listed keys: ``excl_startup`` (the run's CPU
    less the start-up run's, medians), ``run`` (the run's CPU: clients opened, every
    request), ``total`` (with the interpreter start and imports too)."""
    listed = max(1, int(scanner["listed"]))
    run, fixed = scanner["cpu_s"]["median"], startup["cpu_s"]["median"]
    return {
        "excl_startup": (run - fixed) * 1e6 / listed,
        "run": run * 1e6 / listed,
        "total": scanner["cpu_total_s"]["median"] * 1e6 / listed,
        "startup_cpu_s": fixed,
        "startup_total_cpu_s": startup["cpu_total_s"]["median"],
    }


def fanout_figures(
    runs: Sequence[dict[str, Any]], serial: dict[str, Any] | None, single: dict[str, Any]
) -> dict[str, Any]:
    """The fan-out runs of one scenario against the single run (``single``: the
    scanner's aggregate): the last run's detail, the wall over the runs, the message
    and API-call checks (every API call of the plan and the children, against the
    single run's, within ``children + 2``, and 3 more for each child beyond the first
    that reads a split folder's index: its ``GetObject``, the head's rest and the
    listing of its range shards), and the serial run's per-child figures."""
    last = runs[-1]
    used = sum(last["api_calls"].values())
    single_calls = sum(single["api_calls"].values())
    shared = sum(c["folders"] for c in last["per_child"]) - last["plan"]["folders"]
    bound = last["children"] + 2 + 3 * max(0, shared)
    out: dict[str, Any] = {
        **{k: v for k, v in last.items() if k != "wall_s"},
        "reps": len(runs),
        "wall_s": summarise([r["wall_s"] for r in runs]),
        "single_wall_s": single["wall_s"]["median"],
        "api_calls_total": used,
        "single_api_calls_total": single_calls,
        "api_calls_bound": bound,
        "api_calls_ok": abs(used - single_calls) <= bound,
        "messages_ok": all(r["messages"] == single.get("messages") for r in runs),
    }
    out["speedup"] = out["single_wall_s"] / out["wall_s"]["median"]
    if serial is not None:
        out["serial"] = {
            "plan_wall_s": serial["plan"]["wall_s"],
            "per_child": serial["per_child"],
            "messages_ok": serial["messages"] == single.get("messages"),
        }
    return out


def minimum_calls(
    layout: Layout,
    scanner: dict[str, Any],
    new: int,
    workers: int,
    *,
    state_reads: int = 1,
    state_writes: int = 1,
    state_lists: int = 0,
) -> dict[str, Any]:
    """The API-call targets of the issue next to what the scanner did. The state bounds:
    ``single``, one ``GetObject`` and at most one ``PutObject``; ``folders``, one
    ``GetObject`` per listed folder (the floor's count) plus the cursor object's plus
    one per changed shard over ``HEAD_BYTES`` (read whole after its head), one
    ``PutObject`` per changed shard, and one more ``ListObjectsV2`` (the shard keys, for
    ``PRUNE_MISSING``), with, per split folder, the listing of its range shards and one
    more request per range (``state_reads``/``state_writes``/``state_lists``)."""
    calls = scanner["api_calls"]
    listed = int(scanner["listed"])
    list_bound = math.ceil(listed / 1000) + layout.folders + 1 + state_lists
    send_bound = math.ceil(new / 10) + workers
    lists, sends = calls.get("ListObjectsV2", 0), calls.get("SendMessageBatch", 0)
    gets, puts = calls.get("GetObject", 0), calls.get("PutObject", 0)
    return {
        "ListObjectsV2": {"used": lists, "bound": list_bound, "ok": lists <= list_bound},
        "SendMessageBatch": {
            "used": sends,
            "bound": send_bound,
            "minimum": math.ceil(new / 10),
            "ok": sends <= send_bound,
        },
        "GetObject": {"used": gets, "bound": state_reads, "ok": gets == state_reads},
        "PutObject": {"used": puts, "bound": state_writes, "ok": puts <= state_writes},
    }


def run_scenarios(
    bench: Bench,
    layout: Layout,
    *,
    scenarios: Sequence[str],
    reps: int,
    sequential_reps: int,
    floor_concurrency: int,
    workers: int,
    profile_dir: str | None = None,
    fanout: int = 0,
) -> dict[str, Any]:
    """Seed ``layout``, then each scenario ``reps`` times: scanner, floor, sequential.

    With ``profile_dir``, one more scanner run per scenario (not in the figures) writes
    a pyinstrument profile to ``<profile_dir>/<scenario>.txt``.

    With ``fanout`` (``folders`` layout only), each repetition also runs the fan-out
    with that many children at once (:meth:`Bench.measure_fanout`), and each scenario
    once more with the same children one after another (per-child figures without
    contention), all from the scenario's starting state.

    The scanner and the floor start from the state in the bench's layout; the
    sequential design (one state object by definition) from the single state object.
    """
    bucket = bench.new_bucket()
    candidates = layout.candidates()
    bench.seed(bucket, candidates + layout.junk_keys(), create=True)
    before = [(k, _etag(BODY_V1)) for k in candidates]
    complete = bench.state(bucket, before)
    complete_single = state_objects(bucket, before, "single")
    changed = layout.changed()
    changed_set = set(changed)
    folders_layout = bench.state_layout == "folders"
    if fanout and not folders_layout:
        raise ValueError("the fan-out needs the folders state layout")
    bench.check_messages = bool(fanout)
    results: dict[str, Any] = {"bucket": bucket, "state_layout": bench.state_layout}
    results["startup"] = bench.measure_startup(bucket, reps)
    for scenario in scenarios:
        if scenario == "incremental":
            bench.seed(bucket, changed, BODY_V2)
        new = {"cold": layout.files, "warm": 0, "incremental": len(changed)}[scenario]
        start = None if scenario == "cold" else complete
        after = bench.state(
            bucket, ((k, _etag(BODY_V2 if k in changed_set else BODY_V1)) for k in candidates)
        )
        # What a run writes: the one object (if anything is new), or the changed shards.
        touched = {
            "cold": set(after),
            "warm": set(),
            "incremental": {k for k, body in after.items() if complete.get(k) != body},
        }[scenario]
        floor_puts = bench.state_files({k: after[k] for k in touched} if folders_layout else after)
        runs: dict[str, list[dict[str, Any]]] = {"scanner": [], "floor": [], "sequential": []}
        fanned: list[dict[str, Any]] = []
        serial: dict[str, Any] | None = None
        for rep in range(reps):
            plan = ["scanner", "floor"] + (["sequential"] if rep < sequential_reps else [])
            plan += ["fanout"] if fanout else []
            for kind in plan:
                if kind == "fanout":
                    bench.say(f"{scenario}: rep {rep + 1}/{reps}, fan-out x{fanout}")
                    bench.put_state(bucket, start)
                    fanned.append(bench.measure_fanout(bucket, fanout))
                    continue
                bench.say(f"{scenario}: rep {rep + 1}/{reps}, {kind}")
                if kind == "sequential" and folders_layout:
                    bench.put_state(bucket, None if scenario == "cold" else complete_single)
                else:
                    bench.put_state(bucket, start)
                extra: dict[str, Any] = {}
                if kind == "floor":
                    extra = {
                        "new": new,
                        "state_puts": floor_puts,
                        "concurrency": floor_concurrency,
                        "groups": layout.folders,
                    }
                runs[kind].append(bench.measure(kind, bucket, **extra))
        if fanout:
            bench.say(f"{scenario}: fan-out x{fanout}, children one after another")
            bench.put_state(bucket, start)
            serial = bench.measure_fanout(bucket, fanout, parallel=False)
        if profile_dir:
            bench.say(f"{scenario}: profiled scanner run")
            bench.put_state(bucket, start)
            path = os.path.join(profile_dir, f"{scenario}.txt")
            bench.measure("scanner", bucket, profile=path)
        out: dict[str, Any] = {kind: aggregate(r) for kind, r in runs.items() if r}
        scan_wall = out["scanner"]["wall_s"]["median"]
        out["new"] = new
        out["ratio_to_floor"] = scan_wall / out["floor"]["wall_s"]["median"]
        if "sequential" in out:
            out["speedup_vs_sequential"] = out["sequential"]["wall_s"]["median"] / scan_wall
        out["state_objects_written"] = len(touched) if folders_layout else int(new > 0)
        # A changed shard larger than its first read is read again whole.
        rereads = sum(len((start or {}).get(k, b"")) > HEAD_BYTES for k in touched)
        # A split folder: one listing of its range shards' ETags, and at most one
        # request more per range than listing the folder in one go (SPEC "Key ranges").
        ranges = [k.partition(".ranges/")[0] for k in start or {} if ".ranges/" in k]
        bounds = (
            {
                "state_reads": out["floor"]["api_calls"].get("GetObject", 0) + 1 + rereads,
                "state_writes": len(touched),
                "state_lists": 1 + len(set(ranges)) + len(ranges),
            }
            if folders_layout
            else {}
        )
        out["api_minimum"] = minimum_calls(layout, out["scanner"], new, workers, **bounds)
        if fanned:
            out["fanout"] = fanout_figures(fanned, serial, out["scanner"])
        out["cpu_per_1000_listed"] = cpu_per_1000(out["scanner"], results["startup"])
        results[scenario] = out
        # Leave the bucket as the next scenario expects it (incremental reseeds itself).
    if "incremental" in scenarios:
        bench.seed(bucket, changed, BODY_V1)
    return results


def run_sweep(
    bench: Bench,
    layout: Layout,
    grid: Sequence[dict[str, int]],
    *,
    reps: int,
) -> list[dict[str, Any]]:
    """Cold and warm scanner runs for each tuning in ``grid``; one row per tuning."""
    bucket = bench.new_bucket()
    candidates = layout.candidates()
    bench.seed(bucket, candidates + layout.junk_keys(), create=True)
    complete = bench.state(bucket, ((k, _etag(BODY_V1)) for k in candidates))
    rows: list[dict[str, Any]] = []
    for tuning in grid:
        row: dict[str, Any] = dict(tuning)
        for scenario, start in (("cold", None), ("warm", complete)):
            walls = []
            for rep in range(reps):
                bench.say(f"sweep {tuning}: {scenario} rep {rep + 1}/{reps}")
                bench.put_state(bucket, start)
                walls.append(bench.measure("scanner", bucket, tuning=tuning)["wall_s"])
            row[f"{scenario}_s"] = statistics.median(walls)
        rows.append(row)
    return rows


def _slope(points: Sequence[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def run_memory(
    bench: Bench,
    *,
    listed_levels: Sequence[int],
    entry_levels: Sequence[int],
    state_files: int,
    reps: int,
) -> dict[str, Any]:
    """(1) peak RSS of warm runs listing more and more objects with the same state;
    (2) peak RSS of warm runs against states of growing size: bytes per entry."""
    out: dict[str, Any] = {}
    # (1) flat in listed objects: state_files candidates (all in state) + .json junk.
    layout = Layout(files=state_files, folders=10, junk=0.0)
    bucket = bench.new_bucket()
    candidates = layout.candidates()
    bench.seed(bucket, candidates, create=True)
    bench.put_state(bucket, bench.state(bucket, ((k, _etag(BODY_V1)) for k in candidates)))
    have = len(candidates)
    flat = []
    for level in sorted(listed_levels):
        if level > have:
            bench.seed(bucket, extra_junk(have, level - have, layout.folders))
            have = level
        runs = []
        for rep in range(reps):
            bench.say(f"memory: warm, {level} listed, rep {rep + 1}/{reps}")
            runs.append(bench.measure("scanner", bucket))
        flat.append(
            {
                "listed": runs[0]["listed"],
                "state_entries": state_files,
                "peak_rss_mb": statistics.median(r["peak_rss_kb"] / 1024 for r in runs),
                "baseline_rss_mb": statistics.median(r["baseline_rss_kb"] / 1024 for r in runs),
                "cpu_s": statistics.median(r["cpu_s"] for r in runs),
            }
        )
    out["flat_in_listed"] = flat
    # (2) bytes per state entry: a small listing, states of entry_levels entries. The
    # entries not listed are kept (prune_missing off) so every run only loads and holds.
    small = Layout(files=100, folders=2, junk=0.0)
    bucket = bench.new_bucket()
    listed = small.candidates()
    bench.seed(bucket, listed, create=True)
    per_kind: dict[str, list[dict[str, Any]]] = {"scanner": [], "sequential": []}
    for level in sorted(entry_levels):
        gone = [f"{PREFIX}f000/gone-{i:07d}.csv" for i in range(level - len(listed))]
        pairs = [(k, _etag(BODY_V1)) for k in listed + gone]
        body = state_objects(bucket, pairs, "single")
        own = bench.state(bucket, pairs)  # the scanner's layout; sequential: single
        for kind in per_kind:
            runs = []
            for rep in range(reps):
                bench.say(f"memory: {kind}, {level} state entries, rep {rep + 1}/{reps}")
                bench.put_state(bucket, own if kind == "scanner" else body)
                extra: dict[str, Any] = (
                    {"tuning": {"prune_missing": False}} if kind == "scanner" else {}
                )
                runs.append(bench.measure(kind, bucket, **extra))
            per_kind[kind].append(
                {
                    "entries": level,
                    "state_bytes": sum(len(b) for b in body.values()),
                    "peak_rss_mb": statistics.median(r["peak_rss_kb"] / 1024 for r in runs),
                }
            )
    out["state_entries"] = {
        kind: {
            "runs": rows,
            "bytes_per_entry": _slope(
                [(float(r["entries"]), r["peak_rss_mb"] * 1024 * 1024) for r in rows]
            ),
        }
        for kind, rows in per_kind.items()
    }
    return out
