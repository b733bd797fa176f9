"""Rendering: the live progress line and the tables people read."""

from __future__ import annotations

import sys
from typing import Any, TextIO


class Progress:
    """A one-line status on a terminal (redrawn in place); silent otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, enabled: bool | None = None) -> None:
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K" + text[:150])
            self.stream.flush()

    def done(self) -> None:
        """Clear the line."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _m(stat: dict[str, float], digits: int = 2) -> str:
    return f"{stat['median']:.{digits}f} [{stat['min']:.{digits}f}-{stat['max']:.{digits}f}]"


def _calls(calls: dict[str, int]) -> str:
    short = {
        "ListObjectsV2": "List",
        "SendMessageBatch": "Batch",
        "SendMessage": "Send",
        "GetObject": "Get",
        "PutObject": "Put",
    }
    return " ".join(f"{short.get(k, k)}={v}" for k, v in calls.items())


def scenario_table(doc: dict[str, Any]) -> str:
    """The main table: one block per scenario, scanner and references side by side."""
    lines: list[str] = []
    setup = doc["setup"]
    lines.append(
        f"async-discovery bench: {setup['files']} files in {setup['folders']} folders "
        f"(+{setup['junk_objects']} junk), latency {setup['latency_ms']} ms, "
        f"reps {setup['reps']}; state layout {setup.get('state_layout', 'single')}; "
        f"tuning {setup['tuning']}" + ("; FIFO queues" if setup.get("fifo") else "")
    )
    head = (
        f"{'scenario':12} {'run':11} {'wall s (median [min-max])':27} {'obj/s':>8} "
        f"{'msg/s':>7} {'client CPU s':>12} {'peak RSS MB':>11} {'moto CPU s':>10}  api calls"
    )
    lines.append(head)
    lines.append("-" * len(head))
    for name in ("cold", "warm", "incremental"):
        sc = doc["scenarios"].get(name)
        if sc is None:
            continue
        for kind in ("scanner", "floor", "sequential"):
            r = sc.get(kind)
            if r is None:
                continue
            server = r.get("server_cpu_s", {}).get("median", 0.0)
            lines.append(
                f"{name:12} {kind:11} {_m(r['wall_s'], 3):27} {r['files_per_s']:8.0f} "
                f"{r['messages_per_s']:7.0f} {r['cpu_s']['median']:12.2f} "
                f"{r['peak_rss_mb']['median']:11.0f} {server:10.2f}  {_calls(r['api_calls'])}"
            )
        ratio = f"  -> scanner / floor = {sc['ratio_to_floor']:.2f}x"
        if "fifo_order_ok" in sc["scanner"]:
            ratio += (
                f"; FIFO order per group: {'ok' if sc['scanner']['fifo_order_ok'] else 'BROKEN'}"
            )
        if "speedup_vs_sequential" in sc:
            ratio += f"; sequential / scanner = {sc['speedup_vs_sequential']:.1f}x"
        mins = sc["api_minimum"]
        ratio += "; calls vs bound: " + ", ".join(
            f"{op} {v['used']}/{v['bound']}{'' if v['ok'] else ' OVER'}" for op, v in mins.items()
        )
        lines.append(ratio)
        if "fanout" in sc:
            lines.extend(fanout_lines(name, sc["fanout"]))
    per = {
        name: sc["cpu_per_1000_listed"]
        for name, sc in doc["scenarios"].items()
        if isinstance(sc, dict) and "cpu_per_1000_listed" in sc
    }
    if per:
        lines.append(cpu_line(per))
    return "\n".join(lines) + "\n"


def cpu_line(per: dict[str, dict[str, float]]) -> str:
    """Client CPU per 1,000 listed keys by scenario: without the start-up run's CPU,
    and in all (the run's CPU with the interpreter start and imports)."""
    any_run = next(iter(per.values()))
    return (
        "client CPU ms per 1,000 listed keys (scanner): "
        + ", ".join(f"{k} {v['excl_startup']:.1f}" for k, v in per.items())
        + f" without start-up (start-up run {any_run['startup_cpu_s']:.2f} s CPU, "
        f"{any_run['startup_total_cpu_s']:.2f} s with imports); with everything: "
        + ", ".join(f"{k} {v['total']:.1f}" for k, v in per.items())
    )


