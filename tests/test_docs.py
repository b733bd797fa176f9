"""What the README and the docs tell a newcomer to run agrees with the project: the test
command is the one CI runs, the command list names every command, a documented
example writes the files it then reads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from async_discovery.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def _blocks(text: str) -> list[str]:
    """The fenced code blocks of a Markdown text."""
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M)


def test_the_readme_test_command_is_what_ci_runs_and_ci_also_runs_the_slow_tests() -> None:
    readme = _text("README.md")
    (line,) = [x for b in _blocks(readme) for x in b.splitlines() if "pytest" in x]
    command = line.split("&&")[-1].strip()
    assert command == 'python -m pytest -m "not slow" -n auto'
    ci = [x.strip() for x in _text(".ci/run").splitlines()]
    assert command in ci
    assert "python -m pytest -m slow" in ci
    assert "python scripts/check_template.py" in ci


def test_the_quick_start_uses_the_patched_moto_server_from_a_checkout() -> None:
    readme = _text("README.md")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "async-discovery moto-server" in quick
    assert "moto_server -H" not in quick
    assert "pip install 'async-discovery" not in readme  # the package is on no index


def test_the_command_list_names_every_command() -> None:
    listed = _blocks(_text("docs/operations.md").split("## The command line", 1)[1])[0]
    names = {line.split()[0] for line in listed.splitlines()[1:] if line.strip()}
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert names == set(sub.choices)  # type: ignore[arg-type]


def test_the_fanout_cli_example_writes_what_it_sums() -> None:
    """Every file ``sum`` reads is written by a line before it."""
    (block,) = [b for b in _blocks(_text("docs/fanout.md")) if "async-discovery sum" in b]
    written: set[str] = set()
    for line in block.splitlines():
        words = shlex.split(line.split("#", 1)[0])
        if ">" in words:
            written.add(words[words.index(">") + 1])
        if words[:2] == ["async-discovery", "sum"]:
            read = {w for w in words[2:] if w.endswith(".json")}
            assert read and read <= written, (line, written)
