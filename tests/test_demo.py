"""``async-discovery demo`` on a terminal: the story a person reads.

The demo runs with stdout on a real pseudo-terminal (stderr on a pipe, so log lines are
told apart from the story). Its form for pipes (two JSON summaries on stdout) is covered
in tests/test_cli.py.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from async_discovery.cells import cells
from async_discovery.demo import KEY_CELLS, _verdict_lines

from .helpers import read_terminal

CANDIDATES = (
    "incoming/sales/2026-11-01.csv",
    "incoming/sales/2026-11-02.CSV",
    "incoming/inventory/stock.csv",
    "incoming/inventory/q3 report+final 100%.csv",
    "incoming/café/données été.csv",
)


def _demo_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run ``async-discovery demo`` with stdout on a pseudo-terminal; return (status,
    terminal text, stderr)."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL" and not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "async_discovery", "demo", *args],
        stdout=follower,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    os.close(follower)
    terminal = read_terminal(leader)
    _, err = proc.communicate(timeout=120)
    os.close(leader)
    return proc.returncode, terminal.decode().replace("\r\n", "\n"), err.decode()


def _verdict(text: str, action: str, key: str, reason: str) -> bool:
    pattern = rf"^  {re.escape(action)}\s+{re.escape(key)}\s+{re.escape(reason)}"
    return re.search(pattern, text, re.M) is not None


@pytest.mark.slow  # the whole demo in a subprocess (tests/test_cli.py runs it piped)
def test_demo_tells_its_story_on_a_terminal(tmp_path: Path) -> None:
    """Each seeded key with its verdict, a message body as sent, the state written, and a
    second run that skips every candidate as unchanged; no JSON logs unless asked."""
    code, text, err = _demo_on_a_terminal([], tmp_path)
    assert code == 0, text + err
    first, _, rest = text.partition("\nScan 2:")
    assert rest, text
    # Scan 1: a candidate is sent as new, a skipped folder's file is ignored, with reasons.
    assert _verdict(first, "send", "incoming/sales/2026-11-01.csv", "new: not in state yet")
    assert _verdict(first, "send", "incoming/café/données été.csv", "new: not in state yet")
    assert _verdict(first, "ignore", "incoming/logs/app.csv", "in a skipped folder")
    assert _verdict(first, "ignore", "incoming/sales/archive/2025.csv", "one level too deep")
    assert _verdict(first, "-", "elsewhere/other.csv", "outside the prefix")
    # The counts say what they count, and add up: 8 listed = 5 candidates + 3 other
    # objects; 6 ignored = those 3 + 3 prefixes never listed.
    assert "-> statusCode 200; listed 8 objects" in first
    assert "candidates 5: queued 5 (new or changed), skipped 0 (unchanged)" in first
    assert "ignored 6: 3 listed objects that are not candidates, 3 prefixes not listed" in first
    # The message that went out: its body, as JSON, with the awkward key unchanged.
    body_text = first.split("One body:\n", 1)[1].split("\n\n", 1)[0]
    body = json.loads(body_text)
    assert body["key"] == "incoming/inventory/q3 report+final 100%.csv"
    assert (body["bucket"], body["folder"], body["event"]) == ("demo-bucket", "inventory", "new")
    assert re.fullmatch(r"[0-9a-f]{64}", body["id"])
    # The state written: its header and an entry.
    assert '"source_bucket": "demo-bucket"' in first
    assert '"status": "queued"' in first
    # Scan 2: every candidate skipped as unchanged, nothing sent.
    for key in CANDIDATES:
        assert _verdict(rest, "skip", key, "unchanged: same ETag as in state"), (key, rest)
    assert not re.search(r"^  send ", rest, re.M)
    assert "candidates 5: queued 0 (new or changed), skipped 5 (unchanged)" in rest
    # Events: a file put into the bucket reached the queue within seconds (listen).
    arrived = re.search(r"put incoming/sales/2026-11-03\.csv: on the queue ([0-9.]+) s later", rest)
    assert arrived is not None and float(arrived.group(1)) < 10, rest
    assert "Demo ok" in rest
    # Short enough to read, and no JSON log lines when no level was asked for.
    assert len(text.splitlines()) <= 60, text
    assert not any(line.startswith("{") for line in err.splitlines()), err


@pytest.mark.slow  # the whole demo in a subprocess again
def test_demo_on_a_terminal_logs_when_a_level_is_asked(tmp_path: Path) -> None:
    """``--log-level INFO``: the JSON log lines come back (on stderr), the story stays."""
    code, text, err = _demo_on_a_terminal(["--log-level", "INFO"], tmp_path)
    assert code == 0, text + err
    events = [json.loads(line).get("event") for line in err.splitlines() if line.startswith("{")]
    assert events.count("scan_summary") == 2, err
    assert _verdict(text, "skip", CANDIDATES[0], "unchanged: same ETag as in state")


def test_verdict_lines_align_in_display_cells() -> None:
    """Keys with wide (CJK) and combining characters (an NFD accent) keep the reasons
    in one column on a terminal: the key is padded by display cells, not characters or
    bytes."""
    keys = [
        "incoming/sales/1.csv",
        "incoming/café/données été.csv",
        "incoming/日本/データ.csv",
        "incoming/cafe\u0301/e\u0301te\u0301.csv",
    ]
    explained = {k: {"action": "send", "reason": "new"} for k in keys}
    out = io.StringIO()
    _verdict_lines(out, explained, keys)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(keys)
    # The reason starts at the same display column on every line.
    starts = {cells(line[: line.rindex("  new")]) for line in lines}
    assert starts == {2 + 6 + 2 + KEY_CELLS}, lines


def test_cells_counts_terminal_columns() -> None:
    assert cells("abc") == 3
    assert cells("données été") == 11
    assert cells("日本") == 4  # wide: two cells each
    assert cells("e\u0301") == 1  # a combining accent takes none
    assert cells("a\u200bb") == 2  # nor does a zero-width space
