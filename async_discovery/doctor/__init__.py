"""``async-discovery doctor``: checks that the store, the queue and the role do what a
scan relies on (docs/doctor.md).

A scan's guarantees rest on the store's conditional writes really comparing-and-swapping,
its listings really returning every key, and the role really allowing each call. Each
check gives one :class:`Finding` (ok / warn / fail, what was found, the fix); the run
exits 1 when any check failed. The doctor never writes the state object and never
changes the queue's contents (``--send-test-message`` adds one marked message, on
request): its writes go to a probe object beside the state
(:func:`~.iam.doctor_probe_key`).
It talks to AWS only through :mod:`async_discovery.aws.probe`.

The checks: :mod:`.storage` (source listing, state, conditional writes, listing
continuation, clock), :mod:`.queue`; what they report and share: :mod:`.findings`.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from ..aws.probe import open_probe
from ..config import Config, event_switch
from ..errors import ConfigError
from ..iam import build_policy
from . import queue, storage
from .findings import Context, Finding, failed, permissions, report

__all__ = ["Finding", "diagnose", "failed", "report", "run_cli", "run_lambda"]


async def diagnose(
    config: Config | ConfigError, *, deep: bool = False, send_test_message: bool = False
) -> list[Finding]:
    """Every check, in order; only the configuration check when the configuration is bad."""
    if isinstance(config, ConfigError):
        return [
            Finding(
                "configuration",
                "fail",
                "; ".join(config.problems) + " (other checks not run)",
                "set the variables or flags named (`async-discovery scan --help`)",
            )
        ]
    findings = [Finding("configuration", "ok", _summary(config))]
    async with open_probe(config) as probe:
        ctx = Context(config, probe, build_policy(config, region=probe.region, doctor=True))
        checks: list[tuple[str, Callable[[Context], Awaitable[Finding]]]] = [
            ("source listing", storage.source_listing),
            ("state", storage.state),
            ("conditional writes", storage.conditional_writes),
        ]
        if deep:
            checks.append(("listing continuation", storage.continuation))
        checks.append(
            ("queue", functools.partial(queue.queue, send_test_message=send_test_message))
        )
        for name, check in checks:
            try:
                findings.append(await check(ctx))
            except Exception as exc:  # a bug or an answer nothing expected: still report
                found = f"unexpected error: {type(exc).__name__}: {exc}"
                findings.append(ctx.broken(name, exc, found))
        findings.append(storage.clock(ctx))
        findings.append(permissions(ctx))
    return findings


def _summary(config: Config) -> str:
    if config.state_layout == "folders":
        where = f"shards s3://{config.state_bucket}/{config.state_prefix} (STATE_LAYOUT=folders)"
    else:
        where = f"s3://{config.state_bucket}/{config.state_object_key}"
    return f"s3://{config.source_bucket}/{config.prefix} -> {config.queue_url}, state {where}"


def run_cli(
    config: Config | ConfigError, *, deep: bool, send_test_message: bool, output: str
) -> int:
    """``async-discovery doctor``: print the findings; 0 when none failed, else 1."""
    findings = anyio.run(lambda: diagnose(config, deep=deep, send_test_message=send_test_message))
    if output == "json":
        sys.stdout.write(json.dumps(report(findings), ensure_ascii=False) + "\n")
    else:
        sys.stdout.write("".join(f.line() + "\n" for f in findings))
    sys.stdout.flush()
    return 1 if failed(findings) else 0


def run_lambda(env: Mapping[str, str], event: dict[str, Any]) -> dict[str, Any]:
    """The Lambda event ``{"action": "doctor"}`` (``"deep"`` and ``"send_test_message"``
    optional JSON booleans), configured from ``env`` as a scan is: :func:`report` of the
    findings, statusCode 200 or 500 (a switch that is not a JSON boolean fails the
    configuration check, naming it, and runs nothing else)."""
    problems: list[str] = []
    deep = event_switch(event, "deep", problems) or False
    send = event_switch(event, "send_test_message", problems) or False
    config: Config | ConfigError
    try:
        config = Config.from_env(env)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:  # a switch given as "false" must not run the check it names
        config = ConfigError(problems)
    return report(anyio.run(lambda: diagnose(config, deep=deep, send_test_message=send)))
