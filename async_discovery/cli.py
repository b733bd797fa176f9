"""The ``async-discovery`` command: ``scan`` and ``demo``.

Exit status of ``scan`` (SPEC): 0 when statusCode is 200, 3 when 207, 1 when 500 and 2
for usage errors. The summary is one JSON line on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from ._version import __version__
from .config import Config
from .errors import ConfigError
from .logs import configure_logging
from .runner import config_error_summary, run_scan

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

# (flag, Config field, environment variable, help)
SCAN_FLAGS: tuple[tuple[str, str, str | None, str], ...] = (
    ("--bucket", "source_bucket", "S3_SOURCE_BUCKET", "bucket holding the CSV files"),
    ("--prefix", "prefix", "S3_PREFIX", "prefix to scan ('incoming' = 'incoming/')"),
    ("--queue-url", "queue_url", "SQS_QUEUE_URL", "target SQS queue URL (standard or FIFO)"),
    ("--state-bucket", "state_bucket", "S3_STATE_BUCKET", "bucket of the state object"),
    ("--state-key", "state_key", "S3_STATE_KEY", "key of the state object"),
    ("--skip-folders", "skip_folders", "SKIP_FOLDERS", "comma-separated folders to skip"),
    (
        "--endpoint-url",
        "endpoint_url",
        None,
        "S3 and SQS endpoint (default: botocore's AWS_ENDPOINT_URL[_S3|_SQS] or AWS)",
    ),
)


def exit_code(status: int) -> int:
    """Map a summary statusCode to the CLI exit status."""
    return {200: EXIT_OK, 207: EXIT_PARTIAL}.get(status, EXIT_FAILED)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every flag names the environment variable behind it)."""
    parser = argparse.ArgumentParser(
        prog="async-discovery",
        description="Find new or updated CSV files in S3 and enqueue them to SQS.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level of the JSON logs on stderr (env LOG_LEVEL; default INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    scan = sub.add_parser(
        "scan",
        help="run one scan",
        description="Run one scan. Flags override the environment variables named.",
    )
    for flag, _field, env, text in SCAN_FLAGS:
        env_text = f" (env {env})" if env else ""
        scan.add_argument(flag, default=None, help=f"{text}{env_text}")
    scan.add_argument(
        "--dry-run", action="store_true", help="send nothing, write nothing; count what would go"
    )
    scan.add_argument(
        "--explain",
        action="store_true",
        help="with --dry-run: one JSON line per object on stdout saying why",
    )
    scan.add_argument(
        "--force-rebind",
        action="store_true",
        default=None,
        help="accept a state object recorded for another bucket (env FORCE_REBIND)",
    )
    scan.set_defaults(func=cmd_scan)

    demo = sub.add_parser(
        "demo",
        help="scan sample data on an in-process moto server (no AWS account)",
        description="Start a moto server on 127.0.0.1, seed a sample bucket, scan twice.",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    code: int = args.func(args)
    return code


def _print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def cmd_scan(args: argparse.Namespace) -> int:
    """``scan``: one run; the summary on stdout; exit 0/3/1."""
    overrides: dict[str, Any] = {}
    for flag, field, _env, _text in SCAN_FLAGS:
        overrides[field] = getattr(args, flag[2:].replace("-", "_"))
    overrides["dry_run"] = bool(args.dry_run) or None
    overrides["explain"] = bool(args.explain) or None
    overrides["force_rebind"] = args.force_rebind
    if args.explain and not args.dry_run:
        sys.stderr.write("async-discovery scan: --explain needs --dry-run\n")
        return EXIT_USAGE
    try:
        config = Config.from_env(os.environ, **overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"async-discovery scan: {problem}\n")
        _print_json(config_error_summary(exc))
        return EXIT_FAILED
    explain = _print_json if config.explain else None
    summary = anyio.run(functools.partial(run_scan, config, explain=explain))
    _print_json(summary)
    return exit_code(int(summary["statusCode"]))


def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: the self-contained demonstration."""
    from .demo import run_demo

    return run_demo()
