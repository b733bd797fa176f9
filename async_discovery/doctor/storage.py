"""The checks on S3: the source listing, the state (the object, or under
``STATE_LAYOUT=folders`` the prefix's shards and run objects), the store's conditional
writes, listing continuation (``--deep``) and the store's clock."""

from __future__ import annotations

import json
import uuid

import anyio

from ..aws.probe import ProbeError
from ..config import Config
from ..errors import DiscoveryError, StateBucketMismatch, StateCorrupt, StateTooLarge
from ..iam import SID_LIST_SOURCE, SID_LIST_STATE, SID_PROBE, SID_STATE, doctor_probe_key
from ..layout import is_shard_of, runs_key, shards_prefix
from ..resume import cursor_problem
from ..state import SHARD_VERSION, STATE_VERSION, State, check_source
from ..state_codec import StateDecoder
from .findings import DOCTOR_GRANTS, Context, Finding

CLOCK_WARN_SECONDS = 5.0  # MIN_OBJECT_AGE_SECONDS and since: compare LastModified to now
STATE_WARN_FRACTION = 0.8  # of STATE_MAX_BYTES
DEEP_KEYS = 300  # keys compared by --deep: one request each at page size 1
SHARD_SAMPLE = 3  # shards read and decoded (the largest: the first to outgrow the cap)
SHARD_LIST_LIMIT = 10_000  # shards listed at most (ten pages), counted as "10000+" beyond
_ONE_AT_A_TIME = (
    "run one scan at a time: reserved concurrency 1 on the function, no overlapping "
    "schedules (and no manual run during a scheduled one)"
)


async def source_listing(ctx: Context) -> Finding:
    """One ``Delimiter`` page of the prefix, as a scan starts: the folders, the skipped
    ones among them."""
    config = ctx.config
    where = f"s3://{config.source_bucket}/{config.prefix}"
    try:
        page = await ctx.probe.list_page(config.source_bucket, config.prefix, delimiter=True)
    except ProbeError as exc:
        return ctx.failure("source listing", exc, SID_LIST_SOURCE, "s3:ListBucket")
    folders = [p[len(config.prefix) :].rstrip("/") for p in page.prefixes]
    skipped = sorted(f for f in folders if f in config.skip_folders)
    more = "+" if page.truncated else ""
    found = f"{where}: {len(folders)}{more} folders"
    if skipped:
        found += f", skipped folders present: {', '.join(skipped)}"
    if len(folders) == len(skipped):
        return Finding(
            "source listing",
            "warn",
            found + "; no folder a scan would read",
            "a scan reads <prefix><folder>/<name>.csv: check S3_PREFIX and SKIP_FOLDERS",
        )
    return Finding("source listing", "ok", found)


class _Decoding:
    """A sink that decodes a state object (or shard) as it arrives and counts its bytes."""

    def __init__(self, name: str, max_bytes: int, version: int) -> None:
        self.decoder = StateDecoder(name=name, max_bytes=max_bytes, version=version)
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.decoder.feed(chunk)


class _Collecting:
    """A sink that keeps a (small) run object's chunks."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        self.parts.append(chunk)


async def _read_state(ctx: Context, key: str, version: int) -> tuple[State | None, int]:
    """The object at ``key`` read and decoded as a scan does (None when absent), and its
    size; raises what a scan would."""
    config = ctx.config
    name = f"s3://{config.state_bucket}/{key}"
    sink = _Decoding(name, config.state_max_bytes, version)
    exists, _etag = await ctx.probe.load_state(sink, key)
    if not exists:
        return None, 0
    state = sink.decoder.close()
    check_source(state, config.source_bucket, name=name, force_rebind=config.force_rebind)
    return state, sink.size


def _unusable(ctx: Context, exc: DiscoveryError) -> Finding:
    """The finding for a state object (or shard) a scan could not use."""
    if isinstance(exc, StateTooLarge):
        return Finding("state", "fail", str(exc), "raise STATE_MAX_BYTES")
    if isinstance(exc, StateCorrupt):
        return Finding(
            "state",
            "fail",
            str(exc),
            "restore an earlier version of the object or move it aside (a scan without "
            "state sends every file again: see INITIAL_SCAN)",
        )
    if isinstance(exc, StateBucketMismatch):
        return Finding("state", "fail", str(exc), "point S3_STATE_KEY at this bucket's state")
    return ctx.failure("state", exc, SID_STATE, "s3:GetObject")


async def state(ctx: Context) -> Finding:
    """The state read and decoded as a scan does: the single object (:func:`_single`)
    or, under ``STATE_LAYOUT=folders``, the prefix's shards (:func:`_shards`)."""
    if ctx.config.state_layout == "folders":
        return await _shards(ctx)
    return await _single(ctx)


