"""The discovery rule (SPEC "Discovery rule"): which listed keys are candidates.

A key is a candidate iff it is ``P + F + "/" + N`` with ``F`` and ``N`` non-empty and free
of ``/``, ``N`` ending in ``.csv`` (any case) and ``F`` not a skipped folder. Everything
else under ``P`` is ignored, with the reason kept so ``--explain`` and the counters can
say why. Pure: no I/O, called once per listed key, so kept to a few string operations.
"""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    """What the discovery rule says about one key."""

    CANDIDATE = "candidate"
    TOP_LEVEL = "top-level"
    DEEP = "deep"
    SKIPPED_FOLDER = "skipped-folder"
    NOT_CSV = "not-csv"
    MARKER = "marker"
    OUTSIDE_PREFIX = "outside-prefix"


def normalise_prefix(prefix: str) -> str:
    """``incoming`` and ``incoming/`` are the same prefix; empty means the whole bucket."""
    if not prefix:
        return ""
    return prefix if prefix.endswith("/") else prefix + "/"


def classify(key: str, prefix: str, skip_folders: frozenset[str]) -> tuple[Verdict, str]:
    """Return the verdict for ``key`` and the folder it sits in ('' when it has none).

    ``prefix`` must already be normalised.
    """
    if not key.startswith(prefix):
        return Verdict.OUTSIDE_PREFIX, ""
    rest = key[len(prefix) :]
    slash = rest.find("/")
    if slash < 0:
        return Verdict.TOP_LEVEL, ""
    folder = rest[:slash]
    name = rest[slash + 1 :]
    if not folder:
        # "P//x": an empty folder name is not a folder level.
        return Verdict.DEEP, ""
    if folder in skip_folders:
        return Verdict.SKIPPED_FOLDER, folder
    if not name:
        return Verdict.MARKER, folder
    if "/" in name:
        return Verdict.DEEP, folder
    if name[-4:].lower() != ".csv":
        return Verdict.NOT_CSV, folder
    return Verdict.CANDIDATE, folder


def folder_prefix(prefix: str, folder: str) -> str:
    """The listing prefix of one subfolder of ``prefix``."""
    return f"{prefix}{folder}/"