def one_folder_table(doc: dict[str, Any]) -> str:
    """``--one-folder``: the warm scanner, the sequential listing and the range floor."""
    setup, of = doc["setup"], doc["one_folder"]
    lines = [
        f"async-discovery bench --one-folder: {of['files']} files in one folder, warm, "
        f"latency {setup['latency_ms']} ms, reps {setup['reps']}; state layout "
        f"{of['state_layout']}; range floor: {of['range_count']} ranges ("
        + (
            "the index's bounds"
            if of.get("ranges_from_index")
            else f"every {of['range_keys']}th key"
        )
        + f"), {of['concurrency']} at once; tuning {setup['tuning']}"
    ]
    head = (
        f"{'run':16} {'wall s (median [min-max])':27} {'keys/s':>9} {'client CPU s':>12} "
        f"{'ms/1k keys':>10} {'peak RSS MB':>11} {'moto CPU s':>10}  api calls"
    )
    lines += [head, "-" * len(head)]
    names = {"scanner": "scanner (warm)", "sequential": "sequential list", "ranges": "range floor"}
    for kind, label in names.items():
        r = of.get(kind)
        if r is None:
            continue
        server = r.get("server_cpu_s", {}).get("median", 0.0)
        per_k = r["cpu_s"]["median"] * 1e6 / max(1, r["listed"])
        lines.append(
            f"{label:16} {_m(r['wall_s'], 3):27} {r['files_per_s']:9.0f} "
            f"{r['cpu_s']['median']:12.2f} {per_k:10.1f} {r['peak_rss_mb']['median']:11.0f} "
            f"{server:10.2f}  {_calls(r['api_calls'])}"
        )
    ratios = f"  -> scanner / range floor = {of['scanner_over_ranges']:.2f}x"
    if "sequential_over_scanner" in of:
        ratios += (
            f"; sequential / scanner = {of['sequential_over_scanner']:.2f}x"
            f"; sequential / range floor = {of['sequential_over_ranges']:.2f}x"
        )
    lines.append(ratios)
    lines.append(cpu_line({"warm": of["cpu_per_1000_listed"]}))
    return "\n".join(lines) + "\n"


def fanout_lines(name: str, fo: dict[str, Any]) -> list[str]:
    """The fan-out of one scenario: its walls, its checks, and each child's figures
    (at once, and one after another)."""
    plan = fo["plan"]
    lines = [
        f"{name:12} {'fan-out':11} {_m(fo['wall_s'], 3):27} = plan {plan['wall_s']:.3f} + "
        f"{fo['children']} children at once {fo['children_wall_s']:.3f} + sum "
        f"{fo['sum_wall_s']:.4f}; single / fan-out = {fo['speedup']:.2f}x  "
        f"{_calls(fo['api_calls'])}",
        f"  -> messages {fo['messages']['count']}"
        + (f" ({fo['messages']['distinct']} keys)" if "distinct" in fo["messages"] else "")
        + f": {'same' if fo['messages_ok'] else 'DIFFERENT'} as the single run's"
        + ("" if "sha256" in fo["messages"] else " (count only)")
        + f"; API calls {fo['api_calls_total']} vs single {fo['single_api_calls_total']} "
        f"(bound +-{fo['api_calls_bound']}: {'ok' if fo['api_calls_ok'] else 'OVER'})",
    ]
    serial = {i: c for i, c in enumerate(fo.get("serial", {}).get("per_child", []))}
    for i, child in enumerate(fo["per_child"]):
        alone = serial.get(i)
        lines.append(
            f"     child {i}: {child['items']} items, {child['listed']} listed, "
            f"{child['queued']} queued; at once wall {child['wall_s']:.3f} s CPU "
            f"{child['cpu_s']:.2f} s"
            + (f"; alone wall {alone['wall_s']:.3f} s CPU {alone['cpu_s']:.2f} s" if alone else "")
        )
    return lines


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """The sweep: one row per tuning."""
    head = f"{'workers':>7} {'list_conc':>9} {'queue':>5} {'cold s':>8} {'warm s':>8}"
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(
            f"{r['workers']:7d} {r['list_concurrency']:9d} {r['queue_size']:5d} "
            f"{r['cold_s']:8.3f} {r['warm_s']:8.3f}"
        )
    return "\n".join(out) + "\n"


