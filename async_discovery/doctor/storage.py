"""The checks on S3: the source listing, the state object, the store's conditional writes,
listing continuation (``--deep``) and the store's clock."""

from __future__ import annotations

import uuid

import anyio

from ..aws.probe import ProbeError
from ..config import Config
from ..errors import DiscoveryError, StateBucketMismatch, StateCorrupt, StateTooLarge
from ..iam import SID_LIST_SOURCE, SID_PROBE, SID_STATE, probe_key
from ..state import check_source
from ..state_codec import StateDecoder
from .findings import DOCTOR_GRANTS, Context, Finding, hint

CLOCK_WARN_SECONDS = 5.0  # MIN_OBJECT_AGE_SECONDS and since: compare LastModified to now
STATE_WARN_FRACTION = 0.8  # of STATE_MAX_BYTES
DEEP_KEYS = 300  # keys compared by --deep: one request each at page size 1
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


async def state(ctx: Context) -> Finding:
    """The state object read and decoded as a scan does: absent, or its entries and
    size against ``STATE_MAX_BYTES``, and the source bucket it is bound to."""
    config = ctx.config
    name = f"s3://{config.state_bucket}/{config.state_key}"
    decoder = StateDecoder(name=name, max_bytes=config.state_max_bytes)
    size = 0

    class Sink:
        def feed(self, chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            decoder.feed(chunk)

    cap = f"STATE_MAX_BYTES={config.state_max_bytes}"
    try:
        exists, _etag = await ctx.probe.load_state(Sink())
        if not exists:
            return Finding(
                "state", "ok", f"{name} absent: the first scan creates it ({_initial(config)})"
            )
        state = decoder.close()
        check_source(state, config.source_bucket, name=name, force_rebind=config.force_rebind)
    except StateTooLarge as exc:
        return Finding("state", "fail", str(exc), "raise STATE_MAX_BYTES")
    except StateCorrupt as exc:
        return Finding(
            "state",
            "fail",
            str(exc),
            "restore an earlier version of the object or move it aside (a scan without "
            "state sends every file again: see INITIAL_SCAN)",
        )
    except StateBucketMismatch as exc:
        return Finding("state", "fail", str(exc), "point S3_STATE_KEY at this bucket's state")
    except DiscoveryError as exc:
        return ctx.failure("state", exc, SID_STATE, "s3:GetObject")
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


async def conditional_writes(ctx: Context) -> Finding:
    """Create with ``If-None-Match: *``, the same again (must be refused), overwrite
    with the current ETag (must be accepted), with a stale one (must be refused)."""
    check = "conditional writes"
    bucket, key = ctx.config.state_bucket, probe_key(ctx.config.state_key)
    where = f"probe s3://{bucket}/{key}"
    nonce = uuid.uuid4().hex
    wrong: list[str] = []

    def body(step: int) -> bytes:
        return f"async-discovery doctor probe {nonce} step {step}\n".encode()

    async def attempt(step: int, *, create: bool, if_match: str | None = None) -> str | None:
        """The new ETag, or None when the store refused the condition."""
        try:
            return await ctx.probe.put(bucket, key, body(step), create=create, if_match=if_match)
        except ProbeError as exc:
            if exc.refused:
                return None
            raise

    try:
        first = await attempt(1, create=True)
        if first is None:  # left by an interrupted doctor run: start afresh
            await ctx.probe.delete(bucket, key)
            first = await attempt(1, create=True)
        if first is None:
            wrong.append("refused If-None-Match: * for a missing key")
        else:
            current = first
            second = await attempt(2, create=True)
            if second is not None:
                wrong.append("accepted If-None-Match: * on an existing object")
                current = second
            if await attempt(3, create=False, if_match=current) is None:
                wrong.append("refused If-Match with the current ETag")
            # Step 3 replaced the version `current` names: it is stale now.
            elif await attempt(4, create=False, if_match=current) is not None:
                wrong.append("accepted a stale If-Match")
    except ProbeError as exc:
        if exc.denied:
            action = "s3:DeleteObject" if exc.operation == "DeleteObject" else "s3:PutObject"
            missing = ctx.needs(SID_PROBE, action, scan=False)
            return Finding(check, "warn", f"could not check: needs {missing}", DOCTOR_GRANTS)
        if exc.code != "NotImplemented" and exc.status != 501:
            return Finding(check, "fail", f"{where}: {exc}", hint(exc))
        wrong.append(f"does not implement conditional writes ({exc})")
    finally:
        with anyio.CancelScope(shield=True):
            leftover = await _delete_probe(ctx, bucket, key)
    if wrong:
        return Finding(
            check,
            "fail",
            f"{where}: the store {' and '.join(wrong)}",
            "overlapping runs would lose or tear the state (both read it, both write it, "
            f"the later write silently wins); {_ONE_AT_A_TIME}, or use a store whose "
            "conditional writes compare-and-swap",
        )
    if leftover:
        return Finding(
            check, "warn", f"{where}: writes compare-and-swap; {leftover}", DOCTOR_GRANTS
        )
    return Finding(
        check,
        "ok",
        f"{where}: second create refused, stale If-Match refused, probe deleted",
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
