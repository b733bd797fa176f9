"""The ``async-discovery`` command as a person or a script uses it, against moto.

Covers: ``scan`` output (one JSON line or a table), exit codes, live progress only on a
terminal, ``--log-level`` on either side of the subcommand, ``--version``, ``--help`` of
every subcommand naming the environment variable behind each flag, configuration errors
(one line per problem: variable, flag, value, what is accepted), ``seed`` and ``demo``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from async_discovery import __version__
from async_discovery.cli import SCAN_FLAGS, build_parser, main
from async_discovery.config import FLAG_OF

from .helpers import SCANNER_VARIABLES, MotoEnv, read_terminal

pytestmark = pytest.mark.usefixtures("clean_config_env")


@pytest.fixture
def scan_env(
    env: MotoEnv, bucket: str, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Variables for a scan of ``bucket``'s ``incoming/`` against moto (two candidates)."""
    env.put(bucket, "incoming/sales/1.csv")
    env.put(bucket, "incoming/sales/2.csv")
    env.put(bucket, "incoming/notes.txt")
    return env.set_variables(monkeypatch, bucket, queue_url)


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCANNER_VARIABLES}
    env.update(extra)
    return env


# -- scan output and exit codes --------------------------------------------------------


def test_scan_prints_one_json_line_and_exits_0(
    scan_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert (summary["statusCode"], summary["queued"], summary["ignored"]) == (200, 2, 1)
    assert list(summary)[:5] == [
        "statusCode",
        "queued",
        "skipped",
        "errors",
        "execution_time_seconds",
    ]
    # stderr: JSON logs and the EMF line, no progress (capsys is not a terminal).
    assert "\r" not in err
    assert all(json.loads(line) for line in err.splitlines())
    assert any('"_aws"' in line for line in err.splitlines())


def test_scan_table_output(scan_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--output", "table"]) == 0
    out, _ = capsys.readouterr()
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines()[1:-1])
    assert rows["status"] == "200 complete"
    assert (rows["queued"], rows["skipped (unchanged)"], rows["errors"]) == ("2", "0", "0")
    assert rows["ignored"] == "1" and rows["api calls: SendMessageBatch"] == "1"
    assert out.splitlines()[0].startswith("---")
    # Second run: nothing new, same exit status.
    assert main(["scan", "--output", "table"]) == 0
    out, _ = capsys.readouterr()
    assert re.search(r"^skipped \(unchanged\)\s+2$", out, re.M)
    assert re.search(r"^queued\s+0$", out, re.M)


def test_scan_partial_and_failed_exit_codes(
    scan_env: dict[str, str], env: MotoEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    # A queue that does not exist: the run cannot complete -> 500 -> exit 1.
    gone = scan_env["SQS_QUEUE_URL"].rsplit("/", 1)[0] + "/no-such-queue"
    assert main(["scan", "--queue-url", gone]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["statusCode"] == 500 and summary["error"]
    assert env.state(scan_env["S3_SOURCE_BUCKET"]) is None


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["scan", "--output", "yaml"])
    assert info.value.code == 2
    assert "invalid choice: 'yaml'" in capsys.readouterr().err
    assert main(["scan", "--explain", "--bucket", "b-ucket"]) == 2


def test_dry_run_with_table(scan_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--dry-run", "--output", "table"]) == 0
    out, _ = capsys.readouterr()
    assert re.search(r"^dry run\s+yes$", out, re.M)
    assert re.search(r"^queued\s+2$", out, re.M)


# -- progress ----------------------------------------------------------------------------


def _run_with_terminal_stderr(args: list[str], extra: dict[str, str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal; return (status, stdout, terminal)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "async_discovery", *args],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=subprocess_env(extra),
    )
    os.close(follower)
    terminal = read_terminal(leader)
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    return proc.returncode, out.decode(), terminal.decode()


def test_progress_is_drawn_on_a_terminal(scan_env: dict[str, str]) -> None:
    code, out, terminal = _run_with_terminal_stderr(["scan"], scan_env)
    assert code == 0, terminal
    assert json.loads(out)["queued"] == 2  # stdout is still the one JSON line
    assert "\r\x1b[K" in terminal
    final = terminal.replace("\r\n", "\n").rstrip("\n").split("\r\x1b[K")[-1]
    assert re.fullmatch(
        r"scan: listed 3 \| queued 2 \| skipped 0 \| errors 0 \| [\d,]+ files/s \| [\d.]+s",
        final,
    ), final
    # Log lines are whole lines: the status line is cleared before each one.
    for line in terminal.replace("\r\x1b[K", "\n").replace("\r\n", "\n").splitlines():
        if line.startswith("{"):
            json.loads(line)


def test_no_progress_flag_on_a_terminal(scan_env: dict[str, str]) -> None:
    code, _, terminal = _run_with_terminal_stderr(["scan", "--no-progress"], scan_env)
    assert code == 0 and "\r\x1b[K" not in terminal and "scan: listed" not in terminal


def test_no_progress_when_stderr_is_not_a_terminal(scan_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "async_discovery", "scan"],
        capture_output=True,
        text=True,
        env=subprocess_env(scan_env),
        timeout=60,
    )
    assert proc.returncode == 0
    assert "\r" not in proc.stderr and "scan: listed" not in proc.stderr
    assert json.loads(proc.stdout)["statusCode"] == 200


def test_table_on_a_terminal_keeps_logs_quiet_unless_a_level_is_asked(
    scan_env: dict[str, str],
) -> None:
    """``--output table`` with a person at the terminal: no JSON log line and no metrics
    record above the table; ``--log-level`` (or LOG_LEVEL) brings them back."""
    code, out, terminal = _run_with_terminal_stderr(["scan", "--output", "table"], scan_env)
    assert code == 0, terminal
    assert re.search(r"^queued\s+2$", out, re.M), out
    assert "{" not in terminal, terminal  # neither log lines nor the EMF record
    assert "scan: listed 3" in terminal  # the progress line stays
    code, out, terminal = _run_with_terminal_stderr(
        ["scan", "--output", "table", "--log-level", "INFO"], scan_env
    )
    assert code == 0, terminal
    lines = terminal.replace("\r\x1b[K", "\n").replace("\r\n", "\n").splitlines()
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(d.get("event") == "scan_summary" for d in docs)
    assert any("_aws" in d for d in docs)


# -- logging, version, help -------------------------------------------------------------


def test_log_level_before_or_after_the_subcommand(
    scan_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("async_discovery")
    assert main(["scan", "--log-level", "error"]) == 0
    assert logger.level == logging.ERROR
    assert '"level": "INFO"' not in capsys.readouterr().err
    assert main(["--log-level", "DEBUG", "scan"]) == 0
    assert logger.level == logging.DEBUG
    assert '"level": "INFO"' in capsys.readouterr().err
    # After the subcommand wins over before it.
    assert main(["--log-level", "DEBUG", "scan", "--log-level", "WARNING"]) == 0
    assert logger.level == logging.WARNING
    assert '"level": "INFO"' not in capsys.readouterr().err
    monkeypatch.setenv("LOG_LEVEL", "warning")
    assert main(["scan"]) == 0
    assert logger.level == logging.WARNING


def test_invalid_log_level_variable_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    assert main(["iam-policy", "--bucket", "b-ucket", "--queue-url", "http://h/1/q"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "async-discovery iam-policy: LOG_LEVEL (--log-level) = 'chatty': unknown log level; "
        "expected DEBUG, INFO, WARNING, ERROR\n"
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"async-discovery {__version__}"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    subs = _subcommands(build_parser())
    assert set(subs) == {
        "scan",
        "listen",
        "demo",
        "seed",
        "iam-policy",
        "bench",
        "doctor",
        "plan",
        "sum",
        "state",
        "moto-server",
    }
    for name in subs:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: async-discovery {name}")


def test_help_names_the_variable_behind_every_flag() -> None:
    parser = build_parser()
    parsers = {"": parser, **_subcommands(parser)}
    for name, sub in parsers.items():
        for action in sub._actions:
            if not action.option_strings or action.option_strings[0] in ("-h", "--version"):
                continue
            text = action.help or ""
            assert re.search(r"\[(env [A-Z_]+|flag only)", text), (name, action.option_strings)


def test_help_and_config_agree_on_flags_and_variables() -> None:
    """The flag named in a config problem is the CLI flag for that variable."""
    for flag, _field, env_name, _text in SCAN_FLAGS:
        if env_name is not None:
            assert FLAG_OF[env_name] == flag
    subs = _subcommands(build_parser())
    flags = {s for a in subs["scan"]._actions for s in a.option_strings}
    assert set(FLAG_OF.values()) - flags == {"--events-queue-url"}  # listen's
    assert "--events-queue-url" in {s for a in subs["listen"]._actions for s in a.option_strings}


# -- configuration errors ---------------------------------------------------------------


def test_config_errors_one_line_per_problem(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "scan",
            "--bucket",
            "Bad_Bucket",
            "--queue-url",
            "not-a-url",
            "--prefix",
            "/incoming",
            "--skip-folders",
            "logs,a/b",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1
    lines = err.splitlines()
    assert lines == [
        "async-discovery scan: S3_SOURCE_BUCKET (--bucket) = 'Bad_Bucket': not a valid bucket "
        "name; expected 3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a "
        "letter or digit",
        "async-discovery scan: S3_PREFIX (--prefix) = '/incoming': starts with '/' (S3 keys "
        "have no leading '/'); expected a relative key prefix such as 'incoming' or "
        "'incoming/' (empty = whole bucket)",
        "async-discovery scan: SQS_QUEUE_URL (--queue-url) = 'not-a-url': not a queue URL; "
        "expected https://sqs.<region>.amazonaws.com/<account id>/<queue name>",
        "async-discovery scan: SKIP_FOLDERS (--skip-folders) = 'logs,a/b': folder names cannot "
        "contain '/' ('a/b'); expected comma-separated folder names such as 'logs,temp' "
        "(empty = skip none)",
    ]
    summary = json.loads(out)
    assert summary["statusCode"] == 500 and len(summary["problems"]) == 4


def test_config_errors_for_missing_and_tuning_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKERS", "many")
    monkeypatch.setenv("PRUNE_MISSING", "maybe")
    assert main(["scan", "--output", "table"]) == 1
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("async-discovery scan: S3_SOURCE_BUCKET (--bucket) is required")
    assert lines[1].startswith("async-discovery scan: SQS_QUEUE_URL (--queue-url) is required")
    assert "PRUNE_MISSING = 'maybe': not a boolean; expected true or false" in err
    assert "WORKERS = 'many': not a whole number; expected a whole number >= 1" in err
    # Every line: a variable name, and what is accepted.
    for line in lines:
        assert re.match(r"async-discovery scan: [A-Z0-9_]+ ", line) and "; expected " in line
    assert "500 failed" in out and "  - WORKERS = 'many'" in out


def test_config_error_for_endpoint_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--bucket", "b-ucket", "--dry-run", "--endpoint-url", "ftp://x"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "async-discovery scan: --endpoint-url = 'ftp://x': not an http(s) URL; expected a URL "
        "such as http://127.0.0.1:5000 (or leave it out and set AWS_ENDPOINT_URL)"
    )


# -- seed and demo -------------------------------------------------------------------------


def test_seed_then_scan_the_seeded_bucket(
    env: MotoEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's "moto server you started yourself" path: seed, scan, scan again."""
    bucket = "seed-" + os.urandom(4).hex()
    assert main(["seed", "--endpoint-url", env.endpoint, "--bucket", bucket]) == 0
    seeded = json.loads(capsys.readouterr().out)
    assert seeded["bucket"] == bucket and seeded["prefix"] == "incoming"
    assert seeded["queue_url"].endswith("/demo-queue")
    # Seeding twice is harmless (docker compose restarts).
    assert main(["seed", "--endpoint-url", env.endpoint, "--bucket", bucket]) == 0
    capsys.readouterr()
    env.bodies(seeded["queue_url"])  # another test's seed may have used demo-queue too
    monkeypatch.setenv("AWS_ENDPOINT_URL", env.endpoint)
    monkeypatch.setenv("S3_SOURCE_BUCKET", bucket)
    monkeypatch.setenv("S3_PREFIX", "incoming")
    monkeypatch.setenv("SQS_QUEUE_URL", seeded["queue_url"])
    assert main(["scan"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["statusCode"], first["queued"]) == (200, 5)
    assert main(["scan", "--output", "table"]) == 0
    assert re.search(r"^queued\s+0$", capsys.readouterr().out, re.M)
    assert len(env.bodies(seeded["queue_url"])) == 5


def test_seed_needs_an_endpoint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    assert main(["seed"]) == 2
    assert "--endpoint-url (or AWS_ENDPOINT_URL) is required" in capsys.readouterr().err


def test_seed_reports_an_unreachable_endpoint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from async_discovery.testing.moto_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own: no retry backoff here
    assert main(["seed", "--endpoint-url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"async-discovery seed: seeding {url} failed:")


def test_demo_runs(tmp_path: Path) -> None:
    """``async-discovery demo``: two summaries, the second queues nothing, exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "async_discovery", "demo"],
        capture_output=True,
        text=True,
        env=subprocess_env({}),
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    assert first["queued"] == 5 and second["queued"] == 0
    assert "event path: put incoming/sales/2026-11-03.csv: on the queue" in proc.stderr
    assert "demo ok" in proc.stderr
