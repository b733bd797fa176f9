"""Every setting of a run, declared once: variable, flag, parser, default and help.

:data:`SETTINGS` is the one table. Everything else is derived from it:

- :meth:`async_discovery.config.Config.from_env` reads and validates each variable with
  the setting's parser, and takes the setting's default when it is unset;
- the CLI (:mod:`async_discovery.cli`) builds its flags, whose ``--help`` shows the help,
  the default and the variable behind the flag;
- the tables of ``docs/configuration.md`` are rendered by :func:`markdown_table`
  (``python scripts/config_docs.py`` rewrites them; tests/test_config.py fails while
  the page and this table differ).

To add a setting: a field on ``Config``, a :class:`Setting` here, then rewrite the docs.
Pure: no I/O library.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from .discovery import normalise_prefix

DEFAULT_STATE_KEY = "state/processed_files.json"
DEFAULT_SKIP_FOLDERS = ("logs", "temp", "backups")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LIST_STRATEGIES = ("auto", "folders", "flat")
RETRY_MODES = ("standard", "adaptive", "legacy")
STATE_LAYOUTS = ("single", "folders")

# S3 general-purpose bucket naming rules (3-63 chars, lower case, digits, dots, hyphens).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_RULE = (
    "3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit"
)
_QUEUE_URL_FORM = "https://sqs.<region>.amazonaws.com/<account id>/<queue name>"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# -- parsers: text in, value out, or Invalid ----------------------------------------------


class Invalid(ValueError):
    """A value a parser refuses: what is wrong with it and what is accepted instead."""

    def __init__(self, issue: str, accepted: str) -> None:
        super().__init__(f"{issue}; expected {accepted}")
        self.issue = issue
        self.accepted = accepted


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class InitialScan:
    """First-run policy (``INITIAL_SCAN``): what to do when no state object exists."""

    mode: Literal["all", "mark-existing", "since"] = "all"
    since: datetime | None = None

    def __str__(self) -> str:
        if self.mode == "since" and self.since is not None:
            return "since:" + self.since.isoformat()
        return self.mode


def bucket_name(text: str) -> str:
    """An S3 bucket name (surrounding spaces dropped)."""
    name = text.strip()
    if not _BUCKET_RE.match(name):
        raise Invalid("not a valid bucket name", _BUCKET_RULE)
    return name


def key_prefix(text: str) -> str:
    """A key prefix, taken as given (spaces are legal in keys); ``a`` = ``a/``."""
    if len(text.encode("utf-8", "surrogatepass")) > 1024:
        issue = "longer than 1024 bytes (the S3 key limit)"
    elif any(ord(c) < 32 or ord(c) == 127 for c in text):
        issue = "contains control characters"
    elif any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        issue = "not valid Unicode"
    elif text.startswith("/"):
        issue = "starts with '/' (S3 keys have no leading '/')"
    elif "//" in text:
        issue = "contains an empty path segment ('//')"
    else:
        return normalise_prefix(text)
    raise Invalid(
        issue, "a relative key prefix such as 'incoming' or 'incoming/' (empty = whole bucket)"
    )


def queue_url(text: str) -> str:
    """An SQS queue URL (any host, so moto and LocalStack URLs pass)."""
    url = text.strip()
    if not re.match(r"^https?://[^/\s]+/\S+$", url):
        raise Invalid("not a queue URL", _QUEUE_URL_FORM)
    return url


def object_key(text: str) -> str:
    """An object key, taken as given, within S3's 1024-byte limit."""
    if len(text.encode("utf-8", "surrogatepass")) > 1024:
        raise Invalid(
            "longer than 1024 bytes", "an object key of at most 1024 bytes (UTF-8), the S3 limit"
        )
    return text


def folder_names(text: str) -> frozenset[str]:
    """Comma-separated folder names, trimmed; empty names dropped (so empty = none)."""
    names = [n.strip() for n in text.split(",")]
    bad = [n for n in names if "/" in n]
    if bad:
        raise Invalid(
            f"folder names cannot contain '/' ({bad[0]!r})",
            "comma-separated folder names such as 'logs,temp' (empty = skip none)",
        )
    return frozenset(n for n in names if n)


