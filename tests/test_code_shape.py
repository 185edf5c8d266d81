"""No function in src/ grows past 80 lines (issue 23 split the five that had): a long function is several
jobs in one, and this keeps the next one from creeping back."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "surerank"
LIMIT = 80


def _long_functions(root: Path, limit: int) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_src_is_longer_than_80_lines():
    assert not _long_functions(SRC, LIMIT)


def test_the_length_check_can_fail(tmp_path):
    (tmp_path / "long.py").write_text("def f():\n" + "    x = 1\n" * LIMIT)
    assert _long_functions(tmp_path, LIMIT) == ["long.py:1 f (81 lines)"]
