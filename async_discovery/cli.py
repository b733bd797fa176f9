"""The ``async-discovery`` command: ``scan``, ``listen``, ``plan``, ``sum``, ``demo``,
``seed``, ``iam-policy``, ``doctor``, ``state migrate``, ``bench`` and ``moto-server``.

Exit status of ``scan`` (SPEC): 0 when statusCode is 200, 3 when 207, 1 when 500 and 2
for usage errors; 130 / 143 when SIGINT / SIGTERM stopped it (:mod:`.interrupts`). The
summary is one JSON line on stdout (``--output table``: a table for people, same exit
status); logs and the metrics line go to stderr, and so does the live progress line,
drawn only when stderr is a terminal. Terminal rendering lives in
:mod:`async_discovery.console`, the IAM policy in :mod:`async_discovery.iam`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO, cast

import anyio

from ._version import __version__
from .config import LOG_LEVELS, Config, parse_log_level
from .deadline import Deadline
from .errors import ConfigError
from .logs import configure_logging
from .runner import config_error_summary, run_scan
from .settings import SETTING, SETTINGS, Invalid
from .summary import RunStats, build_summary

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
# The package is installed from a checkout (it is on no index).
DEMO_EXTRA = "pip install -c constraints.txt -e '.[demo]' (from a checkout)"
OUTPUTS = ("json", "table")

# The configuration flags scan, doctor and iam-policy share. Every configuration flag
# (name, help, default, variable) is declared in async_discovery/settings.py.
CONFIG_FLAGS = (
    "source_bucket",
    "prefix",
    "queue_url",
    "state_bucket",
    "state_key",
    "skip_folders",
    "endpoint_url",
)
# (flag, Config field, environment variable, help) of each.
SCAN_FLAGS: tuple[tuple[str, str, str | None, str], ...] = tuple(
    (SETTING[field].flag or "", field, SETTING[field].env, SETTING[field].help)
    for field in CONFIG_FLAGS
)


def exit_code(status: int) -> int:
    """Map a summary statusCode to the CLI exit status."""
    return {200: EXIT_OK, 207: EXIT_PARTIAL}.get(status, EXIT_FAILED)


_EPILOG = """\
exit status of scan: 0 = statusCode 200, 3 = 207 (some files failed), 1 = 500 (bad
configuration, LOG_LEVEL included, or the run could not complete), 2 = usage error,
130 / 143 = stopped by SIGINT / SIGTERM (the state records what was sent; a second
signal aborts at once).
demo and bench exit 1 when the demo extra is missing (from a checkout:
pip install -c constraints.txt -e '.[demo]').
Flags override the environment variable named in their help. Credentials and region
come from the standard AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_REGION, ...).
"""


def _help(text: str, env: str | None) -> str:
    """A flag's help with the environment variable behind it (or 'flag only')."""
    return f"{text} [env {env}]" if env else f"{text} [flag only]"


def _add_setting(parser: argparse.ArgumentParser, field: str, **options: Any) -> None:
    """The flag of one setting, with the help, default and variable of its declaration.
    Its value is None when not given, so the environment applies."""
    setting = SETTING[field]
    if setting.flag is None:
        raise ValueError(f"{field} has no flag")
    if setting.switch:
        options.setdefault("action", "store_true")
    elif "choices" not in options:
        options.setdefault("metavar", setting.dest.upper())
    options.setdefault("default", None)
    parser.add_argument(setting.flag, help=setting.cli_help(), **options)


def _add_log_level(parser: argparse.ArgumentParser, **options: Any) -> None:
    _add_setting(parser, "log_level", type=str.upper, choices=LOG_LEVELS, **options)


def _checked(field: str) -> Callable[[str], str]:
    """An argparse ``type`` that checks a flag's value with its setting's parser, so a
    value the setting refuses is a usage error (exit 2); the text is kept for
    :meth:`Config.from_env`."""
    parse = SETTING[field].parse

    def check(text: str) -> str:
        try:
            parse(text)
        except Invalid as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
        return text

    return check


