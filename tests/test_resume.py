"""Resumable scans against a moto server.

A deadline that expires once N candidates were considered truncates every run at a
deterministic point; small pages (``LIST_PAGE_SIZE``) make a few hundred files span many
pages. Each test runs until a pass completes and checks that every file was sent exactly
once, in a bounded number of runs, with the cursor gone at the end.
"""

from __future__ import annotations

import anyio
import pytest

from async_discovery.config import parse_initial_scan

from .helpers import MotoEnv, scan
from .operator_support import run_until_complete, scan_with_budget, seed_folders


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "extra"),
    [
        ("folders", {}),
        ("flat", {}),
        ("auto", {"folder_threshold": 2}),  # 6 folders > 2: falls back to the flat listing
    ],
)
async def test_truncated_runs_resume_and_send_every_file_once(
    env: MotoEnv, bucket: str, queue_url: str, strategy: str, extra: dict[str, int]
) -> None:
    keys = seed_folders(env, bucket, folders=6, files=40)
    env.put(bucket, "incoming/top.csv")  # ignored, listed by every folders-strategy run
    config = env.config(
        bucket,
        queue_url,
        list_strategy=strategy,
        list_page_size=10,
        workers=1,  # pages handled in listing order: nothing is listed twice
        list_concurrency=1,
        **extra,
    )

    first = await scan_with_budget(config, candidates=30)
    assert first["truncated"] is True
    state = env.state(bucket)
    assert state is not None
    cursor = state["cursors"]["incoming/"]
    expected = "folders" if strategy == "folders" else "flat"
    assert cursor["strategy"] == expected
    recorded = set(state["files"])
    if expected == "flat":
        # The last key processed: every key up to it is in state, none after it.
        assert cursor["start_after"] == max(recorded)
        assert recorded == {k for k in keys if k <= cursor["start_after"]}
    else:
        # Per unfinished folder, the last key processed (None: not begun).
        assert cursor["pending"]
        for folder, start_after in cursor["pending"].items():
            mine = [k for k in recorded if k.startswith(f"incoming/{folder}/")]
            assert start_after == (max(mine) if mine else None)

    done = await run_until_complete(env, config, queue_url, candidates=30)
    runs = 1 + done.runs
    # 240 files in pages of 10 are 24 pages; each run handles 3 of them: 8 runs, and
    # one more when the eighth stops just as the listing ends.
    assert runs <= 9, runs
    assert done.summaries[-1]["truncated"] is False
    # Resumed listings start after the last processed key: nothing is seen twice.
    assert all(s["skipped"] == 0 for s in done.summaries)
    sent = done.sent  # the queue was drained only at the end: the first run's too
    assert set(sent) == set(keys)
    assert set(sent.values()) == {1}
    final = env.state(bucket)
    assert final is not None
    assert final.get("cursors", {}) == {}
    assert len(final["files"]) == len(keys)

    again = await scan(config)
    assert (again["queued"], again["skipped"], again["truncated"]) == (0, len(keys), False)


async def test_resume_with_concurrent_workers_sends_every_file_once(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """Default concurrency: pages are handled out of order, so a resumed listing may
    re-list a page already handled (skipped), but never skips a file."""
    keys = seed_folders(env, bucket, folders=8, files=30)
    config = env.config(bucket, queue_url, list_page_size=7)
    done = await run_until_complete(env, config, queue_url, candidates=40)
    assert done.runs > 1
    assert set(done.sent) == set(keys)
    assert set(done.sent.values()) == {1}
    assert env.state(bucket).get("cursors", {}) == {}  # type: ignore[union-attr]


async def test_a_new_folder_between_runs_is_covered(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    keys = seed_folders(env, bucket, folders=4, files=20)
    config = env.config(bucket, queue_url, list_page_size=10, workers=1, list_concurrency=1)
    first = await scan_with_budget(config, candidates=10)
    assert first["truncated"] is True
    env.put(bucket, "incoming/a-early/x.csv")  # sorts before every begun folder
    env.put(bucket, "incoming/zz-late/y.csv")
    done = await run_until_complete(env, config, queue_url, candidates=10)
    sent = set(done.sent) | set(env.state(bucket)["files"])  # type: ignore[index]
    # The late folder is in this pass; the early one at the latest in the next fresh pass.
    assert "incoming/zz-late/y.csv" in sent
    final = await scan(config)
    assert set(env.state(bucket)["files"]) == {  # type: ignore[index]
        *keys,
        "incoming/a-early/x.csv",
        "incoming/zz-late/y.csv",
    }
    assert final["truncated"] is False


async def test_mark_existing_survives_a_truncated_first_run(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """The first pass is cut short: the resumed runs keep marking (the cursor keeps the
    policy), nothing existing is ever sent, and afterwards exactly the new files are."""
    keys = seed_folders(env, bucket, folders=4, files=25)
    await anyio.sleep(1.1)  # S3 LastModified has one-second resolution
    config = env.config(
        bucket,
        queue_url,
        initial_scan=parse_initial_scan("mark-existing", []),
        list_page_size=10,
        workers=1,
        list_concurrency=1,
    )
    first = await scan_with_budget(config, candidates=10)
    assert first["truncated"] is True and first["queued"] == 0
    cursor = env.state(bucket)["cursors"]["incoming/"]  # type: ignore[index]
    assert cursor["initial_scan"].startswith("since:")

    # Arrives after the first run began, in a folder that pass has not reached yet.
    env.put(bucket, "incoming/f03/arrived-later.csv")
    done = await run_until_complete(env, config, queue_url, candidates=10)
    assert sum(s["marked"] for s in done.summaries) + first["marked"] == len(keys)
    assert dict(done.sent) == {"incoming/f03/arrived-later.csv": 1}
    state = env.state(bucket)
    assert state is not None and state.get("cursors", {}) == {}
    assert {state["files"][k]["status"] for k in keys} == {"marked"}

    env.put(bucket, "incoming/f00/new.csv")
    after = await scan(config)
    assert (after["queued"], after["marked"]) == (1, 0)
    assert [b["key"] for b in env.bodies(queue_url)] == ["incoming/f00/new.csv"]


async def test_wall_clock_deadline_truncates_and_resumes(
    env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """The Lambda path: a deadline already inside its margin stops at once, saving a
    cursor that a later run completes."""
    from async_discovery.deadline import Deadline

    keys = seed_folders(env, bucket, folders=2, files=5)
    config = env.config(bucket, queue_url)
    cut = await scan(config, deadline=Deadline.after(0.5, margin=1.0))
    assert cut["truncated"] is True
    assert env.state(bucket)["cursors"]["incoming/"]  # type: ignore[index]
    done = await scan(config)
    assert done["truncated"] is False
    assert sorted(b["key"] for b in env.bodies(queue_url)) == sorted(keys)
