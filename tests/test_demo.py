"""``async-discovery demo`` on a terminal: the story a person reads.

The demo runs with stdout on a real pseudo-terminal (stderr on a pipe, so log lines are
told apart from the story). Its form for pipes (two JSON summaries on stdout) is covered
in tests/test_cli.py.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

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
    assert "-> 200: queued 5, skipped 0" in first
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
    assert "-> 200: queued 0, skipped 5" in rest
    # Events: a file put into the bucket reached the queue within seconds (listen).
    arrived = re.search(r"put incoming/sales/2026-11-03\.csv: on the queue ([0-9.]+) s later", rest)
    assert arrived is not None and float(arrived.group(1)) < 10, rest
    assert "Demo ok" in rest
    # Short enough to read, and no JSON log lines when no level was asked for.
    assert len(text.splitlines()) <= 60, text
    assert not any(line.startswith("{") for line in err.splitlines()), err


def test_demo_on_a_terminal_logs_when_a_level_is_asked(tmp_path: Path) -> None:
    """``--log-level INFO``: the JSON log lines come back (on stderr), the story stays."""
    code, text, err = _demo_on_a_terminal(["--log-level", "INFO"], tmp_path)
    assert code == 0, text + err
    events = [json.loads(line).get("event") for line in err.splitlines() if line.startswith("{")]
    assert events.count("scan_summary") == 2, err
    assert _verdict(text, "skip", CANDIDATES[0], "unchanged: same ETag as in state")
