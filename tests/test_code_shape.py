"""The pipeline stays readable: small functions and classes, one job per stage module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "async_discovery"
PIPELINE = [
    PACKAGE / "pipeline.py",
    PACKAGE / "events.py",
    *sorted((PACKAGE / "stages").glob("*.py")),
]


def sizes(kinds: tuple[type[ast.AST], ...]) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in PIPELINE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, kinds):
                assert isinstance(node, ast.stmt) and node.end_lineno is not None
                name = getattr(node, "name", "?")
                found[f"{path.name}:{name}"] = node.end_lineno - node.lineno + 1
    return found


def test_pipeline_functions_fit_on_a_screen() -> None:
    functions = sizes((ast.FunctionDef, ast.AsyncFunctionDef))
    assert len(functions) > 20  # the walk found the pipeline
    assert {name: n for name, n in functions.items() if n > 60} == {}


def test_pipeline_classes_stay_small() -> None:
    classes = sizes((ast.ClassDef,))
    assert "pipeline.py:Scanner" in classes
    assert {name: n for name, n in classes.items() if n > 200} == {}
