"""``async-discovery bench``: the scanner's throughput, side by side with two references.

Modules (one import direction: seed/references/servers <- child/scenarios <- here):

- :mod:`.servers`: moto (with the bench's patches, :mod:`.moto_main` and :mod:`.moto_s3`) and
  the latency proxy (:mod:`.proxy_main`), each in a process of its own;
- :mod:`.seed`: the bucket layout (candidates and junk), parallel seeding, state bytes;
- :mod:`.references`: the sequential design and the floor;
- :mod:`.child`: one measured run in a fresh process (wall, CPU, peak RSS);
- :mod:`.scenarios`: cold, warm and incremental, the sweep and the memory runs;
- :mod:`.listing_refs` and :mod:`.one_folder`: one large folder against its sequential
  listing and the range floor;
- :mod:`.state_cost`: the state work of a one-file change on synthetic state, per layout;
- :mod:`.events`: the event path (``--events``): latency, throughput, no loss;
- :mod:`.report`: the progress line and the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import sys
from collections.abc import Iterator
from typing import Any

from .options import add_arguments

__all__ = ["add_arguments", "cmd_bench"]


@contextlib.contextmanager
def _servers(args: argparse.Namespace) -> Iterator[Any]:
    from .scenarios import Servers
    from .servers import moto_process, proxy_process

    with contextlib.ExitStack() as stack:
        if args.endpoint_url:
            direct, server_pid = args.endpoint_url, None
        else:
            moto = stack.enter_context(moto_process(stock=args.stock_moto))
            direct, server_pid = moto.url, moto.pid
        if args.latency_ms > 0:
            proxy = stack.enter_context(proxy_process(direct, args.latency_ms))
            yield Servers(proxy.url, direct, server_pid, proxy.pid)
        else:
            yield Servers(direct, direct, server_pid, None)


def _machine() -> dict[str, Any]:
    import moto

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "moto": moto.__version__,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the bench; print the table (or ``--json``) on stdout; exit 0."""
    from ..config import Config
    from ..testing.moto_server import use_fake_credentials
    from . import report
    from .scenarios import Bench, run_memory, run_scenarios, run_sweep
    from .seed import Layout

    if args.fanout and args.state_layout != "folders":
        sys.stderr.write("async-discovery bench: --fanout needs --state-layout folders\n")
        return 2
    if args.profile and not _importable("pyinstrument"):
        sys.stderr.write(
            "async-discovery bench: --profile needs pyinstrument, which is not installed "
            "(pip install pyinstrument, or the dev extra)\n"
        )
        return 1
    use_fake_credentials()
    if args.events:
        return _events(args)
    defaults = Config(source_bucket="x-bench", state_bucket="x-bench")
    tuning = {
        "workers": args.workers or defaults.workers,
        "list_concurrency": args.list_concurrency or defaults.list_concurrency,
        "queue_size": args.queue_size or defaults.queue_size,
    }
    layout = Layout(files=args.files, folders=args.folders, junk=args.junk)
    progress = report.Progress(enabled=False if args.no_progress else None)
    doc: dict[str, Any] = {
        "setup": {
            "files": args.files,
            "folders": args.folders,
            "junk_objects": len(layout.junk_keys()),
            "latency_ms": args.latency_ms,
            "reps": args.reps,
            "sequential_reps": min(args.sequential_reps, args.reps),
            "floor_concurrency": args.floor_concurrency,
            "fifo": args.fifo,
            "state_layout": args.state_layout,
            "fanout": args.fanout,
            "tuning": tuning,
            "moto_patch": not args.stock_moto and not args.endpoint_url,
            "machine": _machine(),
        }
    }
    scenarios = [] if args.one_folder else [s for s in args.scenarios.split(",") if s]
    with _servers(args) as servers:
        bench = Bench(servers, progress, tuning, fifo=args.fifo, state_layout=args.state_layout)
        try:
            if args.one_folder:
                from .one_folder import run_one_folder

                doc["one_folder"] = run_one_folder(
                    bench,
                    files=args.files,
                    reps=args.reps,
                    sequential_reps=min(args.sequential_reps, args.reps),
                    range_keys=args.range_keys,
                    concurrency=args.range_concurrency or tuning["list_concurrency"],
                )
            if scenarios:
                doc["scenarios"] = run_scenarios(
                    bench,
                    layout,
                    scenarios=scenarios,
                    reps=args.reps,
                    sequential_reps=args.sequential_reps,
                    floor_concurrency=args.floor_concurrency,
                    workers=tuning["workers"],
                    profile_dir=_profile_dir(args.profile),
                    fanout=args.fanout,
                )
            if args.sweep:
                grid = _grid(tuning, args)
                doc["sweep"] = run_sweep(bench, layout, grid, reps=args.sweep_reps)
            if args.memory:
                doc["memory"] = run_memory(
                    bench,
                    listed_levels=_ints(args.memory_listed),
                    entry_levels=_ints(args.memory_entries),
                    state_files=args.memory_state_files,
                    reps=args.memory_reps,
                )
            if args.state_cost:
                from .state_cost import run_state_cost

                doc["state_cost"] = run_state_cost(
                    bench,
                    files=args.state_cost_files,
                    folders=args.state_cost_folders,
                    reps=args.state_cost_reps,
                    listed=args.state_cost_listed,
                )
        finally:
            bench.close()
            progress.done()
    doc["setup"]["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return 0
    if "one_folder" in doc:
        sys.stdout.write(report.one_folder_table(doc))
    if "scenarios" in doc:
        sys.stdout.write(report.scenario_table(doc))
    if "sweep" in doc:
        sys.stdout.write(
            "\nsweep (scanner median wall seconds):\n" + report.sweep_table(doc["sweep"])
        )
    if "memory" in doc:
        sys.stdout.write("\n" + report.memory_table(doc["memory"]))
    if "state_cost" in doc:
        sys.stdout.write("\n" + report.state_cost_table(doc["state_cost"]))
    sys.stdout.write(
        f"load average: start {doc['setup']['machine']['load_avg_start']}, "
        f"end {doc['setup']['machine']['load_avg_end']}\n"
    )
    return 0


def _importable(module: str) -> bool:
    """True when ``module`` imports (checked before any server or child starts)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _events(args: argparse.Namespace) -> int:
    """``bench --events``: the event path's figures (:mod:`.events`)."""
    from . import report
    from .events import EventsOptions, events_table, run_events_bench

    options = EventsOptions(
        files=args.events_files,
        rate=args.events_rate,
        backlog=args.events_backlog,
        backlog_folders=args.events_backlog_folders,
        batch_size=args.events_batch_size,
        batch_window=args.events_batch_window,
        reference_records=args.events_reference_records,
        loss_files=args.events_loss_files,
        state_layout=args.state_layout,
        latency_ms=args.latency_ms,
    )
    progress = report.Progress(enabled=False if args.no_progress else None)
    doc: dict[str, Any] = {"setup": {"machine": _machine(), "latency_ms": args.latency_ms}}
    try:
        with _servers(args) as servers:
            doc["events"] = run_events_bench(servers.direct, servers.endpoint, options, progress)
    finally:
        progress.done()
    doc["setup"]["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        sys.stdout.write(json.dumps(doc) + "\n")
        return 0
    sys.stdout.write(events_table(doc["events"]))
    sys.stdout.write(
        f"load average: start {doc['setup']['machine']['load_avg_start']}, "
        f"end {doc['setup']['machine']['load_avg_end']}\n"
    )
    return 0


def _profile_dir(path: str | None) -> str | None:
    if path:
        os.makedirs(path, exist_ok=True)
        return os.path.abspath(path)
    return None


def _grid(tuning: dict[str, int], args: argparse.Namespace) -> list[dict[str, int]]:
    """One knob at a time around the current tuning (a full grid is too slow here)."""
    grid: list[dict[str, int]] = [dict(tuning)]
    for knob, values in (
        ("workers", _ints(args.sweep_workers)),
        ("list_concurrency", _ints(args.sweep_list_concurrency)),
        ("queue_size", _ints(args.sweep_queue_size)),
    ):
        for value in values:
            point = {**tuning, knob: value}
            if point not in grid:
                grid.append(point)
    return grid
