"""Report kdna's modules over 350 lines and functions over 60 (the project's size limits).

Usage: python tools/code_size.py   (exit status 1 when something is over a limit)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_LINES, FUNCTION_LINES = 350, 60


def oversized(package: Path = ROOT / "kdna") -> list[str]:
    """``path: what`` for every module and function of ``package`` over its limit."""
    found = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(package.parent)
        lines = len(source.splitlines())
        if lines > MODULE_LINES:
            found.append(f"{name}: {lines} lines (module limit {MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    found.append(f"{name}:{node.lineno} {node.name}: {length} lines "
                                 f"(function limit {FUNCTION_LINES})")
    return found


if __name__ == "__main__":
    problems = oversized()
    print("\n".join(problems) or "every module and function is within its limit")
    sys.exit(1 if problems else 0)
