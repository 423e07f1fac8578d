"""Flags a test that holds a computed float to a long stored constant.

A float from training or scoring differs between CPUs in its last bits (other kernels, other
summation orders), so `assert bpc == pytest.approx(<a bpc printed to 16 digits>)` passes on the CPU that
wrote it and fails on the next. A literal with more than 7 significant digits (float32 carries
about 7) inside an equality or a closeness check (`approx`, `isclose`, `allclose`,
`assert_close`) is such a constant. Compare with a reference computed in the same test instead.

Usage: python tools/float_constants.py [PATH ...]   (default: the tests/ folder)
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

MAX_DIGITS = 7
CLOSENESS = {"approx", "isclose", "allclose", "assert_close", "assert_allclose"}


def significant_digits(literal: str) -> int:
    """Digits of a float literal as written, without leading zeros or the exponent."""
    mantissa = re.split(r"[eE]", literal.replace("_", ""))[0]
    return len(mantissa.replace(".", "").lstrip("0").lstrip("-")) or 1


def _long_floats(node: ast.AST, source: str) -> list[tuple[int, str]]:
    found = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, float):
            text = ast.get_source_segment(source, sub) or repr(sub.value)
            if significant_digits(text) > MAX_DIGITS:
                found.append((sub.lineno, text))
    return found


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def stored_constants(path: Path) -> list[str]:
    """'file:line: literal' for each long float literal compared for equality or closeness."""
    source = path.read_text()
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            found.update(_long_floats(node, source))
        elif isinstance(node, ast.Call) and _call_name(node) in CLOSENESS:
            found.update(_long_floats(node, source))
    return [f"{path}:{line}: {text}" for line, text in sorted(found)]


def main(argv: list[str]) -> int:
    roots = [Path(a) for a in argv] or [Path(__file__).resolve().parent.parent / "tests"]
    files = sorted(p for root in roots for p in ([root] if root.is_file() else root.rglob("*.py")))
    problems = [line for f in files for line in stored_constants(f)]
    for line in problems:
        print(
            f"{line} (more than {MAX_DIGITS} significant digits in an equality: compare with a reference computed in the test)"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