def some_folders(text: str) -> frozenset[str]:
    """Comma-separated folder names (``--folders``), at least one: a list naming none
    would scan nothing and say nothing."""
    names = folder_names(text)
    if not names:
        raise Invalid(
            f"names no folder ({text!r})", "one or more comma-separated folder names such as 'a,b'"
        )
    return names


def http_url(text: str) -> str:
    """An http(s) endpoint URL."""
    url = text.strip()
    if not re.match(r"^https?://\S+$", url):
        raise Invalid(
            "not an http(s) URL",
            "a URL such as http://127.0.0.1:5000 (or leave it out and set AWS_ENDPOINT_URL)",
        )
    return url


def boolean(text: str) -> bool:
    """true/false, 1/0, yes/no, on/off, any case."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise Invalid("not a boolean", "true or false (also 1/0, yes/no, on/off)")


def log_level(text: str) -> str:
    """A logging level name, any case."""
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise Invalid("unknown log level", ", ".join(LOG_LEVELS))
    return level


def initial_scan(text: str) -> InitialScan:
    """``all``, ``mark-existing`` or ``since:<ISO 8601>`` (no zone = UTC)."""
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
    raise Invalid(
        "unknown first-run policy",
        "all, mark-existing or since:<ISO 8601 timestamp> (e.g. since:2026-01-01T00:00:00Z)",
    )


def one_of(options: Sequence[str], what: str) -> Callable[[str], str]:
    """One of ``options``, any case."""
    accepted = ", ".join(options[:-1]) + " or " + options[-1]

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise Invalid(f"unknown {what}", accepted)
        return value

    return parse


def whole(minimum: int) -> Callable[[str], int]:
    """A whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise Invalid("not a whole number", f"a whole number >= {minimum}") from None
        if number < minimum:
            raise Invalid("too small", f"a whole number >= {minimum}")
        return number

    return parse


def seconds(text: str) -> float:
    """A finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise Invalid("not a number", "a number of seconds >= 0, e.g. 2.5") from None
    if not value >= 0 or value == float("inf"):
        raise Invalid("out of range", "a finite number of seconds >= 0")
    return value


# -- the declarations ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Setting:
    """One setting. ``help`` and ``shown_default`` are Markdown (backticks are dropped in
    ``--help``); ``see`` is a link added in the docs only."""

    field: str  # the Config field, also the name of the override in Config.from_env
    env: str | None  # the variable Config.from_env reads; None = set by flag only
    flag: str | None = None
    parse: Callable[[str], Any]
    default: Any = None  # the value when unset (the Config field's default)
    help: str
    section: Literal["variables", "tuning"] = "variables"
    shown_default: str | None = None  # the default as the docs say it, when not the value
    blank_is_value: bool = False  # an empty value is parsed (else: empty = unset)
    required: str | None = None  # required; what is accepted, for the "not set" problem
    required_unless: str | None = None  # ... unless this boolean setting is true
    fallback: str | None = None  # when unset, the value of this (earlier) setting
    switch: bool = False  # the flag takes no value
    env_note: str | None = None  # the docs' variable column when ``env`` is None
    see: str | None = None

    @property
    def dest(self) -> str:
        """The flag's attribute on the parsed arguments."""
        return (self.flag or "")[2:].replace("-", "_")

    def default_text(self) -> str:
        """The default as the docs and ``--help`` state it (Markdown)."""
        if self.required:
            unless = SETTING[self.required_unless] if self.required_unless else None
            return f"required unless `{unless.flag}`" if unless else "required"
        if self.shown_default is not None:
            return self.shown_default
        value = self.default
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        if value == "":
            return "empty"
        return f"`{value}`"

    def cli_help(self) -> str:
        """The flag's ``--help``: the help, the default, the variable behind the flag."""
        text = self.help
        if self.required:
            text += "; " + self.default_text()
        elif not self.switch:
            text += "; default: " + self.default_text()
        text += f" [env {self.env}]" if self.env else " [flag only]"
        return text.replace("`", "")


