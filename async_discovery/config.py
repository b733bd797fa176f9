"""The run configuration: one frozen dataclass, built from the environment in one place.

Only :meth:`Config.from_env` reads environment variables; explicit overrides (CLI flags)
win over them. Every invalid or missing value is collected, so one
:class:`~async_discovery.errors.ConfigError` names all of them at once.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from .discovery import normalise_prefix
from .errors import ConfigError

ListStrategy = Literal["auto", "folders", "flat"]
RetryMode = Literal["standard", "adaptive", "legacy"]

DEFAULT_STATE_KEY = "state/processed_files.json"
DEFAULT_SKIP_FOLDERS = ("logs", "temp", "backups")

# S3 general-purpose bucket naming rules (3-63 chars, lower case, digits, dots, hyphens).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_BUCKET_RULE = (
    "3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit"
)
_QUEUE_URL_FORM = "https://sqs.<region>.amazonaws.com/<account id>/<queue name>"

# The CLI flag behind each variable that has one, so a problem line names both
# (tests/test_cli.py checks this against the CLI's parser).
FLAG_OF: dict[str, str] = {
    "S3_SOURCE_BUCKET": "--bucket",
    "S3_PREFIX": "--prefix",
    "SQS_QUEUE_URL": "--queue-url",
    "S3_STATE_BUCKET": "--state-bucket",
    "S3_STATE_KEY": "--state-key",
    "SKIP_FOLDERS": "--skip-folders",
    "FORCE_REBIND": "--force-rebind",
}


def problem(name: str, value: str | None, issue: str, accepted: str) -> str:
    """One configuration problem as one line, like a good CLI error: the variable (and
    its flag), the value as given, what is wrong with it and what is accepted.

    ``value`` None means unset: ``S3_SOURCE_BUCKET (--bucket) is required but not set;
    expected ...``. Long values are cut, so one bad value cannot flood the terminal.
    """
    flag = FLAG_OF.get(name)
    who = f"{name} ({flag})" if flag and not name.startswith("-") else name
    if value is None:
        return f"{who} {issue}; expected {accepted}"
    shown = repr(value) if len(value) <= 80 else f"{value[:60]!r}... ({len(value)} characters)"
    return f"{who} = {shown}: {issue}; expected {accepted}"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class InitialScan:
    """First-run policy (``INITIAL_SCAN``): what to do when no state object exists."""

    mode: Literal["all", "mark-existing", "since"] = "all"
    since: datetime | None = None

    def __str__(self) -> str:
        if self.mode == "since" and self.since is not None:
            return "since:" + self.since.isoformat()
        return self.mode


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """Everything one run needs to know; immutable once built."""

    source_bucket: str
    prefix: str = ""
    queue_url: str | None = None
    state_bucket: str
    state_key: str = DEFAULT_STATE_KEY
    skip_folders: frozenset[str] = frozenset(DEFAULT_SKIP_FOLDERS)
    endpoint_url: str | None = None
    dry_run: bool = False
    explain: bool = False
    force_rebind: bool = False
    prune_missing: bool = True
    initial_scan: InitialScan = InitialScan()
    min_object_age_seconds: float = 0.0
    # Tuning knobs (README, "Tuning"), chosen with `async-discovery bench --sweep` (5,000
    # files in 10 folders, 20 ms latency): a worker sends its page's batches one after
    # another, so sends in flight = min(WORKERS, pages in flight); 16 workers took a cold
    # run from 4.2 s (8) to 2.8 s. Listing concurrency and queue size were flat in 2-32.
    list_strategy: ListStrategy = "auto"
    folder_threshold: int = 1000
    # Keys per ListObjectsV2 page (S3 returns at most 1,000); smaller pages make the
    # deadline checks (and so resume cursors) finer-grained, at more requests per key.
    list_page_size: int = 1000
    list_concurrency: int = 8
    workers: int = 16
    queue_size: int = 8
    deadline_margin_seconds: float = 2.0
    state_max_bytes: int = 256 * 1024 * 1024
    state_write_attempts: int = 6
    send_attempts: int = 5
    retry_mode: RetryMode = "standard"
    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    @property
    def is_fifo(self) -> bool:
        """True when the target queue is a FIFO queue (its URL ends in ``.fifo``)."""
        return bool(self.queue_url) and str(self.queue_url).endswith(".fifo")

    @property
    def pool_size(self) -> int:
        """HTTP connections needed so no coroutine waits for a socket."""
        return self.list_concurrency + self.workers + 2

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Config:
        """Build a config from an environment mapping; non-None ``overrides`` win.

        Override names are the field names (``source_bucket``, ``queue_url``, ...).
        Raises :class:`ConfigError` listing every problem found.
        """
        problems: list[str] = []
        values: dict[str, Any] = {}

        def raw(name: str, env_name: str) -> str | None:
            over = overrides.get(name)
            if over is not None:
                return str(over)
            return env.get(env_name)

        def required(name: str, env_name: str, accepted: str) -> str | None:
            value = raw(name, env_name)
            if value is None or not value.strip():
                problems.append(problem(env_name, None, "is required but not set", accepted))
                return None
            return value.strip()

        bucket = required(
            "source_bucket", "S3_SOURCE_BUCKET", "the name of the bucket holding the CSV files"
        )
        if bucket is not None and not _BUCKET_RE.match(bucket):
            problems.append(
                problem("S3_SOURCE_BUCKET", bucket, "not a valid bucket name", _BUCKET_RULE)
            )
        values["source_bucket"] = bucket or ""

        prefix_raw = raw("prefix", "S3_PREFIX") or ""
        prefix_problem = _check_prefix(prefix_raw)
        if prefix_problem:
            problems.append(
                problem(
                    "S3_PREFIX",
                    prefix_raw,
                    prefix_problem,
                    "a relative key prefix such as 'incoming' or 'incoming/' (empty = whole "
                    "bucket)",
                )
            )
        values["prefix"] = normalise_prefix(prefix_raw)

        dry_run = overrides.get("dry_run")
        values["dry_run"] = bool(dry_run) if dry_run is not None else False
        explain = overrides.get("explain")
        values["explain"] = bool(explain) if explain is not None else False
        rebind = overrides.get("force_rebind")
        if rebind is None:
            rebind = _parse_bool(env.get("FORCE_REBIND", "false"), "FORCE_REBIND", problems)
        values["force_rebind"] = bool(rebind)

        queue = raw("queue_url", "SQS_QUEUE_URL")
        if queue is None or not queue.strip():
            if not values["dry_run"]:
                problems.append(
                    problem(
                        "SQS_QUEUE_URL",
                        None,
                        "is required (unless --dry-run) but not set",
                        _QUEUE_URL_FORM,
                    )
                )
            values["queue_url"] = None
        else:
            queue = queue.strip()
            if not re.match(r"^https?://[^/\s]+/\S+$", queue):
                problems.append(problem("SQS_QUEUE_URL", queue, "not a queue URL", _QUEUE_URL_FORM))
            values["queue_url"] = queue

        state_bucket = raw("state_bucket", "S3_STATE_BUCKET")
        if state_bucket is None or not state_bucket.strip():
            state_bucket = values["source_bucket"]
        else:
            state_bucket = state_bucket.strip()
            if not _BUCKET_RE.match(state_bucket):
                problems.append(
                    problem(
                        "S3_STATE_BUCKET", state_bucket, "not a valid bucket name", _BUCKET_RULE
                    )
                )
        values["state_bucket"] = state_bucket

        state_key = raw("state_key", "S3_STATE_KEY")
        if state_key is None or not state_key.strip():
            state_key = DEFAULT_STATE_KEY
        elif len(state_key.encode("utf-8", "surrogatepass")) > 1024:
            problems.append(
                problem(
                    "S3_STATE_KEY",
                    state_key,
                    "longer than 1024 bytes",
                    "an object key of at most 1024 bytes (UTF-8), the S3 limit",
                )
            )
        values["state_key"] = state_key

        skip_raw = raw("skip_folders", "SKIP_FOLDERS")
        if skip_raw is None:
            values["skip_folders"] = frozenset(DEFAULT_SKIP_FOLDERS)
        else:
            names = [n.strip() for n in skip_raw.split(",")]
            bad = [n for n in names if "/" in n]
            if bad:
                problems.append(
                    problem(
                        "SKIP_FOLDERS",
                        skip_raw,
                        f"folder names cannot contain '/' ({bad[0]!r})",
                        "comma-separated folder names such as 'logs,temp' (empty = skip none)",
                    )
                )
            values["skip_folders"] = frozenset(n for n in names if n)

        # Only the flag: without it botocore resolves AWS_ENDPOINT_URL(_S3/_SQS) itself.
        endpoint = overrides.get("endpoint_url")
        if endpoint is not None and str(endpoint).strip():
            endpoint = str(endpoint)
            if not re.match(r"^https?://\S+$", endpoint.strip()):
                problems.append(
                    problem(
                        "--endpoint-url",
                        endpoint,
                        "not an http(s) URL",
                        "a URL such as http://127.0.0.1:5000 (or leave it out and set "
                        "AWS_ENDPOINT_URL)",
                    )
                )
            values["endpoint_url"] = endpoint.strip()

        prune = _parse_bool(env.get("PRUNE_MISSING", "true"), "PRUNE_MISSING", problems)
        if overrides.get("prune_missing") is not None:
            prune = bool(overrides["prune_missing"])
        values["prune_missing"] = prune

        initial = raw("initial_scan", "INITIAL_SCAN")
        values["initial_scan"] = parse_initial_scan(initial or "all", problems)

        strategy = (raw("list_strategy", "LIST_STRATEGY") or "auto").strip().lower()
        if strategy not in ("auto", "folders", "flat"):
            problems.append(
                problem("LIST_STRATEGY", strategy, "unknown strategy", "auto, folders or flat")
            )
            strategy = "auto"
        values["list_strategy"] = strategy

        mode = (raw("retry_mode", "RETRY_MODE") or "standard").strip().lower()
        if mode not in ("standard", "adaptive", "legacy"):
            problems.append(
                problem("RETRY_MODE", mode, "unknown mode", "standard, adaptive or legacy")
            )
            mode = "standard"
        values["retry_mode"] = mode

        ints = {
            "folder_threshold": ("FOLDER_THRESHOLD", 1),
            "list_page_size": ("LIST_PAGE_SIZE", 1),
            "list_concurrency": ("LIST_CONCURRENCY", 1),
            "workers": ("WORKERS", 1),
            "queue_size": ("QUEUE_SIZE", 1),
            "state_max_bytes": ("STATE_MAX_BYTES", 1),
            "state_write_attempts": ("STATE_WRITE_ATTEMPTS", 1),
            "send_attempts": ("SEND_ATTEMPTS", 1),
            "max_attempts": ("MAX_ATTEMPTS", 1),
        }
        for name, (env_name, minimum) in ints.items():
            text = raw(name, env_name)
            if text is None or not text.strip():
                continue
            try:
                number = int(text)
            except ValueError:
                problems.append(
                    problem(env_name, text, "not a whole number", f"a whole number >= {minimum}")
                )
                continue
            if number < minimum:
                problems.append(
                    problem(env_name, text, "too small", f"a whole number >= {minimum}")
                )
                continue
            values[name] = number

        floats = {
            "deadline_margin_seconds": "DEADLINE_MARGIN_SECONDS",
            "min_object_age_seconds": "MIN_OBJECT_AGE_SECONDS",
            "connect_timeout": "CONNECT_TIMEOUT_SECONDS",
            "read_timeout": "READ_TIMEOUT_SECONDS",
        }
        for name, env_name in floats.items():
            text = raw(name, env_name)
            if text is None or not text.strip():
                continue
            try:
                seconds = float(text)
            except ValueError:
                problems.append(
                    problem(env_name, text, "not a number", "a number of seconds >= 0, e.g. 2.5")
                )
                continue
            if not seconds >= 0 or seconds == float("inf"):
                problems.append(
                    problem(env_name, text, "out of range", "a finite number of seconds >= 0")
                )
                continue
            values[name] = seconds

        if problems:
            raise ConfigError(problems)
        return cls(**values)


def _check_prefix(prefix: str) -> str | None:
    if len(prefix.encode("utf-8", "surrogatepass")) > 1024:
        return "longer than 1024 bytes (the S3 key limit)"
    if any(ord(c) < 32 or ord(c) == 127 for c in prefix):
        return "contains control characters"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in prefix):
        return "not valid Unicode"
    if prefix.startswith("/"):
        return "starts with '/' (S3 keys have no leading '/')"
    if "//" in prefix:
        return "contains an empty path segment ('//')"
    return None


def _parse_bool(text: str, name: str, problems: list[str]) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    problems.append(
        problem(name, text, "not a boolean", "true or false (also 1/0, yes/no, on/off)")
    )
    return True


def parse_initial_scan(text: str, problems: list[str]) -> InitialScan:
    """Parse ``all``, ``mark-existing`` or ``since:<ISO 8601>``; problems are appended."""
    value = text.strip()
    if value in ("all", ""):
        return InitialScan()
    if value == "mark-existing":
        return InitialScan(mode="mark-existing")
    if value.startswith("since:"):
        stamp = value[len("since:") :]
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return InitialScan(mode="since", since=when.astimezone(UTC))
    problems.append(
        problem(
            "INITIAL_SCAN",
            text,
            "unknown first-run policy",
            "all, mark-existing or since:<ISO 8601 timestamp> (e.g. since:2026-01-01T00:00:00Z)",
        )
    )
    return InitialScan()
