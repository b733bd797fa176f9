"""Smoke test of ``async-discovery bench``: a tiny run, the JSON's shape and sanity.

Not a timed test: nothing here asserts a speed, only that every figure is there, the
references ran against the same data and the counts add up.
"""

from __future__ import annotations

import json
import math

import pytest

from async_discovery.cli import main


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_json_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "--files", "50", "--folders", "2", "--reps", "1",
            "--latency-ms", "0", "--json", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["setup"]["files"] == 50
    assert doc["setup"]["moto_patch"] is True
    scenarios = doc["scenarios"]
    expected_new = {"cold": 50, "warm": 0, "incremental": 1}
    for name, new in expected_new.items():
        sc = scenarios[name]
        assert sc["new"] == new
        for kind in ("scanner", "floor", "sequential"):
            run = sc[kind]
            assert run["reps"] == 1
            assert run["wall_s"]["min"] <= run["wall_s"]["median"] <= run["wall_s"]["max"]
            assert run["wall_s"]["median"] > 0
            assert run["cpu_s"]["median"] >= 0
            assert run["peak_rss_mb"]["median"] > 10
            assert run["queued"] == new
        scanner = sc["scanner"]
        assert scanner["status"] == [200]
        # Every reference listed what the scanner listed, from the same bucket.
        assert scanner["listed"] == sc["floor"]["listed"]
        assert sc["sequential"]["listed"] >= scanner["listed"]
        assert math.isfinite(sc["ratio_to_floor"]) and sc["ratio_to_floor"] > 0
        assert math.isfinite(sc["speedup_vs_sequential"]) and sc["speedup_vs_sequential"] > 0
        calls = scanner["api_calls"]
        assert calls["GetObject"] == 1
        assert calls.get("PutObject", 0) == (1 if new else 0)
        assert calls.get("SendMessageBatch", 0) >= math.ceil(new / 10)
        assert sc["sequential"]["api_calls"].get("SendMessage", 0) == new
        assert sc["floor"]["api_calls"].get("SendMessageBatch", 0) == math.ceil(new / 10)
        assert all(v["ok"] for v in sc["api_minimum"].values())
    assert set(doc["cpu_per_10k_listed"]) == set(expected_new)


def test_bench_subcommand_is_registered() -> None:
    from async_discovery.cli import build_parser

    args = build_parser().parse_args(["bench", "--files", "10", "--sweep"])
    assert args.files == 10 and args.sweep and args.latency_ms == 20.0
