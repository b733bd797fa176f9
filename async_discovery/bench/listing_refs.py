"""The listing references of one large folder: sequential, and by key ranges at once.

Both page through the folder with the scanner's own lister (:class:`~async_discovery.
aws.S3Lister`: the request signed and sent by aiobotocore, the body parsed lean) and
drop every page: no discovery rule, no state, no messages. They are what listing the
folder costs with this client, which the scanner's run over the same folder is divided
by.

- :func:`list_sequential`: one ``ListObjectsV2`` pagination of the prefix, page after
  page (what a single lister does).
- :func:`list_ranges` (the *range floor*): given split keys ``b_1 < … < b_k``, the
  ``k + 1`` ranges ``(-inf, b_1], (b_1, b_2], …, (b_k, +inf)`` listed at once, up to
  ``concurrency`` in flight: each with ``StartAfter=b_i`` (exclusive, so a key equal to
  a bound is listed once, in the range it closes) and stopped at the first page that
  reaches its upper bound. With bounds that are listed keys, no request past a range's
  end is made: ``ceil(keys / page)`` pages per range.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import aclosing
from itertools import pairwise
from typing import Any

import anyio

from ..ports import Lister


async def list_sequential(lister: Lister, prefix: str, *, delimiter: bool = True) -> dict[str, Any]:
    """Page through ``prefix`` once; the keys and pages seen."""
    keys = pages = 0
    async with aclosing(lister.pages(prefix, delimiter=delimiter)) as listing:
        async for page in listing:
            keys += len(page.objects)
            pages += 1
    return {"listed": keys, "pages": pages}


async def list_range(
    lister: Lister, prefix: str, lower: str | None, upper: str | None, *, delimiter: bool = True
) -> tuple[int, int]:
    """The keys in ``(lower, upper]`` under ``prefix`` (None: unbounded); (keys, pages)."""
    keys = pages = 0
    listing = lister.pages(prefix, delimiter=delimiter, start_after=lower)
    async with aclosing(listing) as ranged:
        async for page in ranged:
            pages += 1
            objects = page.objects
            if upper is None or not objects or objects[-1].key < upper:
                keys += len(objects)
                continue
            keys += sum(1 for obj in objects if obj.key <= upper)
            break
    return keys, pages


async def list_ranges(
    lister: Lister,
    prefix: str,
    bounds: Sequence[str],
    concurrency: int,
    *,
    delimiter: bool = True,
) -> dict[str, Any]:
    """List ``prefix`` as the ranges split at ``bounds`` (sorted, distinct), up to
    ``concurrency`` ranges at once; the keys and pages seen, and the keys per range."""
    if list(bounds) != sorted(set(bounds)):
        raise ValueError("range bounds must be sorted and distinct")
    edges: list[str | None] = [None, *bounds, None]
    ranges = list(pairwise(edges))
    per_range = [0] * len(ranges)
    pages = 0
    todo: Iterator[int] = iter(range(len(ranges)))

    async def worker() -> None:
        nonlocal pages
        for index in todo:  # shared iterator: each range taken once
            lower, upper = ranges[index]
            keys, seen = await list_range(lister, prefix, lower, upper, delimiter=delimiter)
            per_range[index] = keys
            pages += seen

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, min(concurrency, len(ranges)))):
            tg.start_soon(worker)
    return {"listed": sum(per_range), "pages": pages, "ranges": len(ranges), "per_range": per_range}


async def list_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """A bench child's listing reference (``kind`` ``list_sequential`` or
    ``list_ranges``): clients opened as the scanner opens them, then the listing."""
    from ..aws import S3Lister, open_clients
    from ..config import Config

    concurrency = int(spec.get("concurrency", 1))
    config = Config(
        source_bucket=spec["bucket"],
        state_bucket=spec["bucket"],
        endpoint_url=spec["endpoint"],
        list_concurrency=max(concurrency, 1),
    )
    async with open_clients(config) as clients:
        lister = S3Lister(clients.s3, spec["bucket"], page_size=config.list_page_size)
        if spec["kind"] == "list_ranges":
            out = await list_ranges(lister, spec["prefix"], spec["bounds"], concurrency)
        else:
            out = await list_sequential(lister, spec["prefix"])
    out["queued"] = 0
    out["api_calls"] = {"ListObjectsV2": out["pages"]}
    return out


def every_nth(keys: Sequence[str], step: int) -> list[str]:
    """Split keys: the ``step``-th, ``2 step``-th, … key, short of the last one (so no
    range is empty when ``step`` divides the count)."""
    return list(keys[step - 1 : len(keys) - 1 : step])
