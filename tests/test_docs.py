"""The README and the docs stay true: every code block marked `<!-- runnable -->` runs, line by
line, as a user would type it, in a fresh directory, at tiny sizes (a `charrnn train` line
trains 2 steps of a tiny model instead of its budget); the links between pages resolve; the
README stays short."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, mirror

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = "<!-- runnable -->"
TINY = ["--steps", "2", "--eval-every", "2", "--hidden", "16", "--layers", "1", "--embed", "8"]
TINY += ["--seq-len", "16", "--batch-size", "4", "--device", "cpu"]
BUDGET_FLAGS = {"--time-budget", "--steps", "--epochs", "--hidden", "--layers", "--embed", "--seq-len"}


def runnable_blocks(page: Path) -> list[list[str]]:
    """The command lines of each block marked runnable, in page order."""
    lines = page.read_text(encoding="utf-8").split("\n")
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() == MARKER:
            assert lines[i + 1].startswith("```"), f"{page.name}:{i + 1}: the marker must sit right above a block"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            blocks.append([c for c in lines[i + 2 : end] if c.strip() and not c.lstrip().startswith("#")])
    return blocks


def tiny(command: str) -> list[str]:
    """A command as argv, its comment dropped; `charrnn train` at tiny sizes."""
    argv = shlex.split(command, comments=True)
    if argv[:2] == ["charrnn", "train"]:
        kept, skip = [], False
        for arg in argv:
            if skip:
                skip = False
            elif arg in BUDGET_FLAGS:
                skip = True
            else:
                kept.append(arg)
        argv = kept + TINY
    return argv


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)], ids=lambda p: p.name)
def test_the_runnable_blocks_of_each_page_run_as_written(page, tmp_path):
    found = mirror()
    if found is None:
        pytest.skip("tinyshakespeare not available: set CHARRNN_MIRROR to a directory holding tinyshakespeare.txt")
    env = {**os.environ, "CHARRNN_MIRROR": str(found), "CHARRNN_CACHE": str(tmp_path / "cache")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for block in runnable_blocks(page):
        for command in block:
            # A train line runs at tiny sizes; any other line runs as typed, in bash (redirections).
            argv = tiny(command) if command.startswith("charrnn train ") else ["bash", "-c", command]
            done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{page.name}: `{command}` failed:\n{done.stderr[-2000:]}"


def test_links_between_pages_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not there"


def test_the_readme_is_read_in_five_minutes():
    size = (REPO / "README.md").stat().st_size
    assert size <= 15_000, f"README.md is {size:,} bytes: move the detail into docs/ (at most 15,000)"


def _map_paths(page: Path) -> set[str]:
    """The module paths the package map of docs/development.md names (a tree, two spaces a level)."""
    text = page.read_text(encoding="utf-8")
    block = text.split("<!-- package map -->", 1)[1].split("```", 2)[1]
    paths, folders = set(), []
    for line in block.strip("\n").split("\n"):
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            paths.add("/".join([*folders, name]))
    return paths


def test_the_package_map_names_every_module():
    package = REPO / "charrnn"
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if p.name != "__init__.py"}
    named = _map_paths(REPO / "docs" / "development.md")
    assert modules - named == set(), "modules missing from the package map of docs/development.md"
    assert named - modules == set(), "the package map of docs/development.md names modules that are gone"