def _log_level_parent() -> argparse.ArgumentParser:
    # Accepted before or after the subcommand: `async-discovery scan --log-level DEBUG`.
    # SUPPRESS keeps the subcommand from resetting a level given before it.
    parent = argparse.ArgumentParser(add_help=False)
    _add_log_level(parent, default=argparse.SUPPRESS)
    return parent


def _add_config_flags(parser: argparse.ArgumentParser, *, endpoint: bool = True) -> None:
    for field in CONFIG_FLAGS:
        if field != "endpoint_url" or endpoint:
            _add_setting(parser, field)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every flag names the environment variable behind it)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="async-discovery",
        description="Find new or updated CSV files in S3 and enqueue them to SQS.",
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_log_level(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_log_level_parent()]

    scan = sub.add_parser(
        "scan",
        help="run one scan",
        description="Run one scan: list the prefix, send new or updated CSVs to SQS, write "
        "the state once. The summary goes to stdout; logs, the metrics line and (on a "
        "terminal) a live progress line go to stderr.",
        epilog=_EPILOG,
        formatter_class=formatter,
        parents=common,
    )
    _add_config_flags(scan)
    _add_setting(scan, "folders", type=_checked("folders"))
    for field in ("dry_run", "explain", "force_rebind"):
        _add_setting(scan, field)
    scan.add_argument(
        "--output",
        choices=OUTPUTS,
        default="json",
        help=_help("summary format on stdout: json (one line, default) or table", None),
    )
    scan.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help=_help(
            "no live progress line (it is drawn only when stderr is a terminal anyway)", None
        ),
    )
    scan.set_defaults(func=cmd_scan, reads_config=True)
    _add_listen(sub, common, formatter)

    plan = sub.add_parser(
        "plan",
        help="write the fan-out plan: the prefix's folders, for a Step Functions Distributed Map",
        description="List the folders of the prefix (one Delimiter listing; skipped folders "
        'left out) and write them as a JSON array of {"folder": F} items to '
        "<state prefix>runs/<prefix>plan.json in the state bucket. Needs "
        "STATE_LAYOUT=folders. Prints one JSON line (statusCode, folders, bucket, key); "
        "exit 0 when written, 1 otherwise. Each child then runs `scan --folders a,b,...`; "
        "`sum` adds up their summaries. docs/fanout.md.",
        formatter_class=formatter,
        parents=common,
    )
    _add_config_flags(plan)
    plan.set_defaults(func=cmd_plan, reads_config=True)

    total = sub.add_parser(
        "sum",
        help="add up the summaries of a fan-out's children into one",
        description="Read summaries (JSON objects: one per line, or JSON arrays of them) from "
        "the files given, or stdin, and print their sum as one JSON line: counters added "
        "up, statusCode 200 when every child returned 200, else 207. Exit status as for "
        "scan (0, 3; 1, with one line on stderr, when the input is not JSON: NaN, "
        "Infinity and nesting too deep to read included).",
        formatter_class=formatter,
        parents=common,
    )
    total.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help=_help("files of summaries ('-' or none: stdin)", None),
    )
    total.set_defaults(func=cmd_sum)

    policy = sub.add_parser(
        "iam-policy",
        help="print the least-privilege IAM policy for this configuration",
        description="Print the IAM policy (JSON) the scanner's role needs for the configured "
        "source bucket and prefix, state object and queue. Makes no AWS call. Notes about "
        "parts that could not be derived (e.g. a moto queue URL has no region) go to "
        "stderr.",
        formatter_class=formatter,
        parents=common,
    )
    _add_config_flags(policy, endpoint=False)
    policy.add_argument(
        "--region",
        default=None,
        help=_help(
            "region for the queue ARN when the queue URL does not name one (moto, "
            "LocalStack); default '*'",
            "AWS_REGION or AWS_DEFAULT_REGION",
        ),
    )
    policy.add_argument(
        "--doctor",
        action="store_true",
        help=_help(
            "add what `doctor` needs on top: s3:PutObject and s3:DeleteObject on its probe "
            "object beside the state, sqs:GetQueueAttributes on the queue",
            None,
        ),
    )
    policy.set_defaults(func=cmd_iam_policy, reads_config=True)

    doctor = sub.add_parser(
        "doctor",
        help="check that the store, the queue and the role do what a scan relies on",
        description="Check the configuration, the source listing, the state object, the "
        "store's conditional writes, the queue, the clock and the permissions; one line "
        "per check (ok / warn / fail, what was found, the fix). Exit 0 when no check "
        "failed, 1 otherwise. Never writes the state object or changes the queue's "
        "contents (its writes go to a probe object beside the state). docs/doctor.md.",
        formatter_class=formatter,
        parents=common,
    )
    _add_config_flags(doctor)
    _add_setting(doctor, "force_rebind")
    doctor.add_argument(
        "--deep",
        action="store_true",
        help=_help("also compare a listing continued key by key with one page", None),
    )
    doctor.add_argument(
        "--send-test-message",
        action="store_true",
        help=_help("send one clearly marked test message to the queue", None),
    )
    doctor.add_argument(
        "--output", choices=("text", "json"), default="text", help=_help("text or json", None)
    )
    doctor.set_defaults(func=cmd_doctor, reads_config=True)

    state = sub.add_parser(
        "state",
        help="manage the state objects (migrate between layouts)",
        description="Manage the state objects of the configured prefix.",
        formatter_class=formatter,
        parents=common,
    )
    state_sub = state.add_subparsers(dest="state_command", metavar="COMMAND", required=True)
    migrate = state_sub.add_parser(
        "migrate",
        help="convert the prefix's state between STATE_LAYOUT single and folders",
        description="Convert the state of the configured prefix between the layouts of the "
        "same S3_STATE_KEY (single: one object; folders: a shard per folder) without "
        "losing an entry. Idempotent; the source object(s) stay in place; a target that "
        "differs is refused (nothing written) unless --force. The cursor of a truncated "
        "pass is not migrated. One line per target object (would write / wrote / same / "
        "differs / failed); exit 0 when done, 1 when refused or failed. docs/operations.md.",
        formatter_class=formatter,
        parents=common,
    )
    _add_config_flags(migrate)
    migrate.add_argument(
        "--to",
        required=True,
        choices=("folders", "single"),
        help=_help("the layout to write", None),
    )
    migrate.add_argument(
        "--dry-run",
        action="store_true",
        help=_help("say what would be written; write nothing", None),
    )
    migrate.add_argument(
        "--force", action="store_true", help=_help("overwrite targets that differ", None)
    )
    migrate.add_argument(
        "--output", choices=("text", "json"), default="text", help=_help("text or json", None)
    )
    migrate.set_defaults(func=cmd_state_migrate, reads_config=True)

    seed = sub.add_parser(
        "seed",
        help="put the demo's sample bucket and queue on a local endpoint (moto)",
        description="Create the demo's sample bucket (objects under incoming/) and queue on "
        "an S3/SQS endpoint such as a moto server you started, so `scan` has something to "
        "find. Prints one JSON line with the bucket, prefix and queue URL.",
        formatter_class=formatter,
        parents=common,
    )
    seed.add_argument(
        "--endpoint-url",
        default=None,
        help=_help("the endpoint to seed; required", "AWS_ENDPOINT_URL"),
    )
    seed.add_argument(
        "--bucket",
        default=None,
        help=_help("bucket to create; default demo-bucket", "S3_SOURCE_BUCKET"),
    )
    seed.add_argument(
        "--queue-name",
        default="demo-queue",
        help=_help("queue to create; default demo-queue", None),
    )
    seed.set_defaults(func=cmd_seed)

    demo = sub.add_parser(
        "demo",
        help="scan sample data on an in-process moto server (no AWS account)",
        description="Start a moto server on 127.0.0.1, seed a sample bucket, scan twice. "
        "Needs the demo extra (from a checkout: pip install -e '.[demo]'; without it: one line "
        "saying so on stderr, exit status 1). Reads no environment variables but LOG_LEVEL.",
        formatter_class=formatter,
        parents=common,
    )
    demo.set_defaults(func=cmd_demo)

    from .bench.options import add_arguments as add_bench_arguments

    bench = sub.add_parser(
        "bench",
        help="throughput benchmark on a local moto server, with sequential and floor references",
        description="Seed a moto server on 127.0.0.1 (or --endpoint-url), put a latency "
        "proxy in front, run cold, warm and incremental scans side by side with the "
        "sequential design and the request floor, and print the figures and ratios. "
        "Needs the demo extra (from a checkout: pip install -e '.[demo]'; without it: one line "
        "saying so on stderr, exit status 1).",
        formatter_class=formatter,
        parents=common,
    )
    add_bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    moto = sub.add_parser(
        "moto-server",
        help="run a local moto server (S3, SQS, ...) whose SQS keeps its speed as queues fill",
        description="Run moto's server with the bench's one patch: stock moto's SQS send "
        "and receive cost grows with the queue's depth (a 3,000-file scan into a fresh "
        "queue took minutes); here they do not. Everything else is moto as shipped. Binds "
        "127.0.0.1 unless -H says otherwise. Needs the demo extra.",
        formatter_class=formatter,
        parents=common,
    )
    moto.add_argument(
        "-H",
        "--host",
        default="127.0.0.1",
        help=_help("address to listen on; default 127.0.0.1", None),
    )
    moto.add_argument(
        "-p", "--port", type=int, default=5000, help=_help("port; default 5000", None)
    )
    moto.set_defaults(func=cmd_moto_server)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # The flag (validated by argparse) wins over LOG_LEVEL. A bad LOG_LEVEL is a
    # configuration problem: commands that read the configuration report it with every
    # other bad variable (exit 1); the others report it alone. Logging runs at INFO
    # meanwhile, so the error itself can be logged.
    problems: list[str] = []
    configure_logging(args.log_level or parse_log_level(os.environ.get("LOG_LEVEL"), problems))
    if problems and not getattr(args, "reads_config", False):
        for problem in problems:
            sys.stderr.write(f"async-discovery {args.command}: {problem}\n")
        return EXIT_FAILED
    code: int = args.func(args)
    return code