# The order is the docs' order and the order problems are reported in.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        field="source_bucket",
        env="S3_SOURCE_BUCKET",
        flag="--bucket",
        parse=bucket_name,
        required="the name of the bucket holding the CSV files",
        help="bucket holding the CSV files",
    ),
    Setting(
        field="prefix",
        env="S3_PREFIX",
        flag="--prefix",
        parse=key_prefix,
        default="",
        blank_is_value=True,
        help="prefix to scan; `incoming` = `incoming/`; empty = whole bucket",
    ),
    Setting(
        field="queue_url",
        env="SQS_QUEUE_URL",
        flag="--queue-url",
        parse=queue_url,
        required=_QUEUE_URL_FORM,
        required_unless="dry_run",
        help="target SQS queue URL (standard or FIFO, by the `.fifo` suffix)",
    ),
    Setting(
        field="state_bucket",
        env="S3_STATE_BUCKET",
        flag="--state-bucket",
        parse=bucket_name,
        fallback="source_bucket",
        shown_default="the source bucket (`S3_SOURCE_BUCKET`)",
        help="bucket holding the state object",
    ),
    Setting(
        field="state_key",
        env="S3_STATE_KEY",
        flag="--state-key",
        parse=object_key,
        default=DEFAULT_STATE_KEY,
        help="key of the state object; one value names both layouts' keys: `s/` and "
        "`s.json` both mean the object `s.json` (`single`) and the state prefix `s/` "
        "(`folders`)",
        see="[state-layout.md](state-layout.md#what-s3_state_key-names)",
    ),
    Setting(
        field="skip_folders",
        env="SKIP_FOLDERS",
        flag="--skip-folders",
        parse=folder_names,
        default=frozenset(DEFAULT_SKIP_FOLDERS),
        shown_default="`" + ",".join(DEFAULT_SKIP_FOLDERS) + "`",
        blank_is_value=True,
        help="comma-separated folder names never processed (trimmed; set but empty = none)",
    ),
    Setting(
        field="endpoint_url",
        env=None,
        flag="--endpoint-url",
        parse=http_url,
        shown_default="AWS",
        help="S3 and SQS endpoint (moto, an S3-compatible store); the flag sets both clients "
        "and wins over botocore's `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, "
        "`AWS_ENDPOINT_URL_SQS`",
    ),
    Setting(
        field="state_layout",
        env="STATE_LAYOUT",
        parse=one_of(STATE_LAYOUTS, "state layout"),
        default="single",
        help="`single`: one state object; `folders`: one shard per folder under the state "
        "prefix (high-volume buckets; `S3_STATE_KEY` then names a key prefix)",
        see="[operations.md](operations.md#state-layout-folders)",
    ),
    Setting(
        field="folders",
        env=None,
        flag="--folders",
        parse=some_folders,
        default=None,
        blank_is_value=True,
        shown_default="every folder",
        help="scan exactly these folders of the prefix (comma-separated; `STATE_LAYOUT=folders`"
        " only): one child of a fan-out",
    ),
    Setting(
        field="dry_run",
        env=None,
        flag="--dry-run",
        parse=boolean,
        default=False,
        switch=True,
        help='send nothing, write nothing; count what would go (Lambda: event `{"dry_run": true}`)',
    ),
    Setting(
        field="explain",
        env=None,
        flag="--explain",
        parse=boolean,
        default=False,
        switch=True,
        help="with `--dry-run`: one JSON line per object on stdout saying why",
    ),
    Setting(
        field="force_rebind",
        env="FORCE_REBIND",
        flag="--force-rebind",
        parse=boolean,
        default=False,
        switch=True,
        help="accept a state object recorded for another bucket (`doctor`: report it as a warning)",
    ),
    Setting(
        field="prune_missing",
        env="PRUNE_MISSING",
        parse=boolean,
        default=True,
        help="remove state entries of deleted files after a complete listing",
    ),
    Setting(
        field="initial_scan",
        env="INITIAL_SCAN",
        parse=initial_scan,
        default=InitialScan(),
        help="first-run policy: `all`, `mark-existing` or `since:<ISO 8601>`",
    ),
    Setting(
        field="min_object_age_seconds",
        env="MIN_OBJECT_AGE_SECONDS",
        parse=seconds,
        default=0.0,
        help="settle time: younger candidates are deferred to a later run",
    ),
    Setting(
        field="events_queue_url",
        env="EVENTS_QUEUE_URL",
        flag="--events-queue-url",
        parse=queue_url,
        default=None,
        shown_default="none",
        help="`listen`: the SQS queue S3 Event Notifications arrive on (the Lambda function "
        "gets them from its event source mapping instead)",
        see="[events.md](events.md)",
    ),
    Setting(
        field="reconciliation_window_seconds",
        env="RECONCILIATION_WINDOW_SECONDS",
        parse=seconds,
        default=900.0,
        help="a scan counts the files it sends that were modified more than this long "
        "before it started as `found_by_reconciliation`: with events on, files the events "
        "missed; `0` = off",
        see="[events.md](events.md#reconciliation)",
    ),
    Setting(
        field="log_level",
        env="LOG_LEVEL",
        flag="--log-level",
        parse=log_level,
        default="INFO",
        help="level of the JSON logs on stderr: " + ", ".join(f"`{x}`" for x in LOG_LEVELS),
    ),
    # Tuning knobs, chosen with `async-discovery bench --sweep` (5,000 files in 10
    # folders, 20 ms latency): a worker sends its page's batches one after another, so
    # sends in flight = min(WORKERS, pages in flight); 16 workers took a cold run from
    # 4.2 s (8) to 2.8 s. Listing concurrency and queue size were flat in 2-32.
    Setting(
        field="list_strategy",
        env="LIST_STRATEGY",
        parse=one_of(LIST_STRATEGIES, "strategy"),
        default="auto",
        section="tuning",
        help="`auto`, `folders` or `flat`",
        see="[development.md](development.md#how-it-works)",
    ),
    Setting(
        field="folder_threshold",
        env="FOLDER_THRESHOLD",
        parse=whole(1),
        default=1000,
        section="tuning",
        help="above this many subfolders `auto` lists flat",
    ),
    Setting(
        field="list_concurrency",
        env="LIST_CONCURRENCY",
        parse=whole(1),
        default=8,
        section="tuning",
        help="subfolders listed at once",
    ),
    Setting(
        field="workers",
        env="WORKERS",
        parse=whole(1),
        default=16,
        section="tuning",
        help="senders: `SendMessageBatch` calls in flight at once (FIFO: one message group "
        "each at a time)",
    ),
    Setting(
        field="queue_size",
        env="QUEUE_SIZE",
        parse=whole(1),
        default=8,
        section="tuning",
        help="classified listing pages buffered between the listers and the decider (FIFO: "
        "also the messages waiting for a sender, in pages' worth)",
    ),
    # Smaller pages make the deadline checks (and so resume cursors) finer-grained, at
    # more requests per key.
    Setting(
        field="list_page_size",
        env="LIST_PAGE_SIZE",
        parse=whole(1),
        default=1000,
        section="tuning",
        help="keys per `ListObjectsV2` page (S3 returns at most 1000)",
    ),
    Setting(
        field="deadline_margin_seconds",
        env="DEADLINE_MARGIN_SECONDS",
        parse=seconds,
        default=2.0,
        section="tuning",
        help="stop taking pages when the Lambda has less than this left",
    ),
    Setting(
        field="state_max_bytes",
        env="STATE_MAX_BYTES",
        parse=whole(1),
        default=256 * 1024 * 1024,
        shown_default="`268435456` (256 MiB)",
        section="tuning",
        help="the state object never grows past this: a larger one is refused (500, left "
        "unchanged), and a run that would cross it holds new files back (207)",
        see="[guarantees.md](guarantees.md#the-state-never-grows-past-state_max_bytes)",
    ),
    Setting(
        field="shard_max_files",
        env="SHARD_MAX_FILES",
        parse=whole(2),
        default=10_000,
        section="tuning",
        help="`STATE_LAYOUT=folders`: no state object holds more files; a larger folder's "
        "state is split into key-range shards of at most half as many",
        see="[state-layout.md](state-layout.md#key-ranges-large-folders)",
    ),
    Setting(
        field="retry_mode",
        env="RETRY_MODE",
        parse=one_of(RETRY_MODES, "mode"),
        default="standard",
        section="tuning",
        help="botocore retry mode: `standard`, `adaptive` or `legacy`",
    ),
    Setting(
        field="max_attempts",
        env="MAX_ATTEMPTS",
        parse=whole(1),
        default=5,
        section="tuning",
        help="botocore attempts per call, the first included",
    ),
    Setting(
        field="connect_timeout",
        env="CONNECT_TIMEOUT_SECONDS",
        parse=seconds,
        default=5.0,
        section="tuning",
        help="botocore connect timeout per attempt",
    ),
    Setting(
        field="read_timeout",
        env="READ_TIMEOUT_SECONDS",
        parse=seconds,
        default=30.0,
        section="tuning",
        help="botocore read timeout per attempt",
    ),
    Setting(
        field="send_attempts",
        env="SEND_ATTEMPTS",
        parse=whole(1),
        default=5,
        section="tuning",
        help="attempts for a `SendMessageBatch` entry listed under `Failed` (`SenderFault: false`)",
    ),
    Setting(
        field="state_write_attempts",
        env="STATE_WRITE_ATTEMPTS",
        parse=whole(1),
        default=6,
        section="tuning",
        help="conditional state writes before giving up (500)",
    ),
)

