"""Rewrite the settings tables of docs/configuration.md from async_discovery/settings.py.

    python scripts/config_docs.py            # rewrite the tables in place
    python scripts/config_docs.py --check    # exit 1 when the page is out of date
    python scripts/config_docs.py --print    # print the tables only

Each table sits between ``<!-- settings:<section> -->`` and ``<!-- /settings:<section> -->``;
the rest of the page is left as it is. tests/test_config.py runs the same comparison.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from async_discovery.settings import SECTIONS, markdown_table, render_docs

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Rewrite the settings tables of docs/configuration.md."
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 when the page differs")
    group.add_argument("--print", action="store_true", help="print the tables only")
    args = parser.parse_args()
    if args.print:
        sys.stdout.write("\n".join(markdown_table(section) for section in SECTIONS))
        return 0
    text = PAGE.read_text(encoding="utf-8")
    wanted = render_docs(text)
    if args.check:
        if wanted != text:
            sys.stderr.write(f"{PAGE} is out of date: run python scripts/config_docs.py\n")
            return 1
        return 0
    PAGE.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
