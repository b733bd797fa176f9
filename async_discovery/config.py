"""The run configuration: one frozen dataclass, built from the environment in one place.

What can be set (variable, flag, parser, default, help) is declared once, in
:data:`async_discovery.settings.SETTINGS`; the field defaults below come from there.
Only :meth:`Config.from_env` reads environment variables; explicit overrides (CLI flags)
win over them. Every invalid or missing value is collected, so one
:class:`~async_discovery.errors.ConfigError` names all of them at once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal

from .errors import ConfigError
from .layout import MAX_KEY_BYTES, longest_key, single_key, state_prefix
from .settings import (
    DEFAULT_SKIP_FOLDERS,
    DEFAULT_STATE_KEY,
    DEFAULTS,
    FLAG_OF,
    LOG_LEVELS,
    SETTING,
    SETTINGS,
    InitialScan,
    Invalid,
    Setting,
    problem,
)
from .settings import initial_scan as _initial_scan
from .settings import log_level as _log_level

__all__ = [
    "DEFAULT_SKIP_FOLDERS",
    "DEFAULT_STATE_KEY",
    "FLAG_OF",
    "LOG_LEVELS",
    "Config",
    "InitialScan",
    "ListStrategy",
    "RetryMode",
    "event_switch",
    "is_fifo_queue",
    "parse_initial_scan",
    "parse_log_level",
    "problem",
]

ListStrategy = Literal["auto", "folders", "flat"]
StateLayout = Literal["single", "folders"]
RetryMode = Literal["standard", "adaptive", "legacy"]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """Everything one run needs to know; immutable once built. Each field is described,
    with its variable, flag and default, in :mod:`async_discovery.settings`."""

    source_bucket: str
    prefix: str = DEFAULTS["prefix"]
    queue_url: str | None = DEFAULTS["queue_url"]
    state_bucket: str
    state_key: str = DEFAULTS["state_key"]
    skip_folders: frozenset[str] = DEFAULTS["skip_folders"]
    endpoint_url: str | None = DEFAULTS["endpoint_url"]
    state_layout: StateLayout = DEFAULTS["state_layout"]
    folders: frozenset[str] | None = DEFAULTS["folders"]
    dry_run: bool = DEFAULTS["dry_run"]
    explain: bool = DEFAULTS["explain"]
    force_rebind: bool = DEFAULTS["force_rebind"]
    prune_missing: bool = DEFAULTS["prune_missing"]
    initial_scan: InitialScan = DEFAULTS["initial_scan"]
    min_object_age_seconds: float = DEFAULTS["min_object_age_seconds"]
    events_queue_url: str | None = DEFAULTS["events_queue_url"]
    reconciliation_window_seconds: float = DEFAULTS["reconciliation_window_seconds"]
    log_level: str = DEFAULTS["log_level"]
    # Tuning knobs.
    list_strategy: ListStrategy = DEFAULTS["list_strategy"]
    folder_threshold: int = DEFAULTS["folder_threshold"]
    list_concurrency: int = DEFAULTS["list_concurrency"]
    workers: int = DEFAULTS["workers"]
    queue_size: int = DEFAULTS["queue_size"]
    list_page_size: int = DEFAULTS["list_page_size"]
    deadline_margin_seconds: float = DEFAULTS["deadline_margin_seconds"]
    state_max_bytes: int = DEFAULTS["state_max_bytes"]
    shard_max_files: int = DEFAULTS["shard_max_files"]
    retry_mode: RetryMode = DEFAULTS["retry_mode"]
    max_attempts: int = DEFAULTS["max_attempts"]
    connect_timeout: float = DEFAULTS["connect_timeout"]
    read_timeout: float = DEFAULTS["read_timeout"]
    send_attempts: int = DEFAULTS["send_attempts"]
    state_write_attempts: int = DEFAULTS["state_write_attempts"]

    @property
    def is_fifo(self) -> bool:
        """True when the target queue is a FIFO queue (its URL ends in ``.fifo``)."""
        return is_fifo_queue(self.queue_url)

    @property
    def state_prefix(self) -> str:
        """The key prefix of the shards and run objects (``STATE_LAYOUT=folders``)."""
        return state_prefix(self.state_key)

    @property
    def state_object_key(self) -> str:
        """The key of the one state object (``STATE_LAYOUT=single``). Every command
        (scan, migrate, doctor, iam-policy) reads ``S3_STATE_KEY`` through this property
        and :attr:`state_prefix`, never as a key itself: :mod:`async_discovery.layout`."""
        return single_key(self.state_key)

    @property
    def state_bucket_role(self) -> str:
        """How an error names the state bucket: as the bucket the user gave. The state
        is kept in the source bucket unless ``S3_STATE_BUCKET`` names another, so a
        missing source bucket is reported as the source bucket, whichever call finds it."""
        return "source bucket" if self.state_bucket == self.source_bucket else "state bucket"

    @property
    def pool_size(self) -> int:
        """HTTP connections needed so no coroutine waits for a socket."""
        return self.list_concurrency + self.workers + 2

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Config:
        """Build a config from an environment mapping; non-None ``overrides`` win.

        Override names are the field names (``source_bucket``, ``queue_url``, ...); a
        string is parsed like the variable, a bool sets a switch. An empty value counts
        as unset (the default applies), except where the setting gives empty a meaning
        (``S3_PREFIX``, ``SKIP_FOLDERS``). Raises :class:`ConfigError` listing every
        problem found, in the order of the settings.
        """
        unknown = set(overrides) - set(SETTING)
        if unknown:
            raise TypeError(f"unknown configuration override(s): {', '.join(sorted(unknown))}")
        problems: list[tuple[int, str]] = []  # (the setting's place, the line)
        values: dict[str, Any] = {}
        unset: list[tuple[int, Setting]] = []
        for place, setting in enumerate(SETTINGS):
            text = _given(setting, env, overrides.get(setting.field))
            if text is None:
                unset.append((place, setting))
                continue
            try:
                values[setting.field] = setting.parse(text)
            except Invalid as exc:
                problems.append((place, problem(_name(setting), text, exc.issue, exc.accepted)))
                values[setting.field] = setting.default
        # Once every given value is known: defaults, fallbacks and requirements.
        for place, setting in unset:
            if setting.fallback:
                values[setting.field] = values.get(setting.fallback)
                continue
            values[setting.field] = setting.default
            unless = setting.required_unless
            if setting.required and not (unless and values.get(unless)):
                because = f" (unless {SETTING[unless].flag})" if unless else ""
                issue = f"is required{because} but not set"
                problems.append((place, problem(_name(setting), None, issue, setting.required)))
        problems += _across(values)
        if problems:
            raise ConfigError([line for _place, line in sorted(problems)])
        return cls(**values)


def _across(values: Mapping[str, Any]) -> list[tuple[int, str]]:
    """Problems of settings that are valid alone but not together."""
    place = {s.field: i for i, s in enumerate(SETTINGS)}
    found: list[tuple[int, str]] = []
    if values.get("state_layout") == "folders" and values.get("list_strategy") == "flat":
        found.append(
            (
                place["list_strategy"],
                problem(
                    "LIST_STRATEGY",
                    "flat",
                    "a flat listing has no folder to tie a shard to",
                    "auto or folders with STATE_LAYOUT=folders",
                ),
            )
        )
    if values.get("state_layout") == "folders":
        longest = longest_key(state_prefix(values["state_key"]), values["prefix"])
        if longest > MAX_KEY_BYTES:
            found.append(
                (
                    place["prefix"],
                    problem(
                        "S3_PREFIX",
                        values["prefix"],
                        f"with S3_STATE_KEY {values['state_key']!r} the folders layout would "
                        f"write state keys of {longest} bytes, over S3's {MAX_KEY_BYTES}",
                        "a shorter S3_PREFIX or S3_STATE_KEY",
                    ),
                )
            )
    if values.get("folders") is not None and values.get("state_layout") != "folders":
        found.append(
            (
                place["folders"],
                problem(
                    "--folders",
                    ",".join(sorted(values["folders"])),
                    "needs the folders state layout (each folder its own shard)",
                    "STATE_LAYOUT=folders",
                ),
            )
        )
    return found


def _name(setting: Setting) -> str:
    """What a problem line is about: the variable, or the flag of a flag-only setting."""
    return setting.env or setting.flag or setting.field


def _given(setting: Setting, env: Mapping[str, str], override: Any) -> str | None:
    """The text to parse for ``setting``, or None when it is unset: the override (a bool
    as ``true``/``false``), else the variable; an empty value is unset unless the
    setting gives empty a meaning."""
    if override is not None:
        text = ("true" if override else "false") if isinstance(override, bool) else str(override)
    elif setting.env is not None and setting.env in env:
        text = env[setting.env]
    else:
        return None
    if not text.strip() and not setting.blank_is_value:
        return None
    return text


def event_switch(event: Any, field: str, problems: list[str]) -> bool | None:
    """A switch of a Lambda event (``dry_run``, the doctor's ``deep``): a JSON boolean,
    or None when absent or null (or the event is not an object). Any other value (the
    string ``"false"`` is truthy to Python) is appended to ``problems``, naming the
    field, rather than guessed at."""
    if not isinstance(event, Mapping) or event.get(field) is None:
        return None
    value = event[field]
    if isinstance(value, bool):
        return value
    shown = json.dumps(value, ensure_ascii=False, default=repr)
    shown = shown if len(shown) <= 80 else f"{shown[:60]}..."
    problems.append(f"event field {field} = {shown}: not a JSON boolean; expected true or false")
    return None


def is_fifo_queue(queue_url: str | None) -> bool:
    """True for a FIFO queue: SQS requires its name, so its URL, to end in ``.fifo``."""
    return bool(queue_url) and str(queue_url).endswith(".fifo")


def parse_log_level(text: str | None, problems: list[str]) -> str:
    """``LOG_LEVEL`` (any case; unset or empty = INFO); a bad value is appended to
    ``problems`` and INFO returned, so the error itself can still be logged."""
    default: str = DEFAULTS["log_level"]
    if text is None or not text.strip():
        return default
    try:
        return _log_level(text)
    except Invalid as exc:
        problems.append(problem("LOG_LEVEL", text, exc.issue, exc.accepted))
        return default


def parse_initial_scan(text: str, problems: list[str]) -> InitialScan:
    """Parse ``all``, ``mark-existing`` or ``since:<ISO 8601>``; problems are appended."""
    try:
        return _initial_scan(text)
    except Invalid as exc:
        problems.append(problem("INITIAL_SCAN", text, exc.issue, exc.accepted))
        return InitialScan()