def _print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _print_summary(summary: dict[str, Any], output: str) -> None:
    if output == "table":
        from .console import summary_table

        sys.stdout.write(summary_table(summary))
        sys.stdout.flush()
    else:
        _print_json(summary)


def _config_from_args(
    args: argparse.Namespace, command: str, **overrides: Any
) -> Config | ConfigError:
    """The Config from the environment and the flags, or the ConfigError after printing
    each of its problems on stderr, one line each."""
    for setting in SETTINGS:
        if setting.flag is not None:
            overrides.setdefault(setting.field, getattr(args, setting.dest, None))
    try:
        return Config.from_env(os.environ, **overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"async-discovery {command}: {problem}\n")
        return exc


def cmd_scan(args: argparse.Namespace) -> int:
    """``scan``: one run; the summary on stdout; exit 0/3/1."""
    if args.explain and not args.dry_run:
        sys.stderr.write("async-discovery scan: --explain needs --dry-run\n")
        return EXIT_USAGE
    config = _config_from_args(args, "scan")
    if isinstance(config, ConfigError):
        _print_summary(config_error_summary(config), args.output)
        return EXIT_FAILED
    # A table on a terminal is for a person: no JSON log lines or metrics record above
    # it (warnings still show), unless a level was asked for (as the demo does).
    quiet = args.output == "table" and sys.stderr.isatty()
    quiet = quiet and not (args.log_level or os.environ.get("LOG_LEVEL"))
    log_level = "WARNING" if quiet else config.log_level
    configure_logging(log_level)
    # Progress only for a person watching: not when stderr is a file or a pipe, and not
    # with --explain (its lines on stdout would interleave with the status line).
    progress = args.progress and not config.explain and sys.stderr.isatty()
    summary, interrupted = anyio.run(_interruptible_scan, config, progress, log_level, not quiet)
    _print_summary(summary, args.output)
    _say_notices(summary)
    return interrupted if interrupted is not None else exit_code(int(summary["statusCode"]))


