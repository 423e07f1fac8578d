"""The size limits the project holds itself to: no file in charrnn/ over 400 lines, no function
body over 60 lines (a function's signature, e.g. a command's option declarations, does not count).

    python tools/limits.py [ROOT]    # prints each breach; exit status 1 when there is one
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_FILE_LINES = 400
MAX_BODY_LINES = 60


def breaches(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n")
        if lines > MAX_FILE_LINES:
            found.append(f"{path}: {lines} lines (limit {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[-1].end_lineno - node.body[0].lineno + 1
                if body > MAX_BODY_LINES:
                    found.append(f"{path}:{node.lineno} {node.name}: body of {body} lines (limit {MAX_BODY_LINES})")
    return found


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "charrnn"
    found = breaches(root)
    for line in found:
        print(line)
    print(f"{len(found)} breach(es) of the size limits under {root}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