async def _single(ctx: Context) -> Finding:
    """The state object: absent, or its entries and size against ``STATE_MAX_BYTES``,
    and the source bucket it is bound to."""
    config = ctx.config
    name = f"s3://{config.state_bucket}/{config.state_object_key}"
    cap = f"STATE_MAX_BYTES={config.state_max_bytes}"
    try:
        state, size = await _read_state(ctx, config.state_object_key, STATE_VERSION)
        if state is None:
            return Finding(
                "state", "ok", f"{name} absent: the first scan creates it ({_initial(config)})"
            )
    except DiscoveryError as exc:
        return _unusable(ctx, exc)
    share = size / config.state_max_bytes
    found = f"{name}: {len(state.files)} entries, {size} bytes ({share:.1%} of {cap})"
    if state.source_bucket is None:
        found += f", not bound yet (the next scan binds it to {config.source_bucket})"
    elif state.source_bucket != config.source_bucket:
        return Finding(
            "state",
            "warn",
            f"{found}, bound to {state.source_bucket}: the next scan rebinds it",
            "unset FORCE_REBIND once the state has moved",
        )
    else:
        found += f", bound to {state.source_bucket}"
    if share > STATE_WARN_FRACTION:
        return Finding(
            "state",
            "warn",
            found,
            f"raise STATE_MAX_BYTES before the state outgrows it (a scan refuses a "
            f"state over {cap}), or split the prefix across state keys",
        )
    return Finding("state", "ok", found)


async def _shards(ctx: Context) -> Finding:
    """``STATE_LAYOUT=folders``: the prefix's shards listed (count, the largest size
    against ``STATE_MAX_BYTES``), the largest few read and decoded as a scan does, and
    the run objects ``initial.json`` and ``cursor.json`` read when present."""
    config = ctx.config
    bucket, head = config.state_bucket, shards_prefix(config.state_prefix, config.prefix)
    where = f"s3://{bucket}/{head}"
    cap = config.state_max_bytes
    try:
        listed, more = await ctx.probe.list_sizes(bucket, head, limit=SHARD_LIST_LIMIT)
    except ProbeError as exc:
        return ctx.failure("state", exc, _state_listing_sid(config), "s3:ListBucket")
    shards = sorted(
        (
            (size, key)
            for key, size in listed
            if is_shard_of(key, config.state_prefix, config.prefix)
        ),
        reverse=True,
    )
    try:
        entries = 0
        for _size, key in shards[:SHARD_SAMPLE]:
            shard, _ = await _read_state(ctx, key, SHARD_VERSION)
            entries += len(shard.files) if shard is not None else 0
        runs = await _run_objects(ctx)
    except DiscoveryError as exc:
        return _unusable(ctx, exc)
    if not shards:
        found = f"{where}: no shard yet: the first scan creates them ({_initial(config)})"
        return Finding("state", "ok", found + runs)
    largest = shards[0][0]
    share = largest / cap
    count = f"{len(shards)}{'+' if more else ''}"
    sampled = min(len(shards), SHARD_SAMPLE)
    found = (
        f"{where}: {count} shards, the largest {largest} bytes ({share:.1%} of "
        f"STATE_MAX_BYTES={cap}); the {sampled} largest read: {entries} entries{runs}"
    )
    if share > STATE_WARN_FRACTION:
        return Finding(
            "state",
            "warn",
            found,
            f"raise STATE_MAX_BYTES before a folder's shard outgrows it (a scan fails the "
            f"folder of a shard over STATE_MAX_BYTES={cap})",
        )
    return Finding("state", "ok", found)