def _say_notices(summary: dict[str, Any]) -> None:
    """The summary's notices as plain lines on stderr, for a person at the terminal
    (the JSON log has them too)."""
    for notice in summary.get("notices", ()):
        sys.stderr.write(f"async-discovery scan: warning: {notice}\n")


async def _interruptible_scan(
    config: Config, progress: bool, log_level: str, emit_metrics: bool = True
) -> tuple[dict[str, Any], int | None]:
    """``run_scan`` that SIGINT and SIGTERM stop as the deadline does (a second one
    aborts it: :mod:`async_discovery.interrupts`), with a live status line on stderr when
    ``progress``; the summary and, after a signal, the exit status it calls for."""
    from .console import ProgressLine
    from .interrupts import Interrupts

    stats, deadline, started = RunStats(), Deadline(), time.perf_counter()
    line = ProgressLine(sys.stderr, stats) if progress else None
    # Logs and the metrics line go through the status line, which clears itself first.
    stream = cast(TextIO, line) if line is not None else sys.stderr

    def say(text: str) -> None:
        stream.write(f"async-discovery scan: {text}\n")
        stream.flush()

    scope = anyio.CancelScope()
    interrupts = Interrupts(deadline, scope, say)
    summary: dict[str, Any] | None = None
    if line is not None:
        configure_logging(log_level, stream)
    try:
        async with anyio.create_task_group() as tg:
            if line is not None:
                tg.start_soon(line.run)
            await tg.start(interrupts.watch)
            with scope:
                summary = await run_scan(
                    config,
                    deadline=deadline,
                    stats=stats,
                    explain=_print_json if config.explain else None,
                    metrics_stream=stream,
                    emit_metrics=emit_metrics,
                )
            tg.cancel_scope.cancel()
        if line is not None:
            line.finish()
    finally:
        if line is not None:
            configure_logging(log_level)
    if summary is None:  # a second signal cancelled the run: nothing was recorded
        stats.truncated = True
        seconds = time.perf_counter() - started
        summary = build_summary(stats, seconds, error=interrupts.abort_error())
    return summary, interrupts.exit_status