def memory_table(mem: dict[str, Any]) -> str:
    """Peak RSS against listed objects, and against state entries (with the slope)."""
    out = ["peak RSS, warm runs, same state, growing listing:"]
    for r in mem["flat_in_listed"]:
        out.append(
            f"  listed {r['listed']:7d}  state {r['state_entries']:6d}  "
            f"peak RSS {r['peak_rss_mb']:7.1f} MB (after imports {r['baseline_rss_mb']:.1f})  "
            f"CPU {r['cpu_s']:.2f} s"
        )
    out.append("peak RSS against state entries (slope = bytes per entry):")
    for kind, data in mem["state_entries"].items():
        pts = ", ".join(f"{r['entries']}: {r['peak_rss_mb']:.1f} MB" for r in data["runs"])
        out.append(f"  {kind:10} {pts}; slope {data['bytes_per_entry']:.0f} B/entry")
    return "\n".join(out) + "\n"


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.2f}"


def state_cost_table(sc: dict[str, Any]) -> str:
    """The state work of a one-file change, each variant side by side, with the ratios:
    one shard per folder against the single object, and key ranges against one shard
    per folder."""
    single, shard, ranged = sc["single"], sc["folders"], sc["ranges"]
    ratio, ratio_ranges = sc["ratio"], sc["ratio_ranges"]
    out = [
        f"state cost of a run changing one file: {sc['files']} tracked files in "
        f"{sc['folder_count']} folders, {sc['listed_folders']} listed (synthetic state, "
        f"no listing; median of {single['reps']})",
        f"{'':26} {'single':>14} {'folder shards':>14} {'key ranges':>14} "
        f"{'shards/single':>14} {'ranges/shards':>14}",
    ]

    def row(name: str, *cells: str) -> None:
        out.append(f"{name:26} " + " ".join(f"{cell:>14}" for cell in cells))

    variants = (single, shard, ranged)
    row("state objects", *(str(v["state_objects_total"]) for v in variants))
    row("state MiB in S3", *(_mib(v["state_bytes_total"]) for v in variants))
    row(
        "GetObject / PutObject",
        *(
            f"{v['api_calls'].get('GetObject', 0)} / {v['api_calls'].get('PutObject', 0)}"
            for v in variants
        ),
    )
    row(
        "MiB read",
        *(_mib(v["bytes_read"]) for v in variants),
        f"{ratio['bytes_read']:.3f}",
        f"{ratio_ranges['bytes_read']:.3f}",
    )
    row(
        "MiB written",
        *(_mib(v["bytes_written"]) for v in variants),
        f"{ratio['bytes_written']:.4f}",
        f"{ratio_ranges['bytes_written']:.4f}",
    )
    row(
        "client CPU s",
        *(f"{v['cpu_s']:.3f}" for v in variants),
        f"{ratio['cpu']:.3f}",
        f"{ratio_ranges['cpu']:.3f}",
    )
    row("wall s", *(f"{v['wall_s']:.2f}" for v in variants))
    row(
        "peak RSS MB (over setup)",
        *(f"{v['peak_rss_mb']:.0f} (+{v['rss_over_setup_mb']:.0f})" for v in variants),
        f"{ratio['peak_rss_over_setup']:.3f}",
        f"{ratio_ranges['peak_rss_over_setup']:.3f}",
    )
    out.append(
        f"folders: {shard['list_concurrency']} units in flight (LIST_CONCURRENCY), each "
        "dropped once decided; key ranges: SHARD_MAX_FILES bounds every state object"
    )
    return "\n".join(out) + "\n"
