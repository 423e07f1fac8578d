"""Every command that needs an optional extra says so in one line when the extra is missing,
whenever the import happens: non-zero exit, one `error:` line on stderr naming the extra and its
pip command, no traceback. Each case runs the command in a fresh interpreter in which the extra's
modules cannot be imported (`sys.modules[name] = None`, which makes `import name` raise
ModuleNotFoundError, as an environment without them does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from charrnn.cli.extras import EXTRAS, extra_of, missing_extra_message

TUNE = "X:1\nT:t\nM:2/4\nL:1/8\nK:D\nA2FA|dAFA|]\n"

# Runs `charrnn ARGS...` with the modules named in CHARRNN_TEST_HIDE unimportable.
WRAPPER = (
    "import os, sys\n"
    "for name in os.environ['CHARRNN_TEST_HIDE'].split(','):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = ['charrnn', *sys.argv[1:]]\n"
    "from charrnn.cli import main\n"
    "main()\n"
)


def run_without(hidden: tuple[str, ...], *args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHARRNN_TEST_HIDE": ",".join(hidden), "CHARRNN_CACHE": str(cwd / "cache")}
    cmd = [sys.executable, "-c", WRAPPER, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def assert_says_extra(result: subprocess.CompletedProcess, extra: str, module: str) -> None:
    assert result.returncode not in (0, None), result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and f"[{extra}]" in lines[0] and module in lines[0], lines[0]
    assert f"pip install 'charrnn[{extra}]'" in lines[0], lines[0]


def test_every_extra_of_pyproject_is_known():
    """The list the message comes from names every extra pyproject.toml offers to users."""
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())
    offered = set(declared["project"]["optional-dependencies"]) - {"test", "dev"}
    assert set(EXTRAS) == offered
    assert extra_of("torch.utils.tensorboard") is None and extra_of("tensorboard.summary") == "tensorboard"
    assert missing_extra_message("yaml") is None  # not an extra's module: a broken install keeps its traceback


@pytest.fixture
def files(tmp_path) -> Path:
    (tmp_path / "tunes.abc").write_text(TUNE, encoding="utf-8")
    return tmp_path


# (extra, hidden modules, the module the message names, command line); {run} is a trained tiny run.
CASES = [
    ("serve", ("starlette",), "starlette", ["serve", "{run}", "--port", "0"]),
    ("serve", ("uvicorn",), "uvicorn", ["serve", "{run}", "--port", "0"]),
    ("music", ("music21",), "music21", ["abc", "check", "tunes.abc"]),
    ("music", ("music21",), "music21", ["abc", "calibrate", "tunes.abc", "--sample", "1"]),
    ("music", ("music21",), "music21", ["sample", "{run}", "--tunes", "1", "--valid-only"]),
    ("music", ("music21",), "music21", ["sample", "{run}", "--tunes", "1", "--midi", "midi"]),
    ("plot", ("matplotlib",), "matplotlib", ["plot", "{run}"]),
    ("export", ("onnx",), "onnx", ["export", "{run}", "--out", "exported"]),
    ("export", ("onnxruntime",), "onnxruntime", ["export", "{run}", "--out", "exported"]),
    (
        "tensorboard",
        ("tensorboard",),
        "tensorboard",
        [
            "train",
            "corpus.txt",
            "--steps",
            "1",
            "--hidden",
            "8",
            "--embed",
            "4",
            "--seq-len",
            "8",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--out",
            "tb-run",
            "--tensorboard",
            "tb",
        ],
    ),
]


@pytest.mark.parametrize("extra, hidden, module, args", CASES, ids=[" ".join(c[3][:2]) + f" -{c[2]}" for c in CASES])
def test_a_missing_extra_is_one_line_naming_it(extra, hidden, module, args, files, tiny_run):
    (files / "corpus.txt").write_text("hear me speak. " * 200, encoding="utf-8")
    result = run_without(hidden, *[a.format(run=tiny_run) for a in args], cwd=files)
    assert_says_extra(result, extra, module)