def _add_listen(
    sub: Any, common: list[argparse.ArgumentParser], formatter: type[argparse.HelpFormatter]
) -> None:
    listen = sub.add_parser(
        "listen",
        help="handle S3 Event Notifications from an events queue until SIGINT/SIGTERM",
        description="Long-poll the events queue (S3 Event Notifications, direct, through SNS "
        "or EventBridge), handle each batch exactly as the Lambda function does (same "
        "decisions, messages, state writes, log line and metrics record) and delete the "
        "handled messages. SIGINT/SIGTERM: finish the batch in hand, print the totals as "
        "one JSON line, exit 0 (1 when the events queue cannot be read or the "
        "configuration is invalid). docs/events.md.",
        formatter_class=formatter,
        parents=common,
    )
    _add_config_flags(listen)
    _add_setting(listen, "events_queue_url")
    listen.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help=_help(
            "records per batch, 1-10000, as the event source mapping's BatchSize; default 100 "
            "(a batch is what the queue has at once, up to this: small when files trickle "
            "in, larger under a burst, so a folder's state is written once per batch)",
            None,
        ),
    )
    listen.add_argument(
        "--batch-window",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=_help(
            "wait up to this long to fill a batch, as MaximumBatchingWindowInSeconds;"
            " default 0 (a batch is what the queue has at once)",
            None,
        ),
    )
    listen.add_argument(
        "--wait-seconds",
        type=int,
        default=20,
        choices=range(0, 21),
        metavar="0-20",
        help=_help("long-poll wait of ReceiveMessage; default 20", None),
    )
    listen.set_defaults(func=cmd_listen, reads_config=True)


