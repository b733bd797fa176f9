"""Every module, and every public class, function and method of the package, has a
docstring (mypy --strict covers the types)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "async_discovery"


def _missing(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = [] if ast.get_docstring(tree) else [f"{path.name}: module docstring"]

    def walk(node: ast.AST, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if child.name.startswith("_"):
                continue  # private, or a dunder whose meaning is the protocol's
            if not ast.get_docstring(child):
                found.append(f"{path.name}:{child.lineno} {owner}{child.name}")
            if isinstance(child, ast.ClassDef):
                walk(child, f"{owner}{child.name}.")

    walk(tree, "")
    return found


def test_public_api_has_docstrings() -> None:
    missing = [item for path in sorted(PACKAGE.rglob("*.py")) for item in _missing(path)]
    assert not missing, "\n".join(missing)
