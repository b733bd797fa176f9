"""Configuration from the environment (SPEC "Configuration"), and the one table of
settings (async_discovery/settings.py) that Config, the CLI flags and the docs share."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from async_discovery.cli import _config_from_args, build_parser
from async_discovery.config import DEFAULT_STATE_KEY, Config
from async_discovery.errors import ConfigError
from async_discovery.settings import SECTIONS, SETTING, SETTINGS, markdown_table, render_docs

DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

BASE = {
    "S3_SOURCE_BUCKET": "src-bucket",
    "SQS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/q",
}


def test_defaults() -> None:
    cfg = Config.from_env(BASE)
    assert cfg.source_bucket == "src-bucket"
    assert cfg.prefix == ""
    assert cfg.state_bucket == "src-bucket"
    assert cfg.state_key == DEFAULT_STATE_KEY == "state/processed_files.json"
    assert cfg.skip_folders == frozenset({"logs", "temp", "backups"})
    assert cfg.prune_missing is True
    assert cfg.deadline_margin_seconds == 2.0
    assert cfg.list_strategy == "auto" and cfg.folder_threshold == 1000
    assert not cfg.dry_run and not cfg.is_fifo


def test_config_is_frozen() -> None:
    cfg = Config.from_env(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.prefix = "x"  # type: ignore[misc]


@pytest.mark.parametrize("raw", ["incoming", "incoming/"])
def test_prefix_with_or_without_slash(raw: str) -> None:
    assert Config.from_env({**BASE, "S3_PREFIX": raw}).prefix == "incoming/"


def test_skip_folders_trimmed_and_empty_means_none() -> None:
    cfg = Config.from_env({**BASE, "SKIP_FOLDERS": " a , b ,c,, "})
    assert cfg.skip_folders == frozenset({"a", "b", "c"})
    assert Config.from_env({**BASE, "SKIP_FOLDERS": ""}).skip_folders == frozenset()


def test_every_missing_required_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"S3_SOURCE_BUCKET": "  ", "SQS_QUEUE_URL": ""})
    text = str(info.value)
    assert "S3_SOURCE_BUCKET" in text and "SQS_QUEUE_URL" in text
    assert len(info.value.problems) == 2


def test_queue_not_required_for_dry_run() -> None:
    cfg = Config.from_env({"S3_SOURCE_BUCKET": "src-bucket"}, dry_run=True)
    assert cfg.dry_run and cfg.queue_url is None


def test_invalid_values_are_all_reported() -> None:
    env = {
        **BASE,
        "S3_SOURCE_BUCKET": "Bad_Bucket",
        "SQS_QUEUE_URL": "not a url",
        "PRUNE_MISSING": "maybe",
        "WORKERS": "0",
        "LIST_STRATEGY": "sideways",
        "DEADLINE_MARGIN_SECONDS": "-1",
        "INITIAL_SCAN": "since:yesterday",
        "SKIP_FOLDERS": "a/b",
    }
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    names = [
        "S3_SOURCE_BUCKET",
        "SQS_QUEUE_URL",
        "PRUNE_MISSING",
        "WORKERS",
        "LIST_STRATEGY",
        "DEADLINE_MARGIN_SECONDS",
        "INITIAL_SCAN",
        "SKIP_FOLDERS",
    ]
    for name in names:
        assert any(name in p for p in info.value.problems), name


def test_flags_override_environment() -> None:
    cfg = Config.from_env(
        {**BASE, "S3_PREFIX": "env"},
        prefix="flag",
        source_bucket="flag-bucket",
        skip_folders="x",
        state_key="k.json",
        endpoint_url="http://127.0.0.1:5000",
    )
    assert (cfg.prefix, cfg.source_bucket, cfg.state_bucket) == (
        "flag/",
        "flag-bucket",
        "flag-bucket",
    )
    assert cfg.skip_folders == frozenset({"x"})
    assert cfg.state_key == "k.json"
    assert cfg.endpoint_url == "http://127.0.0.1:5000"


def test_fifo_from_url() -> None:
    cfg = Config.from_env({**BASE, "SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/q.fifo"})
    assert cfg.is_fifo
    assert not Config.from_env({**BASE, "SQS_QUEUE_URL": "https://sqs.x/1/q-fifo"}).is_fifo
    assert not Config.from_env(BASE, dry_run=True, queue_url="").is_fifo


@pytest.mark.parametrize(
    ("value", "level"), [(None, "INFO"), ("", "INFO"), (" debug ", "DEBUG"), ("Error", "ERROR")]
)
def test_log_level(value: str | None, level: str) -> None:
    env = dict(BASE) if value is None else {**BASE, "LOG_LEVEL": value}
    assert Config.from_env(env).log_level == level


def test_bad_log_level_is_reported_with_the_other_problems() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"LOG_LEVEL": "chatty", "WORKERS": "0"})
    names = [p.split(" ")[0] for p in info.value.problems]
    assert sorted(names) == ["LOG_LEVEL", "S3_SOURCE_BUCKET", "SQS_QUEUE_URL", "WORKERS"]


def test_initial_scan_since_parses_z() -> None:
    cfg = Config.from_env({**BASE, "INITIAL_SCAN": "since:2026-01-01T00:00:00Z"})
    assert cfg.initial_scan.mode == "since"
    assert cfg.initial_scan.since is not None and cfg.initial_scan.since.year == 2026


# -- one declaration per setting ------------------------------------------------------------


def test_every_config_field_is_declared_once_with_its_default() -> None:
    fields = {f.name: f for f in dataclasses.fields(Config)}
    assert [s.field for s in SETTINGS] == list(SETTING), "a field declared twice"
    assert set(SETTING) == set(fields)
    for setting in SETTINGS:
        field = fields[setting.field]
        if (setting.required and not setting.required_unless) or setting.fallback:
            assert field.default is dataclasses.MISSING, setting.field
        else:
            assert field.default == setting.default, setting.field
        # What the settings refer to is declared, and a switch is a boolean.
        for other in (setting.required_unless, setting.fallback):
            assert other is None or other in SETTING, setting.field
        assert not setting.switch or isinstance(setting.default, bool), setting.field


def test_spec_variables_and_defaults_are_stated() -> None:
    """SPEC "Configuration": the required variables and the defaults the docs state."""
    stated = {s.env: s.default_text() for s in SETTINGS if s.env}
    assert stated["S3_SOURCE_BUCKET"] == "required"
    assert stated["S3_PREFIX"] == "empty"
    assert stated["SQS_QUEUE_URL"] == "required unless `--dry-run`"
    assert "`S3_SOURCE_BUCKET`" in stated["S3_STATE_BUCKET"]
    assert stated["S3_STATE_KEY"] == "`state/processed_files.json`"
    assert stated["SKIP_FOLDERS"] == "`logs,temp,backups`"
    assert stated["PRUNE_MISSING"] == "`true`"
    # ... and they are the values a run gets.
    cfg = Config.from_env({"S3_SOURCE_BUCKET": "src-bucket"}, dry_run=True)
    assert (cfg.prefix, cfg.queue_url, cfg.state_bucket) == ("", None, "src-bucket")
    assert (cfg.state_key, cfg.prune_missing) == ("state/processed_files.json", True)
    assert cfg.skip_folders == frozenset({"logs", "temp", "backups"})


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_cli_flags_come_from_the_declarations() -> None:
    """Every declared flag is a flag of scan (but the events queue, listen's); wherever
    a declared flag appears, its help is the declaration's (help, default, variable)."""
    parser = build_parser()
    by_flag = {s.flag: s for s in SETTINGS if s.flag}
    parsers = {"": parser, **_subcommands(parser)}
    scan_flags = {o for a in parsers["scan"]._actions for o in a.option_strings}
    listen_flags = {o for a in parsers["listen"]._actions for o in a.option_strings}
    assert set(by_flag) - scan_flags == {"--events-queue-url"}
    assert "--events-queue-url" in listen_flags
    seen = 0
    for name in ("", "scan", "listen", "doctor", "iam-policy"):
        for action in parsers[name]._actions:
            setting = by_flag.get(action.option_strings[0] if action.option_strings else "")
            if setting is None:
                continue
            seen += 1
            assert action.help == setting.cli_help(), (name, setting.flag)
            assert (f"[env {setting.env}]" if setting.env else "[flag only]") in action.help
    assert seen > len(by_flag)


def test_flags_set_the_config_fields_they_are_declared_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scan's flags, parsed by the CLI, reach Config under the declared field."""
    for setting in SETTINGS:
        if setting.env:
            monkeypatch.delenv(setting.env, raising=False)
    argv = "scan --bucket flag-bucket --dry-run --force-rebind --skip-folders x --log-level debug"
    args = build_parser().parse_args(argv.split())
    cfg = _config_from_args(args, "scan")
    assert isinstance(cfg, Config)
    assert (cfg.source_bucket, cfg.dry_run, cfg.force_rebind) == ("flag-bucket", True, True)
    assert (cfg.skip_folders, cfg.log_level) == (frozenset({"x"}), "DEBUG")


def test_docs_tables_are_the_declarations() -> None:
    """docs/configuration.md shows exactly the generated tables (python
    scripts/config_docs.py rewrites them)."""
    page = DOCS_PAGE.read_text(encoding="utf-8")
    assert render_docs(page) == page
    for section in SECTIONS:
        table = markdown_table(section)
        rows = table.splitlines()
        assert all(row.count("|") == rows[0].count("|") for row in rows), "a '|' in a cell"
        assert "None" not in table


def test_render_docs_replaces_a_stale_table() -> None:
    stale = "intro\n<!-- settings:variables -->\n| old |\n<!-- /settings:variables -->\n"
    stale += "<!-- settings:tuning -->\n<!-- /settings:tuning -->\nend\n"
    text = render_docs(stale)
    assert "| old |" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert markdown_table("variables") in text and markdown_table("tuning") in text
    with pytest.raises(ValueError, match="settings:variables"):
        render_docs("no markers")


def test_empty_value_counts_as_unset_except_where_it_means_something() -> None:
    env = {
        **BASE,
        "WORKERS": "",
        "FORCE_REBIND": " ",
        "LIST_STRATEGY": "  ",
        "S3_STATE_KEY": "",
        "S3_STATE_BUCKET": "",
        "SKIP_FOLDERS": "",
    }
    cfg = Config.from_env(env)
    assert (cfg.workers, cfg.force_rebind, cfg.list_strategy) == (16, False, "auto")
    assert (cfg.state_key, cfg.state_bucket) == (DEFAULT_STATE_KEY, "src-bucket")
    assert cfg.skip_folders == frozenset()


def test_problems_are_reported_in_the_order_of_the_settings() -> None:
    env = {
        "STATE_WRITE_ATTEMPTS": "0",
        "LOG_LEVEL": "loud",
        "WORKERS": "x",
        "FORCE_REBIND": "perhaps",
        "S3_PREFIX": "/x",
    }
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    names = [p.split(" ")[0] for p in info.value.problems]
    order = [s.env for s in SETTINGS if s.env in names]
    assert names == order
    assert names[:3] == ["S3_SOURCE_BUCKET", "S3_PREFIX", "SQS_QUEUE_URL"]


def test_unknown_override_is_refused() -> None:
    with pytest.raises(TypeError, match="queue"):
        Config.from_env(BASE, queue="https://sqs.us-east-1.amazonaws.com/1/q")
