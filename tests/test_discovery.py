"""The discovery rule (SPEC "Discovery rule") as a pure function."""

from __future__ import annotations

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