def cmd_listen(args: argparse.Namespace) -> int:
    """``listen``: the event path until a signal; totals on stdout; exit 0/1."""
    from .listen import ListenOptions, run_cli

    if not 1 <= args.batch_size <= 10_000 or args.batch_window < 0:
        sys.stderr.write("async-discovery listen: --batch-size 1-10000, --batch-window >= 0\n")
        return EXIT_USAGE
    config = _config_from_args(args, "listen")
    if isinstance(config, ConfigError):
        return EXIT_FAILED
    if not config.events_queue_url:
        sys.stderr.write(
            "async-discovery listen: --events-queue-url (or EVENTS_QUEUE_URL) is required\n"
        )
        return EXIT_FAILED
    options = ListenOptions(args.batch_size, args.batch_window, args.wait_seconds)
    return run_cli(config, options)


def cmd_plan(args: argparse.Namespace) -> int:
    """``plan``: write the fan-out plan; its location on stdout; exit 0/1."""
    from .fanout import layout_problem, run_plan

    config = _config_from_args(args, "plan")
    if isinstance(config, ConfigError):
        _print_json(config_error_summary(config))
        return EXIT_FAILED
    problem = layout_problem(config)
    if problem is not None:
        sys.stderr.write(f"async-discovery plan: {problem}\n")
        _print_json(config_error_summary(ConfigError([problem])))
        return EXIT_FAILED
    result = anyio.run(run_plan, config)
    _print_json(result)
    return exit_code(int(result["statusCode"]))


def cmd_sum(args: argparse.Namespace) -> int:
    """``sum``: add up summaries read from files or stdin; exit as ``scan`` does. Input
    that is not JSON (NaN and Infinity included: JSON has neither) or is nested too
    deep to read is one line on stderr and exit 1."""
    from .fanout import sum_summaries

    children: list[Any] = []
    for name in args.files or ["-"]:
        try:
            if name == "-":
                text = sys.stdin.read()
            else:
                with open(name, encoding="utf-8") as handle:
                    text = handle.read()
            children.extend(_json_documents(text))
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"async-discovery sum: {name}: {exc}\n")
            return EXIT_FAILED
        except RecursionError:
            sys.stderr.write(f"async-discovery sum: {name}: not a summary: nested too deep\n")
            return EXIT_FAILED
    summary = sum_summaries(children)
    try:
        line = json.dumps(summary, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:  # a total out of range (say, past 1e308 seconds)
        sys.stderr.write(f"async-discovery sum: the total cannot be written as JSON: {exc}\n")
        return EXIT_FAILED
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return exit_code(int(summary["statusCode"]))


def _finite(text: str) -> float:
    """A JSON number read as a float, refused when out of range (``1e400`` is inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _no_constant(name: str) -> Any:
    """Python's json reads NaN and Infinity; JSON has neither."""
    raise ValueError(f"not JSON: {name}")


def _json_documents(text: str) -> list[Any]:
    """The JSON values in ``text``, one after another (JSON lines, or arrays of them)."""
    decoder = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)
    found: list[Any] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return found
        value, index = decoder.raw_decode(text, index)
        found.extend(value if isinstance(value, list) else [value])


