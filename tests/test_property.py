"""Property: whatever the bucket does and whatever fails, state never gets ahead of SQS.

Hypothesis draws a sequence of bucket changes (add, overwrite, delete) and runs, each run
with at most one injected fault. After every run: every file the state records as queued
was accepted by SQS with that ETag (messages drained from the queue so far). After a run
without faults: it sent exactly the changed candidates, each once, and the state equals
the bucket's candidates. After a final clean run: the same, so nothing was lost.

Each example gets a fresh bucket and queue. Runs use ``max_attempts=1`` (no botocore
retries, so a fault bites at once and no backoff slows the search); botocore's retries
are shown in tests/test_faults.py.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from async_discovery.config import DEFAULT_STATE_KEY
from async_discovery.testing.fault_proxy import (
    Drop,
    FailEntries,
    FaultProxy,
    ProxiedRequest,
    Rule,
    S3Error,
    SqsError,
)

from .helpers import MotoEnv, scan

FOLDERS = ("a", "b", "c")
FILES = ("1.csv", "2.csv", "3.CSV", "4.csv")
FAULTS = (
    "send-error",  # SendMessageBatch 500 for batches holding the target
    "entry-retryable",  # the target's entry under Failed, SenderFault false, once
    "entry-sender-fault",  # the target's entry under Failed, SenderFault true
    "send-dropped",  # SQS took the batch, the answer was lost
    "list-slowdown",  # a folder's listing throttled
    "state-write-error",  # the state PutObject fails
    "state-write-dropped",  # the state PutObject lands, the answer is lost
    "state-read-error",  # the state GetObject fails
)

put_step = st.tuples(
    st.just("put"), st.sampled_from(FOLDERS), st.sampled_from(FILES), st.integers(0, 2)
)
delete_step = st.tuples(
    st.just("delete"), st.sampled_from(FOLDERS), st.sampled_from(FILES), st.just(0)
)
run_step = st.tuples(
    st.just("run"), st.sampled_from((None, *FAULTS)), st.sampled_from(FOLDERS + FILES), st.just(0)
)
steps_strategy = st.lists(st.one_of(put_step, put_step, delete_step, run_step), max_size=8)


def _key(folder: str, name: str) -> str:
    return f"incoming/{folder}/{name}"


def _entry_key(entry: Mapping[str, Any]) -> str:
    return str(json.loads(entry["MessageBody"])["key"])


def _fault_rule(fault: str, target: str, bucket: str) -> Rule:
    """The rule for ``fault``; ``target`` is a folder or file name picking the victim."""

    def is_state(r: ProxiedRequest) -> bool:
        return r.bucket == bucket and r.key == DEFAULT_STATE_KEY

    def hits(entry: Mapping[str, Any]) -> bool:
        return target in _entry_key(entry)

    def in_batch(r: ProxiedRequest) -> bool:
        return any(hits(e) for e in (r.json() or {}).get("Entries", []))

    if fault == "send-error":
        return Rule(SqsError("InternalError", 500), "SendMessageBatch", in_batch)
    if fault == "entry-retryable":
        return Rule(FailEntries(hits), "SendMessageBatch", in_batch, times=1)
    if fault == "entry-sender-fault":
        return Rule(
            FailEntries(hits, "InvalidParameterValue", sender_fault=True), "SendMessageBatch"
        )
    if fault == "send-dropped":
        return Rule(Drop(after_forward=True), "SendMessageBatch", in_batch, times=1)
    if fault == "list-slowdown":
        folder = target if target in FOLDERS else FOLDERS[0]
        prefix = f"incoming/{folder}/"
        return Rule(S3Error.slow_down(), "ListObjectsV2", lambda r: r.query.get("prefix") == prefix)
    if fault == "state-write-error":
        return Rule(S3Error("InternalError", 500), "PutObject", is_state)
    if fault == "state-write-dropped":
        return Rule(Drop(after_forward=True), "PutObject", is_state, times=1)
    if fault == "state-read-error":
        return Rule(S3Error("InternalError", 500), "GetObject", is_state)
    raise AssertionError(fault)


class World:
    """One example's bucket, queue and what SQS accepted so far."""

    def __init__(self, env: MotoEnv, proxy: FaultProxy) -> None:
        self.env = env
        self.proxy = proxy
        self.bucket = env.new_bucket()
        self.queue = env.new_queue()
        self.objects: dict[str, str] = {}  # candidate key -> current ETag
        self.accepted: set[tuple[str, str]] = set()
        env.put(self.bucket, "incoming/top.csv")  # never a candidate
        env.put(self.bucket, "incoming/logs/skip.csv")  # skipped folder

    def state(self) -> dict[str, dict[str, Any]]:
        doc = self.env.state(self.bucket)
        return {} if doc is None else dict(doc["files"])

    def run(self, fault: str | None, target: str) -> None:
        before = {k: v["etag"] for k, v in self.state().items()}
        self.proxy.clear()
        if fault is not None:
            self.proxy.add(_fault_rule(fault, target, self.bucket))
        config = self.env.config(
            self.bucket, self.queue, endpoint_url=self.proxy.url, max_attempts=1
        )
        summary = anyio.run(functools.partial(scan, config))
        self.proxy.clear()
        messages = [(b["key"], b["etag"]) for b in self.env.bodies(self.queue)]
        self.accepted.update(messages)
        state = self.state()
        # Never ahead of SQS: every recorded file was accepted with that ETag.
        for key, entry in state.items():
            assert entry["status"] == "queued"
            assert (key, entry["etag"]) in self.accepted, (key, fault, summary)
        if fault is None:
            changed = {(k, e) for k, e in self.objects.items() if before.get(k) != e}
            assert summary["statusCode"] == 200, summary
            assert sorted(messages) == sorted(changed), (fault, summary)  # once each
            assert {k: v["etag"] for k, v in state.items()} == self.objects
        else:
            assert summary["statusCode"] in (200, 207, 500), summary


@pytest.mark.slow  # a soak: 15 random sequences of runs under faults
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps_strategy)
def test_state_never_claims_what_sqs_did_not_accept(
    steps: list[tuple[str, Any, Any, int]], env: MotoEnv, threaded_proxy: FaultProxy
) -> None:
    world = World(env, threaded_proxy)
    for op, a, b, variant in steps:
        if op == "put":
            key = _key(a, b)
            world.objects[key] = env.put(world.bucket, key, f"{key},{variant}\n")
        elif op == "delete":
            key = _key(a, b)
            env.s3.delete_object(Bucket=world.bucket, Key=key)
            world.objects.pop(key, None)
        else:
            world.run(a, b)
    # A final clean run: every current candidate in state with its current ETag.
    world.run(None, "")
    assert {k: v["etag"] for k, v in world.state().items()} == world.objects
    assert {(k, e) for k, e in world.objects.items()} <= world.accepted
