"""Files over 350 lines and functions over 60 lines outside tests/ (the project's style limits).

    python scripts/sizes.py [ROOT]     # prints one line per excess; exit code 1 if any
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_FILE, MAX_FUNCTION = 350, 60
SKIP = {"tests", ".venv", "build", "dist", ".git"}


def excesses(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP & set(rel.parts[:-1]) or any(p.startswith(".") for p in rel.parts):
            continue
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_FILE:
            out.append(f"{rel}: {lines} lines (limit {MAX_FILE})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION:
                    out.append(f"{rel}:{node.lineno} {node.name}(): {length} lines (limit {MAX_FUNCTION})")
    return out


if __name__ == "__main__":
    found = excesses(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print("\n".join(found) or "no file or function over the limits")
    sys.exit(1 if found else 0)
