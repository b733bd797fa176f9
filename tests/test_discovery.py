"""The discovery rule (SPEC "Discovery rule") as a pure function."""

from __future__ import annotations

from typing import Any

import pytest

from async_discovery.discovery import Verdict, classify, normalise_prefix

SKIP = frozenset({"logs", "temp", "backups"})


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("incoming", "incoming/"), ("incoming/", "incoming/"), ("", ""), ("a/b", "a/b/")],
)
def test_normalise_prefix(prefix: str, expected: str) -> None:
    assert normalise_prefix(prefix) == expected


@pytest.mark.parametrize(
    ("key", "verdict", "folder"),
    [
        ("incoming/a/1.csv", Verdict.CANDIDATE, "a"),
        ("incoming/a/REPORT.CSV", Verdict.CANDIDATE, "a"),
        ("incoming/a/mixed.CsV", Verdict.CANDIDATE, "a"),
        ("incoming/a/.csv", Verdict.CANDIDATE, "a"),
        ("incoming/a b/q3 report+final 100%.csv", Verdict.CANDIDATE, "a b"),
        ("incoming/café/données.csv", Verdict.CANDIDATE, "café"),
        ("incoming/top.csv", Verdict.TOP_LEVEL, ""),
        ("incoming/a/deep/x.csv", Verdict.DEEP, "a"),
        ("incoming//x.csv", Verdict.DEEP, ""),
        ("incoming/logs/x.csv", Verdict.SKIPPED_FOLDER, "logs"),
        ("incoming/temp/x.csv", Verdict.SKIPPED_FOLDER, "temp"),
        ("incoming/backups/x.csv", Verdict.SKIPPED_FOLDER, "backups"),
        ("incoming/Logs/x.csv", Verdict.CANDIDATE, "Logs"),  # exact match only
        ("incoming/a/x.txt", Verdict.NOT_CSV, "a"),
        ("incoming/a/x.csv.gz", Verdict.NOT_CSV, "a"),
        ("incoming/a/csv", Verdict.NOT_CSV, "a"),
        ("incoming/a/", Verdict.MARKER, "a"),
        ("other/a/x.csv", Verdict.OUTSIDE_PREFIX, ""),
        ("incomingx/a/x.csv", Verdict.OUTSIDE_PREFIX, ""),
    ],
)
def test_classify(key: str, verdict: Verdict, folder: str) -> None:
    assert classify(key, "incoming/", SKIP) == (verdict, folder)


def test_classify_empty_prefix_is_whole_bucket() -> None:
    assert classify("a/1.csv", "", SKIP) == (Verdict.CANDIDATE, "a")
    assert classify("1.csv", "", SKIP) == (Verdict.TOP_LEVEL, "")
    assert classify("a/b/1.csv", "", SKIP) == (Verdict.DEEP, "a")


def test_classify_without_skip_list_keeps_every_folder() -> None:
    assert classify("p/logs/x.csv", "p/", frozenset()) == (Verdict.CANDIDATE, "logs")


def _page_verdicts(keys: list[str], folder: str | None, prefixes: list[str]) -> Any:
    from collections import Counter
    from datetime import UTC, datetime

    from async_discovery.config import Config
    from async_discovery.deadline import Deadline
    from async_discovery.models import ListedObject
    from async_discovery.ports import RawPage
    from async_discovery.resume import ListingProgress
    from async_discovery.stages.classify import classify_page
    from async_discovery.stages.context import RunContext
    from async_discovery.stages.decide import Tally
    from async_discovery.stages.plan import Job
    from async_discovery.stages.units import Listing
    from async_discovery.summary import RunStats

    config = Config(
        source_bucket="b-1", state_bucket="b-1", prefix="in/", skip_folders=frozenset({"logs"})
    )
    stats = RunStats()
    ctx = RunContext(config, stats, Tally(stats), Deadline(), lambda: datetime.now(UTC))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    raw = RawPage([ListedObject(k, "e", 1, when) for k in keys], prefixes)
    page = classify_page(ctx, raw, Listing(Job(folder), ListingProgress()), 0)
    expected: Counter[Verdict] = Counter()
    candidates = []
    for key in keys:
        verdict, name = classify(key, "in/", frozenset({"logs"}))
        if verdict is Verdict.CANDIDATE:
            candidates.append((name, key))
        else:
            expected[verdict] += 1
    expected[Verdict.DEEP] += len(prefixes)
    got = [(name, obj.key) for name, obj in page.candidates]
    return got, dict(page.ignored), candidates, dict(expected)


@pytest.mark.parametrize("folder", ["a", "logs", None, "a b"])
def test_a_folder_page_is_classified_as_the_rule_says(folder: str | None) -> None:
    """A folder listing's shortcut for names ending in .csv gives the rule's verdicts,
    whatever keys a server sends (outside the folder, deeper, markers, other cases)."""
    keys = [
        "in/a/x.csv",
        "in/a/.csv",
        "in/a/X.CSV",
        "in/a/y.Csv",
        "in/a/z.txt",
        "in/a/",
        "in/a/deep/er.csv",
        "in/ab/x.csv",
        "in/a b/x.csv",
        "in/logs/x.csv",
        "in/x.csv",
        "in//x.csv",
        "out/a/x.csv",
        "in/a/x.csv/",
    ]
    got, ignored, candidates, expected = _page_verdicts(keys, folder, ["in/a/deep/"])
    assert got == candidates
    assert ignored == expected
