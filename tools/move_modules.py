"""Moves modules of the charrnn package and rewrites every import of them, in the package, the
tests and the tools: the one way the house's folders are rearranged, so that no import is missed.

    python tools/move_modules.py OLD=NEW [OLD=NEW ...]
    python tools/move_modules.py charrnn.abc_check=charrnn.music.check charrnn.tunes=charrnn.music.tunes

Each OLD and NEW is a dotted module name. A NEW package folder gets an `__init__.py` when it has
none. The files move with `git mv` (history follows them). Imports are rewritten in three passes:
every relative import in charrnn/ becomes absolute, the moved names are replaced wherever they
appear as a module name (imports, and strings such as "charrnn.abc_check" in tests), then the
imports inside charrnn/ become relative again, as the house writes them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "charrnn"
FROM_IMPORT = re.compile(r"^(?P<indent>\s*)from (?P<dots>\.+)(?P<name>[\w.]*) import ", re.M)
ABSOLUTE = re.compile(rf"^(?P<indent>\s*)from (?P<name>{PACKAGE}(?:\.[\w]+)*) import ", re.M)


def module_of(path: Path) -> str:
    """charrnn/cli/sample.py -> charrnn.cli.sample; charrnn/serve/__init__.py -> charrnn.serve."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    """The package a module's relative imports start from."""
    name = module_of(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def to_absolute(source: str, path: Path) -> str:
    base = package_of(path).split(".")

    def absolute(match: re.Match) -> str:
        up = len(match["dots"]) - 1
        target = ".".join(base[: len(base) - up] + ([match["name"]] if match["name"] else []))
        return f"{match['indent']}from {target} import "

    return FROM_IMPORT.sub(absolute, source)


def to_relative(source: str, path: Path) -> str:
    base = package_of(path).split(".")

    def relative(match: re.Match) -> str:
        target = match["name"].split(".")
        common = 0
        while common < min(len(base), len(target)) and base[common] == target[common]:
            common += 1
        dots = "." * (len(base) - common + 1)
        return f"{match['indent']}from {dots}{'.'.join(target[common:])} import "

    return ABSOLUTE.sub(relative, source)


FROM_PACKAGE_IMPORT = re.compile(
    rf"^(?P<indent>[ \t]*)from (?P<pkg>{PACKAGE}(?:\.\w+)*) import (?P<names>[\w ,]+)$", re.M
)


def split_module_imports(source: str, moves: dict[str, str]) -> str:
    """`from charrnn import corpora, runtime` with corpora moving: the moved module gets an import
    of its own from its new package (`from charrnn.data import corpora`), the rest stay."""

    def rewrite(match: re.Match) -> str:
        names = [n.strip() for n in match["names"].split(",") if n.strip()]
        kept, lines = [], []
        for entry in names:
            name, _, alias = (part.strip() for part in entry.partition(" as "))
            old = f"{match['pkg']}.{name}"
            if old not in moves:
                kept.append(entry)
                continue
            package, _, module = moves[old].rpartition(".")
            as_name = alias or name
            lines.append(f"from {package} import {module}" + (f" as {as_name}" if as_name != module else ""))
        if not lines:
            return match[0]
        if kept:
            lines.insert(0, f"from {match['pkg']} import {', '.join(kept)}")
        return "\n".join(match["indent"] + line for line in lines)

    return FROM_PACKAGE_IMPORT.sub(rewrite, source)


def rename(source: str, moves: dict[str, str]) -> str:
    """Every whole dotted name OLD (or OLD.something) becomes NEW, in one pass: a new name that
    starts with another old one (charrnn.music -> charrnn.music.folk) is never renamed twice."""
    names = "|".join(re.escape(old) for old in sorted(moves, key=len, reverse=True))
    return re.sub(rf"(?<![\w.])({names})(?![\w])", lambda m: moves[m[1]], source)


def move(moves: dict[str, str]) -> None:
    sources = sorted((REPO / PACKAGE).rglob("*.py"))
    others = sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "tools").glob("*.py"))
    texts = {p: to_absolute(p.read_text(encoding="utf-8"), p) for p in sources}
    texts |= {p: p.read_text(encoding="utf-8") for p in others if p.name != Path(__file__).name}
    texts = {p: split_module_imports(rename(t, moves), moves) for p, t in texts.items()}
    for old, new in moves.items():
        src = REPO / (old.replace(".", "/") + ".py")
        dst = REPO / (new.replace(".", "/") + ".py")
        dst.parent.mkdir(parents=True, exist_ok=True)
        init = dst.parent / "__init__.py"
        if not init.exists():
            init.write_text(f'"""{new.rpartition(".")[0]}."""\n', encoding="utf-8")
            subprocess.run(["git", "add", str(init)], cwd=REPO, check=True)
        subprocess.run(["git", "mv", str(src), str(dst)], cwd=REPO, check=True)
        texts[dst] = texts.pop(src)
    for path, text in texts.items():
        if path.is_relative_to(REPO / PACKAGE) and path.name != "__main__.py":  # run as a script too
            text = to_relative(text, path)
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


def main(argv: list[str]) -> int:
    pairs = [a.split("=", 1) for a in argv]
    if not pairs or any(len(p) != 2 or not p[0].startswith(PACKAGE + ".") for p in pairs):
        print(__doc__, file=sys.stderr)
        return 2
    move(dict(pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
