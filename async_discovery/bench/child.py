"""``python -m async_discovery.bench.child SPEC_JSON``: one measured run, in a fresh process.

Each measured run gets a process of its own so its peak RSS (``VmHWM``) is its own
and not the high-water mark of an earlier, bigger run. Everything is imported and built
before the clock starts; the run's wall time, CPU time (``time.process_time``: every
thread of this process) and peak RSS (``VmHWM``, see :func:`peak_rss_kib`) go to stdout as
one JSON line, with the RSS after imports (``baseline_rss_kb``) for reference.

SPEC keys: ``kind`` (scanner, plan, sequential, floor, state_cost), ``endpoint``, ``bucket``,
``prefix``, ``queue_url``, ``state_key``, ``skip``, ``new`` (floor), ``state_puts``
(floor: ``[key, file]`` pairs, the state objects it writes), ``state_layout`` (scanner
and floor: ``single`` or ``folders``), ``concurrency`` (floor), ``tuning`` (scanner:
Config fields), ``profile`` (scanner: write a pyinstrument profile of the run to this
path; the profiler's own overhead then inflates the timings, so profiled runs are not
figures), ``barrier`` (scanner: after setup, print ``ready`` and wait for a line on
stdin before the clock starts, so fan-out children start together; the scanner's
result then has ``started_at``/``ended_at``, epoch seconds). ``plan``: the fan-out's
plan step (:func:`async_discovery.fanout.run_plan`), with the scanner's config.
``state_cost``: see :mod:`.state_cost` (it times its own state work, after
opening its clients). ``list_sequential`` and ``list_ranges``: the listing references of
one folder (:mod:`.listing_refs`; ``bounds`` and ``concurrency`` for the ranges), clients
opened inside the clock as the scanner's are.

Every result also has ``cpu_total_s`` (the process's CPU since it started) and
``cpu_outside_s`` (the part off the clock: interpreter start, imports, setup).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import anyio


def peak_rss_kib() -> int:
    """Peak RSS of this process image in KiB: ``VmHWM`` from ``/proc/self/status``.

    Not ``ru_maxrss``: Linux carries that across ``exec`` from the forked copy of the
    parent, so a child started by a parent holding 150 MB would report at least 150 MB
    whatever it did. ``VmHWM`` belongs to the new image and starts afresh at ``exec``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _profiler(path: str | None) -> Any:
    """A pyinstrument profiler when ``path`` is given (the ``--profile`` flag)."""
    if not path:
        return None
    from pyinstrument import Profiler

    return Profiler(interval=0.0005)


def _items(items: list[dict[str, Any]] | None) -> list[Any] | None:
    """A fan-out child's items (the plan's JSON) as the scanner's jobs."""
    if items is None:
        return None
    from ..stages.plan import Job

    return [Job(i["folder"], i.get("after"), i.get("until")) for i in items]


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run what ``spec`` says; return the measurement."""
    from ..config import Config
    from ..logs import configure_logging
    from ..runner import run_scan
    from ..testing.moto_server import use_fake_credentials
    from .references import Floor, sequential

    use_fake_credentials()
    configure_logging("ERROR")
    kind = spec["kind"]
    skip = frozenset(spec.get("skip", ()))
    result: dict[str, Any]
    if kind in ("scanner", "plan"):
        tuning = dict(spec.get("tuning", {}))
        if tuning.get("folders") is not None:
            tuning["folders"] = frozenset(tuning["folders"])
        config = Config(
            source_bucket=spec["bucket"],
            prefix=spec["prefix"],
            queue_url=spec["queue_url"],
            state_bucket=spec["bucket"],
            state_key=spec["state_key"],
            skip_folders=skip,
            endpoint_url=spec["endpoint"],
            state_layout=spec.get("state_layout", "single"),
            **tuning,
        )
    if kind == "plan":
        from ..fanout import run_plan

        baseline = peak_rss_kib()
        cpu0, t0 = time.process_time(), time.perf_counter()
        plan = anyio.run(run_plan, config)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        result = {
            "status": plan["statusCode"],
            "folders": plan["folders"],
            "items": plan.get("items", plan["folders"]),
            "api_calls": plan["api_calls"],
        }
    elif kind == "scanner":
        profiler = _profiler(spec.get("profile"))
        baseline = peak_rss_kib()
        if spec.get("barrier"):  # a fan-out child: start when the bench says go
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            sys.stdin.readline()
        started_at = time.time()
        cpu0, t0 = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.start()
        items = _items(spec.get("items"))
        summary = anyio.run(lambda: run_scan(config, emit_metrics=False, items=items))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if profiler is not None:
            profiler.stop()
            with open(spec["profile"], "w", encoding="utf-8") as fh:
                fh.write(profiler.output_text(unicode=True, show_all=False))
        result = {
            "status": summary["statusCode"],
            "listed": summary["listed"],
            "queued": summary["queued"],
            "skipped": summary["skipped"],
            "errors": summary["errors"],
            "api_calls": summary["api_calls"],
            "summary": summary,
            "started_at": started_at,
            "ended_at": started_at + wall,
        }
    elif kind == "sequential":
        baseline = peak_rss_kib()
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = sequential(
            spec["endpoint"],
            spec["bucket"],
            spec["prefix"],
            spec["queue_url"],
            spec["state_key"],
            skip,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        result["status"] = 200
    elif kind == "floor":
        layout = spec.get("state_layout", "single")
        puts: dict[str, bytes] = {}
        for key, path in spec.get("state_puts", ()):
            with open(path, "rb") as fh:
                puts[key] = fh.read()
        state_body = next(iter(puts.values()), None) if layout == "single" else None
        floor = Floor(
            spec["endpoint"],
            spec["bucket"],
            spec["prefix"],
            spec["queue_url"],
            spec["state_key"],
            skip,
            new=int(spec["new"]),
            state_body=state_body,
            concurrency=int(spec.get("concurrency", 16)),
            groups=int(spec.get("groups", 1)),
            state_layout=layout,
            state_puts=puts,
        )
        baseline = peak_rss_kib()
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = anyio.run(floor.run)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        result["status"] = 200
    elif kind in ("list_sequential", "list_ranges"):
        from .listing_refs import list_reference

        baseline = peak_rss_kib()
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = anyio.run(list_reference, spec)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        result["status"] = 200
    elif kind == "state_cost":
        from .state_cost import state_work

        result = anyio.run(state_work, spec, peak_rss_kib)
        wall, cpu, baseline = result.pop("wall_s"), result.pop("cpu_s"), result["setup_rss_kb"]
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    cpu_total = time.process_time()  # this process's CPU since it started
    result.update(
        wall_s=wall,
        cpu_s=cpu,
        cpu_total_s=cpu_total,
        cpu_outside_s=cpu_total - cpu,  # interpreter start, imports, setup: off the clock
        peak_rss_kb=peak_rss_kib(),
        baseline_rss_kb=baseline,
        kind=kind,
    )
    return result


def main() -> None:
    """Entry point: one JSON spec argument, one JSON line out."""
    spec = json.loads(sys.argv[1])
    sys.stdout.write(json.dumps(run(spec)) + "\n")


if __name__ == "__main__":
    main()
