"""The discovery rule applied to listing pages: candidates, and ignored keys counted."""

from __future__ import annotations

from collections import Counter

from ..discovery import Verdict, classify
from ..models import ListedObject
from ..ports import RawPage
from .context import RunContext
from .units import Listing, Page


def classify_page(ctx: RunContext, raw: RawPage, listing: Listing | None, seq: int) -> Page:
    """One listing page with its keys sorted by the discovery rule (``listing`` None: the
    folder discovery's top-level objects, only ever counted)."""
    cfg = ctx.config
    candidates: list[tuple[str, ListedObject]] = []
    ignored: Counter[Verdict] = Counter()
    explained: list[tuple[str, Verdict]] = []
    explain = ctx.tally.explaining
    # A folder's listing (Delimiter "/"): its keys are "<prefix><folder>/<name>" with no
    # "/" in name, so a name ending in ".csv" is a candidate without the full rule (the
    # rule still decides every other key, and any key a server sent outside the folder).
    folder = listing.job.folder if listing is not None else None
    fast = folder if folder and folder not in cfg.skip_folders else None
    inside = f"{cfg.prefix}{folder}/"
    start = len(inside)
    for obj in raw.objects:
        key = obj.key
        if (
            fast is not None
            and key.endswith(".csv")
            and key.startswith(inside)
            and key.find("/", start) < 0
        ):
            candidates.append((fast, obj))
            continue
        verdict, name = classify(key, cfg.prefix, cfg.skip_folders)
        if verdict is Verdict.CANDIDATE:
            candidates.append((name, obj))
        else:
            ignored[verdict] += 1
            if explain:
                explained.append((key, verdict))
    for cp in raw.common_prefixes:
        # A deeper level rolled up by the delimiter: never enumerated, counted once.
        ignored[Verdict.DEEP] += 1
        if explain:
            explained.append((cp, Verdict.DEEP))
    last = raw.objects[-1].key if raw.objects else None
    if raw.common_prefixes and (last is None or raw.common_prefixes[-1] > last):
        last = raw.common_prefixes[-1]
    return Page(listing, seq, last, candidates, dict(ignored), len(raw.objects), explained)


def account(ctx: RunContext, page: Page) -> None:
    """Count a page's listed and ignored keys (once, when the page is taken)."""
    ctx.stats.listed += page.listed
    if ctx.tally.explaining:
        for key, verdict in page.explained:
            ctx.tally.ignored(key, verdict)
    else:
        for verdict, n in page.ignored.items():
            ctx.stats.count_ignored(verdict, n)