async def _run_objects(ctx: Context) -> str:
    """The prefix's ``initial.json`` and ``cursor.json`` in words ('' when neither
    exists); raises :class:`StateCorrupt` for one a scan could not use."""
    config = ctx.config
    said = ""
    for name in ("initial.json", "cursor.json"):
        key = runs_key(config.state_prefix, config.prefix, name)
        sink = _Collecting()
        exists, _etag = await ctx.probe.load_state(sink, key)
        if not exists:
            continue
        where = f"s3://{config.state_bucket}/{key}"
        try:
            doc = json.loads(b"".join(sink.parts))
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict) or doc.get("version") != SHARD_VERSION:
            raise StateCorrupt(f"state object {where} is not a version 2 JSON object")
        if name == "initial.json":
            policy = doc.get("initial_scan")
            if not isinstance(policy, str) or not policy.startswith("since:"):
                raise StateCorrupt(
                    f"state object {where}: initial_scan {policy!r} is not since:<instant>"
                )
            said += f"; {name}: INITIAL_SCAN={policy}"
        else:
            problem = cursor_problem(doc.get("cursor"))
            if problem is not None:
                raise StateCorrupt(f"state object {where}: the cursor {problem}")
            said += f"; {name}: a truncated pass continues from it"
    return said


def _state_listing_sid(config: Config) -> str:
    """The grant of the listings of the state prefix (see :func:`~.iam.build_policy`)."""
    return SID_LIST_SOURCE if config.state_bucket == config.source_bucket else SID_LIST_STATE


async def conditional_writes(ctx: Context) -> Finding:
    """Create with ``If-None-Match: *``, the same again (must be refused), overwrite
    with the current ETag (must be accepted), with a stale one (must be refused)."""
    check, probe = "conditional writes", _WriteProbe(ctx)
    try:
        await probe.run()
    except ProbeError as exc:
        if exc.denied:
            action = "s3:DeleteObject" if exc.operation == "DeleteObject" else "s3:PutObject"
            missing = ctx.needs(SID_PROBE, action, scan=False)
            return Finding(check, "warn", f"could not check: needs {missing}", DOCTOR_GRANTS)
        if exc.code != "NotImplemented" and exc.status != 501:
            return ctx.broken(check, exc, f"{probe.where}: {exc}")
        probe.wrong.append(f"does not implement conditional writes ({exc})")
    finally:
        with anyio.CancelScope(shield=True):
            leftover = await _delete_probe(ctx, probe.bucket, probe.key)
    return _conditional_finding(check, probe, leftover)