SETTING: Mapping[str, Setting] = {s.field: s for s in SETTINGS}

# The CLI flag behind each variable that has one, so a problem line names both.
FLAG_OF: Mapping[str, str] = {s.env: s.flag for s in SETTINGS if s.env and s.flag}


# The declared default of each field (Config's field defaults come from here).
DEFAULTS: Mapping[str, Any] = {s.field: s.default for s in SETTINGS}


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


# -- the docs --------------------------------------------------------------------------------

SECTIONS = ("variables", "tuning")


def markdown_table(section: str) -> str:
    """The Markdown table of one section's settings, as docs/configuration.md shows it."""
    rows = [s for s in SETTINGS if s.section == section]
    if not rows:
        raise ValueError(f"no settings in section {section!r}")
    flags = any(s.flag for s in rows)
    head = (
        ["variable", "flag", "meaning", "default"] if flags else ["variable", "meaning", "default"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in rows:
        variable = f"`{s.env}`" if s.env else (s.env_note or "—")
        meaning = s.help + (f"; see {s.see}" if s.see else "")
        cells = [variable, f"`{s.flag}`" if s.flag else "", meaning, s.default_text()]
        if not flags:
            del cells[1]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _markers(section: str) -> tuple[str, str]:
    return f"<!-- settings:{section} -->\n", f"<!-- /settings:{section} -->\n"


def render_docs(text: str) -> str:
    """``text`` (docs/configuration.md) with each ``<!-- settings:<section> -->`` block
    replaced by the section's table; ValueError when a block is missing."""
    for section in SECTIONS:
        start, end = _markers(section)
        head, found, rest = text.partition(start)
        _old, found_end, tail = rest.partition(end)
        if not (found and found_end):
            raise ValueError(f"no {start.strip()} ... {end.strip()} block")
        text = head + start + "\n" + markdown_table(section) + "\n" + end + tail
    return text