def cmd_iam_policy(args: argparse.Namespace) -> int:
    """``iam-policy``: print the least-privilege policy JSON on stdout; no AWS call."""
    from .iam import build_policy

    config = _config_from_args(args, "iam-policy")
    if isinstance(config, ConfigError):
        return EXIT_FAILED
    region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    policy = build_policy(config, region=region or None, doctor=args.doctor)
    for note in policy.notes:
        sys.stderr.write(f"async-discovery iam-policy: note: {note}\n")
    sys.stdout.write(json.dumps(policy.document, indent=2) + "\n")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """``doctor``: one line per check; exit 0 when none failed, else 1."""
    from .doctor import run_cli

    config = _config_from_args(args, "doctor")
    return run_cli(
        config, deep=args.deep, send_test_message=args.send_test_message, output=args.output
    )


def cmd_state_migrate(args: argparse.Namespace) -> int:
    """``state migrate``: convert the prefix's state between layouts; exit 0/1."""
    from .migrate import run_cli as run_migrate

    # No queue is involved: dry_run=True makes SQS_QUEUE_URL optional (the migration's
    # own --dry-run is args.dry_run).
    config = _config_from_args(args, "state migrate", dry_run=True)
    if isinstance(config, ConfigError):
        return EXIT_FAILED
    return run_migrate(
        config, to=args.to, dry_run=args.dry_run, force=args.force, output=args.output
    )


def cmd_seed(args: argparse.Namespace) -> int:
    """``seed``: the demo's sample data on a local endpoint; prints bucket and queue URL."""
    from .aws.errors import AWS_ERRORS, describe
    from .demo import BUCKET, PREFIX, SAMPLE, seed_sample

    endpoint = (
        args.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if not endpoint:
        sys.stderr.write(
            "async-discovery seed: --endpoint-url (or AWS_ENDPOINT_URL) is required; "
            "expected the URL of a local S3/SQS endpoint such as http://127.0.0.1:5000\n"
        )
        return EXIT_USAGE
    bucket = args.bucket or os.environ.get("S3_SOURCE_BUCKET") or BUCKET
    try:
        queue_url = anyio.run(seed_sample, endpoint, bucket, args.queue_name)
    except AWS_ERRORS as exc:
        sys.stderr.write(f"async-discovery seed: seeding {endpoint} failed: {describe(exc)}\n")
        return EXIT_FAILED
    _print_json(
        {
            "endpoint_url": endpoint,
            "bucket": bucket,
            "prefix": PREFIX,
            "queue_url": queue_url,
            "objects": len(SAMPLE),
        }
    )
    return EXIT_OK


def missing_demo_extra(command: str) -> bool:
    """True, after saying so in one line on stderr, when the demo extra (moto's server)
    cannot be imported: the demo and the bench need it, the scanner never does."""
    try:
        importlib.import_module("moto.server")
    except ImportError as exc:
        missing = (exc.name or "moto").split(".")[0]
        sys.stderr.write(
            f"async-discovery {command}: needs the demo extra ({missing} is not installed); "
            f"install it with: {DEMO_EXTRA}\n"
        )
        return True
    return False


def cmd_bench(args: argparse.Namespace) -> int:
    """``bench``: the throughput benchmark (imported only when asked for)."""
    if missing_demo_extra("bench"):
        return EXIT_FAILED
    from .bench import cmd_bench as run_bench

    return run_bench(args)


def cmd_moto_server(args: argparse.Namespace) -> int:
    """``moto-server``: the bench's moto in the foreground until interrupted."""
    if missing_demo_extra("moto-server"):
        return EXIT_FAILED
    from .bench.moto_main import main as moto_main

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(
            f"async-discovery moto-server: note: listening on {args.host}, not only on "
            "loopback; moto has no authentication\n"
        )
    moto_main(["-H", args.host, "-p", str(args.port)])
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: the self-contained demonstration."""
    if missing_demo_extra("demo"):
        return EXIT_FAILED
    from .demo import run_demo

    # On a terminal the demo shows its JSON logs only when a level was asked for.
    return run_demo(log_level=args.log_level or os.environ.get("LOG_LEVEL") or None)
