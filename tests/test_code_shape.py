"""Rooms stay small: no module of the project (outside ext/) over 500 lines, no function over 60
lines unless the comment just above it says why it is long (``# declarative: ...`` for tables
such as an argparse parser, ``# linear: ...`` for a handshake that reads best top to bottom)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "drivers", "detectors", "bench")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
REASONS = ("# declarative:", "# linear:")


def _sources() -> list[Path]:
    return sorted(f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py"))


def _explained(lines: list[str], node: ast.AST) -> bool:
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])  # type: ignore[attr-defined]
    above = lines[first - 2].strip() if first >= 2 else ""
    return above.startswith(REASONS)


def test_no_module_over_500_lines():
    long = [f"{f.relative_to(ROOT)}: {n} lines" for f in _sources()
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, "split these by job:\n" + "\n".join(long)


def test_no_function_over_60_lines_without_a_reason():
    long = []
    for f in _sources():
        text = f.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and not _explained(lines, node):
                    long.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "split these, or say above the def why they read best long:\n" + "\n".join(long)


def test_the_shape_checks_can_fail(tmp_path, monkeypatch):
    pkg = tmp_path / "agent"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(70))
    (pkg / "long.py").write_text(f"def f():\n{body}\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="long.py:1 f: 71 lines"):
        test_no_function_over_60_lines_without_a_reason()
    (pkg / "long.py").write_text(f"# linear: one step after the other\ndef f():\n{body}\n")
    test_no_function_over_60_lines_without_a_reason()
    (pkg / "big.py").write_text("x = 1\n" * 501)
    with pytest.raises(AssertionError, match="big.py: 501 lines"):
        test_no_module_over_500_lines()