class _WriteProbe:
    """The doctor's probe object written under conditions, and what the store did that
    a compare-and-swap store would not (``wrong``)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.bucket, self.key = ctx.config.state_bucket, doctor_probe_key(ctx.config)
        self.where = f"probe s3://{self.bucket}/{self.key}"
        self.nonce = uuid.uuid4().hex
        self.wrong: list[str] = []

    async def run(self) -> None:
        """The four conditional writes of :func:`conditional_writes`, in order."""
        first = await self._put(1, create=True)
        if first is None:  # left by an interrupted doctor run: start afresh
            await self.ctx.probe.delete(self.bucket, self.key)
            first = await self._put(1, create=True)
        if first is None:
            self.wrong.append("refused If-None-Match: * for a missing key")
            return
        current = first
        second = await self._put(2, create=True)
        if second is not None:
            self.wrong.append("accepted If-None-Match: * on an existing object")
            current = second
        if await self._put(3, create=False, if_match=current) is None:
            self.wrong.append("refused If-Match with the current ETag")
        # Step 3 replaced the version `current` names: it is stale now.
        elif await self._put(4, create=False, if_match=current) is not None:
            self.wrong.append("accepted a stale If-Match")

    async def _put(self, step: int, *, create: bool, if_match: str | None = None) -> str | None:
        """The new ETag, or None when the store refused the condition."""
        body = f"async-discovery doctor probe {self.nonce} step {step}\n".encode()
        try:
            return await self.ctx.probe.put(
                self.bucket, self.key, body, create=create, if_match=if_match
            )
        except ProbeError as exc:
            if exc.refused:
                return None
            raise


def _conditional_finding(check: str, probe: _WriteProbe, leftover: str) -> Finding:
    """The finding of :func:`conditional_writes` once the probe ran to its end."""
    if probe.wrong:
        return Finding(
            check,
            "fail",
            f"{probe.where}: the store {' and '.join(probe.wrong)}",
            "overlapping runs would lose or tear the state (both read it, both write it, "
            f"the later write silently wins); {_ONE_AT_A_TIME}, or use a store whose "
            "conditional writes compare-and-swap",
        )
    if leftover:
        return Finding(
            check, "warn", f"{probe.where}: writes compare-and-swap; {leftover}", DOCTOR_GRANTS
        )
    return Finding(
        check,
        "ok",
        f"{probe.where}: second create refused, stale If-Match refused, probe deleted",
    )


async def _delete_probe(ctx: Context, bucket: str, key: str) -> str:
    """'' once the probe is gone, else what stopped its deletion."""
    try:
        await ctx.probe.delete(bucket, key)
    except ProbeError as exc:
        if exc.denied:
            return "probe left behind: needs " + ctx.needs(SID_PROBE, "s3:DeleteObject", scan=False)
        return f"probe left behind: {exc}"
    return ""


async def continuation(ctx: Context) -> Finding:
    """The first keys at page size 1000, and again at page size 1 (up to the same last
    key), must be the same. A key missing from the second listing counts as lost
    only if a listing of exactly that key still shows it (not deleted meanwhile)."""
    check = "listing continuation"
    bucket, prefix = ctx.config.source_bucket, ctx.config.prefix
    where = f"s3://{bucket}/{prefix}"
    try:
        whole = await ctx.probe.list_keys(bucket, prefix, page_size=1000, limit=DEEP_KEYS)
        paged: set[str] = set()
        if whole:
            paged.update(
                await ctx.probe.list_keys(
                    bucket, prefix, page_size=1, limit=2 * DEEP_KEYS, until=whole[-1]
                )
            )
        lost = [k for k in whole if k not in paged and await ctx.probe.listed(bucket, k)]
    except ProbeError as exc:
        return ctx.failure(check, exc, SID_LIST_SOURCE, "s3:ListBucket")
    if not lost:
        return Finding(
            check, "ok", f"{where}: the first {len(whole)} keys agree at page size 1000 and 1"
        )
    return Finding(
        check,
        "fail",
        f"{where}: listed one key a page, {len(lost)} of the first {len(whole)} keys "
        f"went missing (first {lost[0]!r}); keys are lost between pages",
        "a scan would take listed-but-lost keys as deleted and prune live entries, then "
        "send them again: set PRUNE_MISSING=false and upgrade or replace the store",
    )


def clock(ctx: Context) -> Finding:
    """The store's ``Date`` (last S3 answer) against this machine's clock."""
    sample = ctx.probe.clock
    if sample is None:
        if ctx.refused is not None:
            return Finding("clock", "warn", "not checked: no usable credentials (above)")
        return Finding("clock", "warn", "could not check: no S3 answer carried a Date header")
    skew, error = sample.skew, sample.uncertainty
    side = "ahead of" if skew >= 0 else "behind"
    found = f"the store's clock is {abs(skew):.1f} s {side} this machine's (±{error:.1f} s)"
    if abs(skew) - error > CLOCK_WARN_SECONDS:
        return Finding(
            "clock",
            "warn",
            found,
            "synchronise the clocks (NTP): MIN_OBJECT_AGE_SECONDS and INITIAL_SCAN=since: "
            "compare the store's LastModified with this machine's time",
        )
    return Finding("clock", "ok", found)


def _initial(config: Config) -> str:
    return f"INITIAL_SCAN={config.initial_scan}"
